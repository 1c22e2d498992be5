"""MQTT payload schema (version 1): build and strictly validate crampwatch messages.

Every payload is one UTF-8 JSON object with ``"schema": 1`` and a ``"kind"``:

``event``
    A detector event.  ``event_id`` is a UUIDv5 of band, episode, type and the
    event's wall time in milliseconds, so the same event always gets the same id
    (re-sent after a restart, redelivered by the broker ...).
``summary``
    One second of envelope (QoS 0, dashboards only).
``status``
    A band status snapshot (retained).
``gateway_status``
    Gateway online/offline (retained; the offline message is the MQTT Last Will),
    with the MQTT outbox backlog (:data:`GATEWAY_BACKLOG_KEYS`) while online.

Validation (:func:`parse_message`) is strict: size limit, known kind and
schema, required keys with the right types, bounded strings, finite numbers
in sane ranges, a band id that matches the topic.  Anything else raises
:class:`MessageError` whose :attr:`~MessageError.kind` names the rule broken
(for "counted, logged once per kind").  Full description: docs/mqtt.md.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from sensor_gateway.errors import CrampwatchError

__all__ = [
    "EVENT_TYPES",
    "GATEWAY_BACKLOG_KEYS",
    "MAX_PAYLOAD_BYTES",
    "SCHEMA_VERSION",
    "EventMessage",
    "GatewayStatusMessage",
    "Message",
    "MessageError",
    "StatusMessage",
    "SummaryMessage",
    "Topics",
    "build_event",
    "build_gateway_status",
    "build_status",
    "build_summary",
    "event_id",
    "parse_message",
    "validate_id",
]

SCHEMA_VERSION: Final = 1
#: Largest payload accepted (and produced), bytes.
MAX_PAYLOAD_BYTES: Final = 8192
#: Longest string value accepted anywhere in a payload.
MAX_STRING: Final = 256
#: Most keys accepted in ``details`` / ``status``.
MAX_KEYS: Final = 64
EVENT_TYPES: Final = (
    "spasm_onset",
    "cramp_confirmed",
    "cramp_end",
    "spasm_cleared",
    "prelude",
    "signal_quality",
)
SUMMARY_STATES: Final = ("idle", "spasm", "cramp")
#: Optional counters of a ``gateway_status`` (non-negative numbers): events in the disk
#: outbox not yet acknowledged by the broker and its bytes on disk, summaries dropped
#: while offline, events the broker refused.
GATEWAY_BACKLOG_KEYS: Final = ("outbox_entries", "outbox_bytes", "summaries_dropped",
                               "events_refused")  # fmt: skip
QUALITIES: Final = ("gap", "lead_off", "saturated", "artefact", "ok")
#: Namespace of event ids (fixed forever: changing it changes every id).
EVENT_NAMESPACE: Final = uuid.UUID("6f1c9e0a-2b1d-5c7e-9a43-3d2f0c8b7e15")
_NAMESPACE_BYTES: Final = EVENT_NAMESPACE.bytes

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_KEY_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
#: Event times accepted: 2000-01-01 .. 2100-01-01 (absurd clocks are refused).
_MIN_TIME_MS: Final = 946_684_800_000
_MAX_TIME_MS: Final = 4_102_444_800_000
_MAX_STREAM_S: Final = 7 * 86_400.0
_MAX_UV: Final = 1e6  # a microvolt value above one volt is not EMG
_MAX_EPISODE: Final = 10_000_000


class MessageError(CrampwatchError):
    """A payload that does not follow the schema.

    Attributes
    ----------
    kind
        Short stable name of the broken rule (``too_large``, ``not_json``,
        ``schema``, ``missing``, ``type``, ``range``, ``topic``, ...).
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def validate_id(value: str, what: str = "id") -> str:
    """Return ``value`` if it is a valid band/gateway id (``[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}``).

    Raises
    ------
    MessageError
        Otherwise (kind ``id``); ids end up in MQTT topics and InfluxDB tags.
    """
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise MessageError("id", f"invalid {what} {value!r}")
    return value


@dataclass(frozen=True)
class Topics:
    """The topic layout under one ``prefix`` (default ``crampwatch``)."""

    prefix: str = "crampwatch"

    def event(self, band_id: str) -> str:
        """``<prefix>/band/<band>/event``: detector events, QoS 1, not retained."""
        return f"{self.prefix}/band/{band_id}/event"

    def summary(self, band_id: str) -> str:
        """``<prefix>/band/<band>/summary``: 1 Hz envelope, QoS 0."""
        return f"{self.prefix}/band/{band_id}/summary"

    def status(self, band_id: str) -> str:
        """``<prefix>/band/<band>/status``: band status, QoS 1, retained."""
        return f"{self.prefix}/band/{band_id}/status"

    def last_cramp(self, band_id: str) -> str:
        """``<prefix>/band/<band>/last_cramp``: the latest ``cramp_end`` event, QoS 1, retained."""
        return f"{self.prefix}/band/{band_id}/last_cramp"

    def gateway_status(self, gateway_id: str) -> str:
        """``<prefix>/gateway/<gw>/status``: online/offline, QoS 1, retained, Last Will."""
        return f"{self.prefix}/gateway/{gateway_id}/status"

    def subscriptions(self) -> list[tuple[str, int]]:
        """Topic filters and QoS the recorder subscribes to."""
        return [
            (f"{self.prefix}/band/+/event", 1),
            (f"{self.prefix}/band/+/status", 1),
            (f"{self.prefix}/band/+/summary", 0),
            (f"{self.prefix}/gateway/+/status", 1),
        ]

    def parse(self, topic: str) -> tuple[str, str, str]:
        """Split a topic into ``(scope, id, leaf)``: ``("band", "b1", "event")``.

        Raises
        ------
        MessageError
            If the topic is not one of ours (kind ``topic``).
        """
        return _split_topic(self.prefix, topic)


_DEFAULT_TOPICS: Final = Topics()


@functools.lru_cache(maxsize=4096)
def _split_topic(prefix: str, topic: str) -> tuple[str, str, str]:
    # cached: a deployment has a few topics per band; invalid ones raise (not cached)
    parts = topic.split("/")
    head = prefix.split("/")
    if (
        len(parts) != len(head) + 3
        or parts[: len(head)] != head
        or parts[len(head)] not in ("band", "gateway")
    ):
        raise MessageError("topic", f"unexpected topic {topic!r:.200}")
    scope, ident, leaf = parts[len(head) :]
    validate_id(ident, f"{scope} id in topic")
    allowed = tuple(_LEAF_KIND) if scope == "band" else ("status",)
    if leaf not in allowed:
        raise MessageError("topic", f"unexpected topic {topic!r:.200}")
    return scope, ident, leaf


# ---------------------------------------------------------------- time helpers


def utc_ms(posix_s: float) -> int:
    """POSIX seconds → integer milliseconds (rounded)."""
    return round(posix_s * 1000.0)


def iso_ms(ms: int) -> str:
    """Integer POSIX milliseconds → ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
    dt = datetime.fromtimestamp(ms / 1000.0, tz=UTC)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(value: object, where: str) -> int:
    if not isinstance(value, str) or len(value) > 40 or not value.endswith("Z"):
        raise MessageError("time", f"{where}: expected a UTC ISO time ending in Z: {value!r:.60}")
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise MessageError("time", f"{where}: not an ISO time: {value!r}") from None
    ms = round(dt.timestamp() * 1000.0)
    if not _MIN_TIME_MS <= ms < _MAX_TIME_MS:
        raise MessageError("range", f"{where}: time {value} out of range")
    return ms


def event_id(band_id: str, episode: int, event_type: str, time_ms: int) -> str:
    """Deterministic event id: UUIDv5 of ``"<band>/<episode>/<type>/<time_ms>"``.

    Same result as ``str(uuid.uuid5(EVENT_NAMESPACE, name))`` (RFC 4122, section 4.3),
    computed without the ``UUID`` object: the recorder checks every event's id.
    """
    name = f"{band_id}/{episode}/{event_type}/{time_ms}".encode()
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + name, usedforsecurity=False).digest())
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest[:16].hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


# ---------------------------------------------------------------- parsed messages


@dataclass(frozen=True)
class EventMessage:
    """A validated ``event`` payload."""

    gateway: str
    band_id: str
    event_id: str
    type: str
    episode: int
    time_ms: int
    t_s: float
    emitted_at_s: float
    published_ms: int
    details: Mapping[str, float | int | str | bool | None]


@dataclass(frozen=True)
class SummaryMessage:
    """A validated ``summary`` payload (one second of envelope)."""

    gateway: str
    band_id: str
    time_ms: int
    t_s: float
    rms_uv: float | None
    peak_uv: float | None
    noise_floor_uv: float | None
    on_threshold_uv: float | None
    quality: str
    acc_activity_g: float | None
    state: str
    #: Optional (added within schema 1): absent from older gateways' summaries.
    tilt_deg: float | None = None


@dataclass(frozen=True)
class StatusMessage:
    """A validated band ``status`` payload (scalar values only)."""

    gateway: str
    band_id: str
    time_ms: int
    status: Mapping[str, float | int | str | bool | None]


@dataclass(frozen=True)
class GatewayStatusMessage:
    """A validated ``gateway_status`` payload; ``time_ms`` is ``None`` in the Last Will.

    ``backlog`` holds those of :data:`GATEWAY_BACKLOG_KEYS` the payload carries, as floats.
    """

    gateway: str
    online: bool
    time_ms: int | None
    backlog: Mapping[str, float] = field(default_factory=dict)


Message = EventMessage | SummaryMessage | StatusMessage | GatewayStatusMessage


# ---------------------------------------------------------------- building


def _encode(doc: Mapping[str, Any]) -> bytes:
    try:
        raw = json.dumps(doc, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise MessageError("encode", f"cannot encode payload: {exc}") from None
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise MessageError("too_large", f"payload of {len(raw)} bytes > {MAX_PAYLOAD_BYTES}")
    return raw


def _clean_scalar(value: object) -> float | int | str | bool | None:
    if value is None or isinstance(value, bool | int | str):
        if isinstance(value, str) and len(value) > MAX_STRING:
            return value[:MAX_STRING]
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    # numpy scalars and the like
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)[:MAX_STRING]
    return f if math.isfinite(f) else None


def build_event(
    gateway: str,
    band_id: str,
    *,
    event_type: str,
    episode: int,
    wall_time_s: float,
    t_s: float,
    emitted_at_s: float,
    details: Mapping[str, object],
    published_s: float,
) -> tuple[str, bytes]:
    """Build an ``event`` payload; return ``(event_id, payload_bytes)``.

    Raises
    ------
    MessageError
        If an id is invalid or the payload would exceed :data:`MAX_PAYLOAD_BYTES`.
    """
    validate_id(gateway, "gateway id")
    validate_id(band_id, "band id")
    ms = utc_ms(wall_time_s)
    eid = event_id(band_id, episode, event_type, ms)
    clean = {str(k): _clean_scalar(v) for k, v in list(details.items())[:MAX_KEYS]}
    doc = {
        "schema": SCHEMA_VERSION,
        "kind": "event",
        "event_id": eid,
        "gateway": gateway,
        "band_id": band_id,
        "type": event_type,
        "episode": int(episode),
        "time": iso_ms(ms),
        "t_s": float(t_s),
        "emitted_at_s": float(emitted_at_s),
        "published": iso_ms(utc_ms(published_s)),
        "details": clean,
    }
    return eid, _encode(doc)


def build_summary(
    gateway: str, band_id: str, wall_time_s: float, summary: Mapping[str, object]
) -> bytes:
    """Build a ``summary`` payload from ``EnvelopeSummary.to_json()``-like fields."""
    validate_id(gateway, "gateway id")
    validate_id(band_id, "band id")
    doc: dict[str, object] = {
        "schema": SCHEMA_VERSION,
        "kind": "summary",
        "gateway": gateway,
        "band_id": band_id,
        "time": iso_ms(utc_ms(wall_time_s)),
    }
    for key in ("t_s", "rms_uv", "peak_uv", "noise_floor_uv", "on_threshold_uv",
                "quality", "acc_activity_g", "state", "tilt_deg"):  # fmt: skip
        doc[key] = _clean_scalar(summary.get(key))
    return _encode(doc)


def build_status(
    gateway: str, band_id: str, wall_time_s: float, status: Mapping[str, object]
) -> bytes:
    """Build a band ``status`` payload; nested values are dropped, strings truncated."""
    validate_id(gateway, "gateway id")
    validate_id(band_id, "band id")
    clean: dict[str, object] = {}
    for key, value in status.items():
        if len(clean) >= MAX_KEYS or not _KEY_RE.match(str(key)) or key == "band_id":
            continue
        if isinstance(value, Mapping | list | tuple | set):
            continue
        clean[str(key)] = _clean_scalar(value)
    doc = {
        "schema": SCHEMA_VERSION,
        "kind": "status",
        "gateway": gateway,
        "band_id": band_id,
        "time": iso_ms(utc_ms(wall_time_s)),
        "status": clean,
    }
    return _encode(doc)


def build_gateway_status(
    gateway: str,
    online: bool,
    wall_time_s: float | None,
    backlog: Mapping[str, int | float] | None = None,
) -> bytes:
    """Build a ``gateway_status`` payload; ``wall_time_s=None`` for the Last Will.

    ``backlog``: counters named in :data:`GATEWAY_BACKLOG_KEYS` (others are refused).
    """
    validate_id(gateway, "gateway id")
    doc: dict[str, object] = {
        "schema": SCHEMA_VERSION,
        "kind": "gateway_status",
        "gateway": gateway,
        "online": online,
    }
    if wall_time_s is not None:
        doc["time"] = iso_ms(utc_ms(wall_time_s))
    for key, value in (backlog or {}).items():
        if key not in GATEWAY_BACKLOG_KEYS:
            raise MessageError("key", f"unknown gateway backlog counter {key!r}")
        doc[key] = value
    return _encode(doc)


# ---------------------------------------------------------------- validation
# The recorder validates every message it stores, so this is written for speed:
# json.loads yields exact types (``type(v) is float`` is safe and excludes bool),
# and the checks that only depend on low-cardinality strings (topics, ids,
# detail keys) are cached.

_MISSING: Final[Any] = object()
_QUALITIES: Final = frozenset(QUALITIES)
_STATES: Final = frozenset(SUMMARY_STATES)
_EVENT_TYPES: Final = frozenset(EVENT_TYPES)
_LEAF_KIND: Final = {"event": "event", "summary": "summary", "status": "status",
                     "last_cramp": "event"}  # fmt: skip
#: Largest magnitude accepted for a number in ``details``/``status``.
_MAX_ABS: Final = 1e15


@functools.lru_cache(maxsize=4096)
def _valid_key(key: str) -> bool:
    return _KEY_RE.match(key) is not None


@functools.lru_cache(maxsize=4096)
def _valid_id(value: str) -> bool:
    return _ID_RE.match(value) is not None


def _get(doc: dict[str, Any], key: str) -> Any:
    value = doc.get(key, _MISSING)
    if value is _MISSING:
        raise MessageError("missing", f"missing key {key!r}")
    return value


def _type_error(key: str, want: str, value: object) -> MessageError:
    return MessageError("type", f"{key}: expected {want}, got {type(value).__name__}")


def _number(doc: dict[str, Any], key: str, lo: float, hi: float) -> float:
    value = doc.get(key, _MISSING)
    kind = type(value)
    if kind is float or kind is int:
        # comparisons are false for NaN; a huge int compares fine (no float overflow)
        if lo <= value <= hi:
            return float(value)
        raise MessageError("range", f"{key}={value!r:.40} outside [{lo}, {hi}]")
    if value is _MISSING:
        raise MessageError("missing", f"missing key {key!r}")
    raise _type_error(key, "a number", value)


def _opt_number(doc: dict[str, Any], key: str, lo: float, hi: float) -> float | None:
    # present but null: unknown yet (e.g. the noise floor while the detector warms up)
    return None if doc.get(key, _MISSING) is None else _number(doc, key, lo, hi)


def _str(doc: dict[str, Any], key: str, choices: frozenset[str] | None = None) -> str:
    value = doc.get(key, _MISSING)
    if type(value) is str and len(value) <= MAX_STRING and (choices is None or value in choices):
        return value
    _get(doc, key)  # raises "missing"
    if type(value) is not str:
        raise _type_error(key, "a string", value)
    if len(value) > MAX_STRING:
        raise MessageError("range", f"{key}: string longer than {MAX_STRING}")
    raise MessageError("range", f"{key}={value!r} not one of {', '.join(sorted(choices or ()))}")


def _id(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key, _MISSING)
    if type(value) is str and _valid_id(value):
        return value
    _get(doc, key)  # raises "missing"
    raise MessageError("id", f"invalid {key} {value!r:.80}")


def _scalars(
    obj: object, what: str, *, bounded: bool = False
) -> dict[str, float | int | str | bool | None]:
    """Validate a flat object of scalars; ``bounded`` adds the ``*_uv``/``*duration_s`` ranges."""
    if type(obj) is not dict:
        raise MessageError("type", f"{what}: expected an object")
    if len(obj) > MAX_KEYS:
        raise MessageError("range", f"{what}: more than {MAX_KEYS} keys")
    for key, value in obj.items():
        if not _valid_key(key):
            raise MessageError("key", f"{what}: invalid key {key!r:.80}")
        kind = type(value)
        if kind is float or kind is int:
            if not -_MAX_ABS <= value <= _MAX_ABS:
                raise MessageError("range", f"{what}.{key}={value!r:.40} is absurd")
            if bounded and (
                (key.endswith("_uv") and not 0 <= value <= _MAX_UV)
                or (key.endswith("duration_s") and not 0 <= value <= _MAX_STREAM_S)
            ):
                raise MessageError("range", f"{what}.{key}={value!r} is absurd")
        elif kind is str:
            if len(value) > MAX_STRING or (
                not value.isprintable() and any(ord(c) < 32 for c in value)
            ):
                raise MessageError("range", f"{what}.{key}: string too long or with controls")
        elif value is not None and kind is not bool:
            raise MessageError("type", f"{what}.{key}: nested values are not allowed")
    return obj  # checked above: only scalars


def _reject_constant(name: str) -> float:
    raise MessageError("not_json", f"non-standard JSON constant {name}")


# One decoder for all messages (json.loads with options builds a new one per call);
# its C scanner is called directly: JSONDecoder.decode adds two regex passes that
# only skip whitespace, done here by strip().
_SCAN: Final[Callable[[str, int], tuple[Any, int]]] = json.JSONDecoder(
    parse_constant=_reject_constant
).scan_once  # type: ignore[attr-defined]  # set in JSONDecoder.__init__, not in the stubs


def _json_object(payload: bytes) -> Any:
    text = payload.decode("utf-8").strip(" \t\n\r")
    try:
        doc, end = _SCAN(text, 0)
    except StopIteration:  # nothing JSON at the start
        raise ValueError("not JSON") from None
    if end != len(text):
        raise ValueError("extra data after the JSON value")
    return doc


def parse_message(topic: str, payload: bytes, topics: Topics | None = None) -> Message:
    """Validate one received MQTT message and return the typed message.

    Parameters
    ----------
    topic
        The topic it arrived on; the band/gateway id in it must match the payload.
    payload
        Raw bytes.
    topics
        Topic layout (default prefix ``crampwatch``).

    Raises
    ------
    MessageError
        For anything not following schema version 1 (see module docstring).
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise MessageError("too_large", f"{len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
    scope, ident, leaf = _split_topic((topics or _DEFAULT_TOPICS).prefix, topic)
    try:
        doc = _json_object(payload)
    except (UnicodeDecodeError, RecursionError, ValueError):  # ValueError: JSON, huge ints
        raise MessageError("not_json", "payload is not UTF-8 JSON") from None
    if type(doc) is not dict:
        raise MessageError("not_json", "payload is not a JSON object")
    schema = doc.get("schema")
    if schema != SCHEMA_VERSION or type(schema) is not int:
        raise MessageError("schema", f"unsupported schema {schema!r:.40}")
    kind = _str(doc, "kind")
    if kind != ("gateway_status" if scope == "gateway" else _LEAF_KIND[leaf]):
        raise MessageError("topic", f"kind {kind!r} on topic {topic!r}")
    gateway = _id(doc, "gateway")
    if scope == "gateway":
        if gateway != ident:
            raise MessageError("topic", f"gateway {gateway!r} on topic {topic!r}")
        online = _get(doc, "online")
        if type(online) is not bool:
            raise _type_error("online", "a boolean", online)
        time_ms = _parse_time(doc["time"], "time") if doc.get("time") is not None else None
        backlog = {k: _number(doc, k, 0.0, _MAX_ABS) for k in GATEWAY_BACKLOG_KEYS if k in doc}
        return GatewayStatusMessage(
            gateway=gateway, online=online, time_ms=time_ms, backlog=backlog
        )
    band_id = _id(doc, "band_id")
    if band_id != ident:
        raise MessageError("topic", f"band_id {band_id!r} on topic {topic!r}")
    time_ms = _parse_time(doc.get("time"), "time")
    if kind == "event":
        etype = _str(doc, "type", _EVENT_TYPES)
        episode = _get(doc, "episode")
        if type(episode) is not int:
            raise _type_error("episode", "an integer", episode)
        if not 0 <= episode <= _MAX_EPISODE:
            raise MessageError("range", f"episode={episode!r:.40} out of range")
        eid = _str(doc, "event_id")
        if eid != event_id(band_id, episode, etype, time_ms):
            raise MessageError("event_id", f"event_id {eid} does not match band/episode/type/time")
        return EventMessage(
            gateway=gateway,
            band_id=band_id,
            event_id=eid,
            type=etype,
            episode=episode,
            time_ms=time_ms,
            t_s=_number(doc, "t_s", 0.0, _MAX_STREAM_S),
            emitted_at_s=_number(doc, "emitted_at_s", 0.0, _MAX_STREAM_S),
            published_ms=_parse_time(doc.get("published"), "published"),
            details=_scalars(doc.get("details", {}), "details", bounded=True),
        )
    if kind == "summary":
        return SummaryMessage(
            gateway=gateway,
            band_id=band_id,
            time_ms=time_ms,
            t_s=_number(doc, "t_s", 0.0, _MAX_STREAM_S),
            rms_uv=_opt_number(doc, "rms_uv", 0.0, _MAX_UV),
            peak_uv=_opt_number(doc, "peak_uv", 0.0, _MAX_UV),
            noise_floor_uv=_opt_number(doc, "noise_floor_uv", 0.0, _MAX_UV),
            on_threshold_uv=_opt_number(doc, "on_threshold_uv", 0.0, _MAX_UV),
            quality=_str(doc, "quality", _QUALITIES),
            acc_activity_g=_opt_number(doc, "acc_activity_g", 0.0, 100.0),
            state=_str(doc, "state", _STATES),
            # optional: absent (an older gateway) or null (no accelerometer, a gap)
            tilt_deg=None if doc.get("tilt_deg") is None else _number(doc, "tilt_deg", 0.0, 180.0),
        )
    return StatusMessage(
        gateway=gateway,
        band_id=band_id,
        time_ms=time_ms,
        status=_scalars(doc.get("status"), "status"),
    )
