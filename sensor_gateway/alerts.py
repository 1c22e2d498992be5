"""Alert rules: a pure engine turning crampwatch messages into alerts (no I/O here).

:class:`AlertEngine` is fed what the alerts service receives and returns the
:class:`Alert` objects to deliver; the service (:mod:`sensor_gateway.alert_service`)
does the MQTT, InfluxDB, disk and HTTP parts.  Every method takes the current time
explicitly (UTC milliseconds), so tests drive the engine with any clock.

Rules (``[alerts]`` table, :class:`AlertsConfig`; docs/alerts.md):

``cramp``
    A ``cramp_confirmed`` event, or, when ``cramp_min_duration_s`` /
    ``cramp_min_severity`` ask for more than the confirmation shows, the
    ``cramp_end`` event of a cramp that meets them.  One alert per cramp.
``frequent_cramps``
    Cramps on at least ``weekly_nights`` of the last 7 nights (a night is local noon
    to noon), from counts the service queries in InfluxDB.  Carries
    :data:`WEEKLY_ADVICE`.
``disconnected`` / ``lead_off``
    The band's retained status says ``connected: false`` (or its gateway went
    offline) / ``lead_off: true`` for at least ``disconnected_after_s`` /
    ``lead_off_after_s``.  Only a condition that began inside ``watch_hours`` (the
    hours the band is worn) counts, a rule is armed only after the band was seen
    connected / in skin contact, and it fires once per episode: a band lying on
    the charger, or taken off in the morning, does not alert.
``battery_low``
    ``battery_pct`` at or below ``battery_low_pct``, or the band's own
    ``battery_low`` flag; once per discharge (re-armed when charging or 5 % above).

Every rule has a cooldown per band (an alert of the same rule and band within the
cooldown is suppressed and counted).  During ``quiet_hours`` alerts are *held*:
their :attr:`Alert.deliver_at_ms` is the end of the quiet hours.  Cramp alerts are
urgent by default (``cramp_urgent = true``) and go out at once even then: a cramp
alert is useful only while the cramp is happening.

The engine's memory (cooldowns, per-band timers, events already seen) is a JSON
document (:meth:`AlertEngine.state`) that the service saves and hands back after a
restart, so a restart neither repeats nor forgets alerts.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

from sensor_gateway.config import load_section
from sensor_gateway.errors import CrampwatchError
from sensor_gateway.messages import (
    EventMessage,
    GatewayStatusMessage,
    StatusMessage,
    iso_ms,
    validate_id,
)
from sensor_gateway.nights import SEVERITY_LABELS

__all__ = [
    "ALERT_SCHEMA",
    "RULES",
    "WEEKLY_ADVICE",
    "Alert",
    "AlertEngine",
    "AlertError",
    "AlertsConfig",
    "HoursWindow",
]

#: Rule names, as used in configs, payloads and MQTT topics.
RULES: Final = ("cramp", "frequent_cramps", "disconnected", "lead_off", "battery_low")
#: ``schema`` of alert payloads.
ALERT_SCHEMA: Final = 1
#: What the weekly rule tells the user, plainly; the one text of this advice (the morning
#: report and the night view's cramp page show it too).
WEEKLY_ADVICE: Final = (
    "See a doctor if cramps are frequent or severe, if you notice muscle weakness, or if "
    "the leg is swollen, red or painful.",
    "When a cramp starts: stretch the calf — straighten the knee and pull your toes up "
    "towards you. Massage the muscle, then warm it (a warm towel, bath or shower).",
    "Drink enough water during the day.",
)
_CONDITION_TEXT: Final = {
    "disconnected": "No connection to band {band} since {since} ({minutes} min): the night is "
    "not being recorded.",
    "lead_off": "The electrodes of band {band} have had no skin contact since {since} "
    "({minutes} min). Refit the band.",
}
_RELIEF = "Stretch the calf: straighten the knee and pull your toes up towards you."
#: Fixed namespace of alert ids (changing it changes every id).
_ALERT_NAMESPACE: Final = uuid.UUID("0b6d3c52-8f0e-5a41-b7a2-5c9e1d4f6a23")
_HOURS_RE = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")
_SEVERITY_OF: Final = {label: level for level, label in SEVERITY_LABELS.items()}
_BATTERY_HYSTERESIS_PCT: Final = 5.0
_SEEN_EVENTS: Final = 1024
_OPEN_CRAMPS: Final = 256
_MAX_CRAMP_MS: Final = 7 * 86_400_000
_PRIORITIES: Final = ("low", "default", "high")

Scalar = float | int | str | bool | None


class AlertError(CrampwatchError):
    """An alert payload or engine state that cannot be read."""


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class HoursWindow:
    """A daily window of local time, ``start`` inclusive to ``end`` exclusive; may wrap midnight."""

    start: time
    end: time

    @classmethod
    def parse(cls, text: str) -> HoursWindow | None:
        """``"HH:MM-HH:MM"`` → window; ``""`` → ``None`` (no window).

        Raises
        ------
        ValueError
            If the text is malformed or the window is empty.
        """
        if not text:
            return None
        m = _HOURS_RE.match(text.strip())
        if m is None:
            raise ValueError(f"hours must look like '22:30-07:00', got {text!r}")
        h1, m1, h2, m2 = (int(g) for g in m.groups())
        if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59 or (h1, m1) == (h2, m2):
            raise ValueError(f"impossible or empty hours {text!r}")
        return cls(time(h1, m1), time(h2, m2))

    def contains(self, local: datetime) -> bool:
        """Whether the local time of day of ``local`` is inside the window."""
        t = local.time()
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end

    def start_before(self, local: datetime) -> datetime:
        """The last start of the window at or before ``local`` (aware, same zone)."""
        start = datetime.combine(local.date(), self.start, tzinfo=local.tzinfo)
        return start if start <= local else start - timedelta(days=1)

    def end_after(self, local: datetime) -> datetime:
        """The first end of the window after ``local`` (aware, same zone)."""
        end = datetime.combine(local.date(), self.end, tzinfo=local.tzinfo)
        return (
            end
            if end > local
            else datetime.combine(local.date() + timedelta(days=1), self.end, tzinfo=local.tzinfo)
        )


@dataclass(frozen=True)
class AlertsConfig:
    """``[alerts]`` table (env ``CRAMPWATCH_ALERTS_<FIELD>``); webhooks: docs/alerts.md.

    Attributes
    ----------
    timezone
        IANA zone of quiet hours, watch hours and nights; empty = the system's.
    quiet_hours
        ``"HH:MM-HH:MM"`` local; alerts raised inside are held until its end. Empty = none.
    cramp, cramp_min_duration_s, cramp_min_severity, cramp_urgent, cramp_cooldown_s
        Cramp rule on/off; only cramps at least this long (s) / this severe (1 mild,
        2 moderate, 3 severe; 0 = any); sent during quiet hours; cooldown per band.
    weekly_nights, weekly_check_s, weekly_cooldown_s
        Alert when cramps occurred on at least this many of the last 7 nights (0 =
        off); how often InfluxDB is asked; cooldown per band.
    watch_hours
        ``"HH:MM-HH:MM"`` local: only disconnections / lead-off that begin inside
        count (the band is worn then). Empty = always.
    disconnected_after_s, disconnected_cooldown_s
        Band disconnected this long → alert (0 = off); cooldown per band.
    lead_off_after_s, lead_off_cooldown_s
        Electrodes off the skin this long → alert (0 = off); cooldown per band.
    battery_low_pct, battery_cooldown_s
        Battery at or below this → alert (0 = off); cooldown per band.
    mqtt
        Publish alerts on ``<prefix>/alert/<band>/<rule>``.
    state_dir, outbox_max_bytes
        Engine state and the per-destination outboxes of undelivered alerts.
    retry_min_s, retry_max_s, timeout_s
        Exponential backoff between delivery attempts; timeout of one attempt.
    """

    timezone: str = ""
    quiet_hours: str = ""
    cramp: bool = True
    cramp_min_duration_s: float = 0.0
    cramp_min_severity: int = 0
    cramp_urgent: bool = True
    cramp_cooldown_s: float = 300.0
    weekly_nights: int = 3
    weekly_check_s: float = 3600.0
    weekly_cooldown_s: float = 7 * 86_400.0
    watch_hours: str = "23:00-06:00"
    disconnected_after_s: float = 900.0
    disconnected_cooldown_s: float = 3600.0
    lead_off_after_s: float = 300.0
    lead_off_cooldown_s: float = 3600.0
    battery_low_pct: float = 15.0
    battery_cooldown_s: float = 12 * 3600.0
    mqtt: bool = True
    state_dir: Path = Path("~/.local/state/crampwatch/alerts")
    outbox_max_bytes: int = 16 * 1024 * 1024
    retry_min_s: float = 2.0
    retry_max_s: float = 300.0
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        HoursWindow.parse(self.quiet_hours)
        HoursWindow.parse(self.watch_hours)
        if not 0 <= self.cramp_min_severity <= 3:
            raise ValueError("cramp_min_severity must be 0 (any) .. 3 (severe)")
        if not 0 <= self.weekly_nights <= 7:
            raise ValueError("weekly_nights must be 0 (off) .. 7")
        if not 0 <= self.battery_low_pct < 100:
            raise ValueError("battery_low_pct must be 0 (off) .. 99")
        numbers = (
            self.cramp_min_duration_s,
            self.cramp_cooldown_s,
            self.weekly_cooldown_s,
            self.disconnected_after_s,
            self.disconnected_cooldown_s,
            self.lead_off_after_s,
            self.lead_off_cooldown_s,
            self.battery_cooldown_s,
        )
        if any(not v >= 0 for v in numbers):
            raise ValueError("durations and cooldowns must be >= 0")
        if not 0 < self.weekly_check_s < 7 * 86_400:
            raise ValueError("weekly_check_s must be > 0 and under a week")
        if not 0 < self.retry_min_s <= self.retry_max_s or not self.timeout_s > 0:
            raise ValueError("need 0 < retry_min_s <= retry_max_s and timeout_s > 0")
        if self.outbox_max_bytes < 65_536:
            raise ValueError("outbox_max_bytes must be >= 65536")

    @classmethod
    def load(cls, document: Mapping[str, Any] | None = None) -> AlertsConfig:
        """Load from the ``[alerts]`` table (its ``webhooks`` sub-tables are read elsewhere)."""
        table = dict((document or {}).get("alerts", {}))
        table.pop("webhooks", None)
        return load_section(cls, "alerts", {"alerts": table})

    def cooldown_ms(self, rule: str) -> int:
        """The cooldown of ``rule`` in milliseconds."""
        seconds = {
            "cramp": self.cramp_cooldown_s,
            "frequent_cramps": self.weekly_cooldown_s,
            "disconnected": self.disconnected_cooldown_s,
            "lead_off": self.lead_off_cooldown_s,
            "battery_low": self.battery_cooldown_s,
        }[rule]
        return round(seconds * 1000)


# --------------------------------------------------------------------------- alerts


@dataclass(frozen=True)
class Alert:
    """One alert, as delivered (docs/alerts.md, "Payload").

    Attributes
    ----------
    alert_id
        Deterministic UUIDv5 (same cause → same id: receivers can drop repeats).
    rule, band_id
        What fired, for which band.
    time_ms, deliver_at_ms
        When it was raised; when it may go out (later = held by quiet hours).
    title, message
        Short ASCII title; plain-text message.
    priority, tags
        ``low|default|high``; short tags (ntfy emoji names).
    details
        Flat scalars (times as ISO strings, durations in s ...).
    advice
        Sentences for the user (the weekly rule).
    """

    alert_id: str
    rule: str
    band_id: str
    time_ms: int
    deliver_at_ms: int
    title: str
    message: str
    priority: str
    tags: tuple[str, ...] = ()
    details: Mapping[str, Scalar] = field(default_factory=dict)
    advice: tuple[str, ...] = ()

    def to_json(self) -> bytes:
        """The payload: one UTF-8 JSON object (MQTT, generic and Home Assistant webhooks)."""
        doc = {
            "schema": ALERT_SCHEMA,
            "kind": "alert",
            "alert_id": self.alert_id,
            "rule": self.rule,
            "band_id": self.band_id,
            "time": iso_ms(self.time_ms),
            "deliver_at": iso_ms(self.deliver_at_ms),
            "title": self.title,
            "message": self.message,
            "priority": self.priority,
            "tags": list(self.tags),
            "details": dict(self.details),
            "advice": list(self.advice),
        }
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> Alert:
        """Parse :meth:`to_json` output.

        Raises
        ------
        AlertError
            If ``raw`` is not an alert payload of this schema.
        """
        try:
            doc = json.loads(raw)
            if doc["schema"] != ALERT_SCHEMA or doc["kind"] != "alert":
                raise ValueError("not an alert of schema 1")
            alert = cls(
                alert_id=str(doc["alert_id"]),
                rule=str(doc["rule"]),
                band_id=validate_id(doc["band_id"], "band id"),
                time_ms=_parse_ms(doc["time"]),
                deliver_at_ms=_parse_ms(doc["deliver_at"]),
                title=str(doc["title"]),
                message=str(doc["message"]),
                priority=str(doc["priority"]),
                tags=tuple(str(t) for t in doc["tags"]),
                details=dict(doc["details"]),
                advice=tuple(str(a) for a in doc["advice"]),
            )
        except (ValueError, KeyError, TypeError, CrampwatchError) as exc:
            raise AlertError(f"not a valid alert payload: {exc}") from None
        if alert.rule not in RULES or alert.priority not in _PRIORITIES:
            raise AlertError(f"unknown rule {alert.rule!r} or priority {alert.priority!r}")
        return alert


def _parse_ms(text: str) -> int:
    return round(datetime.fromisoformat(text).timestamp() * 1000)


def _alert_id(key: str) -> str:
    return str(uuid.uuid5(_ALERT_NAMESPACE, key))


# --------------------------------------------------------------------------- engine


@dataclass
class _Band:
    """What the engine remembers about one band's link, contact and battery."""

    gateway: str = ""
    connected: bool = False
    disconnected_since_ms: int | None = None
    link_armed: bool = False
    lead_off_since_ms: int | None = None
    contact_armed: bool = False
    battery_armed: bool = True


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _due(since_ms: int | None, window_start_ms: int, after_s: float, now_ms: int) -> bool:
    """A condition present since ``since_ms`` (inside the window) has lasted ``after_s``."""
    return (
        bool(after_s)
        and since_ms is not None
        and since_ms >= window_start_ms
        and now_ms - since_ms >= after_s * 1000
    )


def _severity(value: object) -> int | None:
    if isinstance(value, str):
        return _SEVERITY_OF.get(value.lower())
    number = _number(value)
    return None if number is None else round(number)


class AlertEngine:
    """The rules of :class:`AlertsConfig` over messages, weekly counts and time.

    Parameters
    ----------
    cfg
        Rules, thresholds, cooldowns, quiet and watch hours.
    tz
        The zone of quiet hours, watch hours, nights and the times in messages.
    state
        A document from :meth:`state` of an earlier run, or ``None``.

    Raises
    ------
    AlertError
        If ``state`` is malformed.

    :attr:`counts` holds ``raised_<rule>``, ``held``, ``cooldown_<rule>``
    (suppressed by a cooldown) and ``duplicate_events``.
    """

    def __init__(
        self, cfg: AlertsConfig, tz: ZoneInfo, state: Mapping[str, Any] | None = None
    ) -> None:
        self.cfg = cfg
        self.tz = tz
        self.quiet = HoursWindow.parse(cfg.quiet_hours)
        self.watch = HoursWindow.parse(cfg.watch_hours)
        self.counts: Counter[str] = Counter()
        self._fired: dict[str, int] = {}
        self._bands: dict[str, _Band] = {}
        self._seen: deque[str] = deque(maxlen=_SEEN_EVENTS)
        self._open_cramps: dict[str, int] = {}  # "<band>/<episode>" → onset ms, alerted
        if state is not None:
            self._restore(state)

    # ------------------------------------------------------------------ inputs

    def on_event(self, msg: EventMessage, now_ms: int) -> list[Alert]:
        """A detector event; cramp alerts for ``cramp_confirmed`` / ``cramp_end``."""
        if not self.cfg.cramp or msg.type not in ("cramp_confirmed", "cramp_end"):
            return []
        if msg.event_id in self._seen:
            self.counts["duplicate_events"] += 1
            return []
        self._seen.append(msg.event_id)
        episode = f"{msg.band_id}/{msg.episode}"
        if msg.type == "cramp_confirmed":
            return self._cramp_confirmed(msg, episode, now_ms)
        onset_ms = self._open_cramps.pop(episode, None)
        if onset_ms is not None and 0 <= msg.time_ms - onset_ms <= _MAX_CRAMP_MS:
            return []  # decided at its confirmation
        duration = _number(msg.details.get("duration_s"))
        severity = _severity(msg.details.get("severity"))
        if (duration or 0.0) < self.cfg.cramp_min_duration_s or (
            severity or 0
        ) < self.cfg.cramp_min_severity:
            return []
        start_ms = msg.time_ms - round((duration or 0.0) * 1000)
        how = [f"{duration:.0f} s" if duration is not None else "length unknown"]
        how += [SEVERITY_LABELS[severity]] if severity in SEVERITY_LABELS else []
        text = (
            f"A calf cramp ({', '.join(how)}) from {self._hhmm(start_ms)} to "
            f"{self._hhmm(msg.time_ms)}. Stretching the calf (pull the toes up), massage and "
            "warmth help."
        )
        details: dict[str, Scalar] = {
            "onset": iso_ms(start_ms),
            "end": iso_ms(msg.time_ms),
            "duration_s": duration,
            "severity": severity,
            "episode": msg.episode,
            "gateway": msg.gateway,
        }
        return self._raise(
            "cramp", msg.band_id, now_ms, key=f"cramp/{msg.event_id}", message=text, details=details
        )

    def on_status(self, msg: StatusMessage, now_ms: int) -> list[Alert]:
        """A band status (link, contact, battery); may raise battery and timer alerts."""
        band = self._bands.setdefault(msg.band_id, _Band())
        band.gateway = msg.gateway
        status = msg.status
        at_ms = min(msg.time_ms, now_ms)
        band.connected = status.get("connected") is True
        if band.connected:
            band.disconnected_since_ms = None
            band.link_armed = True
        elif band.disconnected_since_ms is None:
            band.disconnected_since_ms = at_ms
        if band.connected and status.get("lead_off") is True:
            if band.lead_off_since_ms is None:
                band.lead_off_since_ms = at_ms
        else:
            band.lead_off_since_ms = None
            band.contact_armed = band.contact_armed or band.connected
        out = self._battery(msg.band_id, band, status, at_ms, now_ms)
        return out + self._timers(msg.band_id, band, now_ms)

    def on_gateway_status(self, msg: GatewayStatusMessage, now_ms: int) -> list[Alert]:
        """A gateway went offline (Last Will): its bands count as disconnected from now."""
        if msg.online:
            return []
        at_ms = now_ms if msg.time_ms is None else min(msg.time_ms, now_ms)
        for band in self._bands.values():
            if band.gateway == msg.gateway and band.connected:
                band.connected = False
                band.disconnected_since_ms = at_ms
                band.lead_off_since_ms = None
        return []

    def on_weekly(
        self, nights: Mapping[str, Iterable[date]], last_night: date, now_ms: int
    ) -> list[Alert]:
        """Nights with cramps per band; counted are the 7 nights ending with ``last_night``."""
        if not self.cfg.weekly_nights:
            return []
        first = last_night - timedelta(days=6)
        out = []
        for band_id in sorted(nights):
            days = sorted({d for d in nights[band_id] if first <= d <= last_night})
            if len(days) < self.cfg.weekly_nights:
                continue
            listed = ", ".join(d.strftime("%a %d %b") for d in days)
            text = f"Cramps on {len(days)} of the last 7 nights ({listed}). " + " ".join(
                WEEKLY_ADVICE
            )
            details: dict[str, Scalar] = {
                "nights_with_cramps": len(days),
                "nights": 7,
                "first_night": first.isoformat(),
                "last_night": last_night.isoformat(),
            }
            out += self._raise(
                "frequent_cramps",
                band_id,
                now_ms,
                message=text,
                details=details,
                key=f"frequent_cramps/{band_id}/{last_night}",
                title=f"Cramps on {len(days)} of the last 7 nights ({band_id})",
            )
        return out

    def tick(self, now_ms: int) -> list[Alert]:
        """Fire the disconnected / lead-off timers that ran out."""
        out: list[Alert] = []
        for band_id, band in sorted(self._bands.items()):
            out += self._timers(band_id, band, now_ms)
        return out

    # ------------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        """The engine's memory as a JSON-serialisable document."""
        return {
            "version": 1,
            "fired": dict(self._fired),
            "bands": {k: vars(b).copy() for k, b in self._bands.items()},
            "seen": list(self._seen),
            "open_cramps": dict(self._open_cramps),
        }

    def _restore(self, state: Mapping[str, Any]) -> None:
        try:
            if state.get("version") != 1:
                raise ValueError("unknown version")
            self._fired = {str(k): int(v) for k, v in state["fired"].items()}
            self._bands = {
                validate_id(str(k), "band id"): _Band(**v) for k, v in state["bands"].items()
            }
            self._seen.extend(str(e) for e in state["seen"])
            self._open_cramps = {str(k): int(v) for k, v in state["open_cramps"].items()}
        except (KeyError, TypeError, ValueError, AttributeError, CrampwatchError) as exc:
            raise AlertError(f"alerts state not readable: {exc}") from None

    # ------------------------------------------------------------------ internals

    def _local(self, ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000.0, tz=UTC).astimezone(self.tz)

    def _hhmm(self, ms: int) -> str:
        return self._local(ms).strftime("%H:%M")

    def _cramp_confirmed(self, msg: EventMessage, episode: str, now_ms: int) -> list[Alert]:
        shown_s = max(0.0, msg.emitted_at_s - msg.t_s)  # how long the cramp has lasted so far
        if self.cfg.cramp_min_severity or shown_s < self.cfg.cramp_min_duration_s:
            return []  # decided at its end
        self._open_cramps[episode] = msg.time_ms
        while len(self._open_cramps) > _OPEN_CRAMPS:
            del self._open_cramps[next(iter(self._open_cramps))]
        details: dict[str, Scalar] = {
            "onset": iso_ms(msg.time_ms),
            "episode": msg.episode,
            "gateway": msg.gateway,
        }
        return self._raise(
            "cramp",
            msg.band_id,
            now_ms,
            key=f"cramp/{msg.event_id}",
            message=f"A calf cramp started at {self._hhmm(msg.time_ms)}. {_RELIEF}",
            details=details,
        )

    def _battery(
        self, band_id: str, band: _Band, status: Mapping[str, object], at_ms: int, now_ms: int
    ) -> list[Alert]:
        limit = self.cfg.battery_low_pct
        if not limit:
            return []
        pct = _number(status.get("battery_pct"))
        flag = status.get("battery_low") is True
        if status.get("charging") is True or (
            pct is not None and pct > limit + _BATTERY_HYSTERESIS_PCT and not flag
        ):
            band.battery_armed = True
            return []
        if not band.battery_armed or not (flag or (pct is not None and pct <= limit)):
            return []
        band.battery_armed = False
        level = f"{pct:.0f} %" if pct is not None else "low (the band says so)"
        return self._raise(
            "battery_low",
            band_id,
            now_ms,
            key=f"battery_low/{band_id}/{at_ms}",
            message=f"Battery of band {band_id}: {level}. Charge it before the night.",
            details={"battery_pct": pct, "battery_low": flag},
        )

    def _timers(self, band_id: str, band: _Band, now_ms: int) -> list[Alert]:
        # Only conditions that began inside the current watch window count: a band
        # taken off in the morning does not alert the next evening.
        window_start = 0
        if self.watch is not None:
            local = self._local(now_ms)
            if not self.watch.contains(local):
                return []
            window_start = round(self.watch.start_before(local).timestamp() * 1000)
        out: list[Alert] = []
        since = band.disconnected_since_ms
        if band.link_armed and _due(since, window_start, self.cfg.disconnected_after_s, now_ms):
            band.link_armed = False
            out += self._condition("disconnected", band_id, band, since, now_ms)
        since = band.lead_off_since_ms
        if band.contact_armed and _due(since, window_start, self.cfg.lead_off_after_s, now_ms):
            band.contact_armed = False
            out += self._condition("lead_off", band_id, band, since, now_ms)
        return out

    def _condition(
        self, rule: str, band_id: str, band: _Band, since_ms: int | None, now_ms: int
    ) -> list[Alert]:
        assert since_ms is not None
        text = _CONDITION_TEXT[rule].format(
            band=band_id, since=self._hhmm(since_ms), minutes=(now_ms - since_ms) // 60_000
        )
        return self._raise(
            rule,
            band_id,
            now_ms,
            key=f"{rule}/{band_id}/{since_ms}",
            message=text,
            details={"since": iso_ms(since_ms), "gateway": band.gateway},
        )

    def _raise(
        self,
        rule: str,
        band_id: str,
        now_ms: int,
        *,
        key: str,
        message: str,
        details: Mapping[str, Scalar],
        title: str = "",
    ) -> list[Alert]:
        fired = f"{rule}/{band_id}"
        last = self._fired.get(fired)
        if last is not None and now_ms - last < self.cfg.cooldown_ms(rule):
            self.counts[f"cooldown_{rule}"] += 1
            return []
        self._fired[fired] = now_ms
        self.counts[f"raised_{rule}"] += 1
        deliver_at = now_ms
        urgent = rule == "cramp" and self.cfg.cramp_urgent
        if self.quiet is not None and not urgent:
            local = self._local(now_ms)
            if self.quiet.contains(local):
                deliver_at = round(self.quiet.end_after(local).timestamp() * 1000)
                self.counts["held"] += 1
        titles = {
            "cramp": f"Calf cramp ({band_id})",
            "disconnected": f"Band {band_id} disconnected",
            "lead_off": f"Band {band_id}: electrodes off the skin",
            "battery_low": f"Band {band_id}: battery low",
        }
        priority = {"cramp": "high", "battery_low": "low"}
        tags = {
            "cramp": ("leg",),
            "frequent_cramps": ("calendar", "leg"),
            "disconnected": ("electric_plug",),
            "lead_off": ("warning",),
            "battery_low": ("battery",),
        }
        alert = Alert(
            alert_id=_alert_id(key),
            rule=rule,
            band_id=band_id,
            time_ms=now_ms,
            deliver_at_ms=deliver_at,
            title=title or titles[rule],
            message=message,
            priority=priority.get(rule, "default"),
            tags=tags[rule],
            details=dict(details),
            advice=WEEKLY_ADVICE if rule == "frequent_cramps" else (),
        )
        return [alert]
