"""Jinja2 environment and number formatting shared by the night view and the morning report."""

from __future__ import annotations

from pathlib import Path

import jinja2

from sensor_gateway.alerts import WEEKLY_ADVICE
from sensor_gateway.nights import SEVERITY_LABELS

__all__ = ["duration", "environment", "num", "pct"]

TEMPLATES = Path(__file__).parent / "templates"


def duration(seconds: float | None) -> str:
    """``42 s``, ``1 min 03 s``, ``25 min``, ``7 h 05 min``; ``—`` for nothing."""
    if seconds is None:
        return "—"
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 600:
        return f"{s // 60} min {s % 60:02d} s"
    if s < 3600:
        return f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def pct(fraction: float | None) -> str:
    """``97 %``; ``—`` for nothing."""
    return "—" if fraction is None else f"{100 * fraction:.0f} %"


def num(value: float | None, spec: str = ".0f", unit: str = "") -> str:
    """``value`` formatted with ``spec`` plus ``unit``; ``—`` for nothing."""
    return "—" if value is None else f"{value:{spec}}{unit}"


def severity(value: int | None) -> str:
    """``mild`` / ``moderate`` / ``severe``; ``—`` for nothing."""
    return SEVERITY_LABELS.get(value or 0, "—")


def environment() -> jinja2.Environment:
    """Autoescaping, strict environment over ``templates/`` with the filters above."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(duration=duration, pct=pct, num=num, severity=severity)
    env.globals["care_advice"] = WEEKLY_ADVICE  # the alerts' advice, one text everywhere
    return env
