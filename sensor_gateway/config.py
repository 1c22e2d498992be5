"""Configuration: frozen dataclasses filled from one TOML file plus environment overrides.

Each subsystem defines its own frozen dataclass (e.g. ``MqttConfig``) and loads
it with :func:`load_section`.  Precedence, highest first:

1. environment ``CRAMPWATCH_<SECTION>_<FIELD>`` (e.g. ``CRAMPWATCH_MQTT_PORT=1884``);
2. environment ``CRAMPWATCH_<SECTION>_<FIELD>_FILE``: the value is read from that
   file (for secrets handed in by Docker/systemd; trailing newline stripped);
3. the ``[section]`` table of the TOML file (``--config`` or ``CRAMPWATCH_CONFIG``);
4. the dataclass defaults.

Secrets never have a default: a password field defaults to ``""`` meaning "none".
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from sensor_gateway.errors import ConfigError

T = TypeVar("T")

CONFIG_ENV = "CRAMPWATCH_CONFIG"


def read_config_file(path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """Read the TOML config file; ``None`` falls back to ``$CRAMPWATCH_CONFIG`` or nothing.

    Raises
    ------
    ConfigError
        If the file is missing, unreadable or not valid TOML (message names the file).
    """
    if path is None:
        env_path = os.environ.get(CONFIG_ENV)
        if not env_path:
            return {}
        path = env_path
    p = Path(path)
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config file: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from None


def _convert(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError("; ".join(errors))
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else str
        return tuple(_convert(v.strip() if isinstance(v, str) else v, inner, where) for v in items)
    if hint is bool:
        if isinstance(value, bool):
            return value
        truthy, falsy = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}
        if isinstance(value, str) and value.lower() in truthy | falsy:
            return value.lower() in truthy
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if hint in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return hint(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if hint is Path:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a path, got {value!r}")
        return Path(value).expanduser()
    return value


def load_section(
    cls: type[T],
    section: str,
    document: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> T:
    """Build the frozen dataclass ``cls`` from ``document[section]`` and the environment.

    Unknown keys in the TOML table are refused (a typo must not silently fall back
    to a default).
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    env = os.environ if environ is None else environ
    table = dict((document or {}).get(section, {}))
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(table) - names)
    if unknown:
        raise ConfigError(f"[{section}]: unknown key(s) {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name in names:
        key = f"CRAMPWATCH_{section.upper()}_{name.upper()}"
        where = f"[{section}].{name}"
        if key in env:
            values[name] = _convert(env[key], hints[name], f"${key}")
        elif f"{key}_FILE" in env:
            secret_path = Path(env[f"{key}_FILE"])
            try:
                raw = secret_path.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise ConfigError(f"${key}_FILE={secret_path}: {exc.strerror}") from None
            values[name] = _convert(raw, hints[name], f"${key}_FILE")
        elif name in table:
            values[name] = _convert(table[name], hints[name], where)
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[{section}]: {exc}") from None
