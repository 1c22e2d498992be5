"""The recorder: MQTT → validation → InfluxDB points, acknowledging only what is stored.

The recorder subscribes (optionally as ``$share/<group>/...`` so several recorders
split the load) with a persistent session and *manual acknowledgement*: a QoS 1
message is PUBACKed only after its point was written to InfluxDB or spooled to
disk by :class:`~sensor_gateway.influx.BufferedWriter`.  A recorder that dies
before that gets the message again from the broker.

Every payload is validated by :func:`~sensor_gateway.messages.parse_message`;
invalid ones (malformed JSON, wrong schema, absurd values, oversized ...) are
counted per kind in :attr:`Recorder.counts` (``invalid_<kind>``), logged once
per kind with the topic, acknowledged and skipped.

Mapping (docs/influx-schema.md): one point per message, timestamp = the event's
(or summary's, status') own UTC time in ms, tags ``band``/``gateway``/``type``
only, so the same event always lands on the same series and timestamp: a
redelivered or re-sent event overwrites itself instead of duplicating.

With ``status_interval_s`` the recorder also writes its own health every so often
(and once more when it stops): a ``recorder_status`` point with its InfluxDB spool
backlog and counters (:func:`status_line`), for the Gateway health dashboard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from sensor_gateway.influx import (
    BufferedWriter,
    FieldValue,
    InfluxWriter,
    field_value,
    line,
    series,
)
from sensor_gateway.messages import (
    EventMessage,
    GatewayStatusMessage,
    Message,
    MessageError,
    StatusMessage,
    SummaryMessage,
    Topics,
    parse_message,
)
from sensor_gateway.mqtt import MqttAdapter, MqttConfig, Received
from sensor_gateway.outbox import Outbox

__all__ = ["EVENT_MEASUREMENT", "Recorder", "status_line", "to_line"]

log = logging.getLogger(__name__)

EVENT_MEASUREMENT = "cramp_event"
SUMMARY_MEASUREMENT = "envelope"
STATUS_MEASUREMENT = "band_status"
GATEWAY_MEASUREMENT = "gateway_status"
RECORDER_MEASUREMENT = "recorder_status"
#: Band status keys not stored: ``time`` is the point's timestamp already (and a field
#: named ``time`` cannot be selected in InfluxQL, where ``time`` is the timestamp).
_STATUS_SKIPPED = frozenset({"time"})
_EVENT_BASE = ("event_id", "episode", "t_s", "emitted_at_s", "publish_delay_s")
_STORED = {
    t: f"stored_{t.__name__}"
    for t in (EventMessage, SummaryMessage, StatusMessage, GatewayStatusMessage)
}


def _num(value: float | int | str | bool | None) -> FieldValue | None:
    # Numbers are stored as floats, always: an integer one time and a float the
    # next would be a field type conflict that makes InfluxDB reject the point.
    # (Validated JSON has exact types: bool is not ``int`` here.)
    return float(value) if type(value) is int else value


def to_line(msg: Message, received_ms: int) -> str:
    """The line-protocol point for one validated message (see docs/influx-schema.md).

    Events and summaries (nearly all traffic) are formatted directly: their keys
    are fixed or validated as ``[a-z][a-z0-9_]*`` and their numbers are finite
    floats, so nothing needs escaping; only detail strings go through
    :func:`~sensor_gateway.influx.field_value`.
    """
    if isinstance(msg, EventMessage):
        delay_s = (msg.published_ms - msg.time_ms) / 1000.0
        parts = [f'event_id="{msg.event_id}",episode={msg.episode}i,t_s={msg.t_s!r},'
                 f"emitted_at_s={msg.emitted_at_s!r},publish_delay_s={delay_s!r}"]  # fmt: skip
        parts += [f"{key}={field_value(float(value) if type(value) is int else value)}"
                  for key, value in msg.details.items()
                  if value is not None and key not in _EVENT_BASE]  # fmt: skip
        head = series(EVENT_MEASUREMENT, (("band", msg.band_id), ("gateway", msg.gateway),
                                          ("type", msg.type)))  # fmt: skip
        return f"{head} {','.join(parts)} {msg.time_ms}"
    if isinstance(msg, SummaryMessage):
        parts = [f"t_s={msg.t_s!r}"]
        for key, value in (("rms_uv", msg.rms_uv), ("peak_uv", msg.peak_uv),
                           ("noise_floor_uv", msg.noise_floor_uv),
                           ("on_threshold_uv", msg.on_threshold_uv),
                           ("acc_activity_g", msg.acc_activity_g),
                           ("tilt_deg", msg.tilt_deg)):  # fmt: skip
            if value is not None:
                parts.append(f"{key}={value!r}")
        parts.append(f'quality="{msg.quality}",state="{msg.state}"')  # fixed vocabularies
        head = series(SUMMARY_MEASUREMENT, (("band", msg.band_id), ("gateway", msg.gateway)))
        return f"{head} {','.join(parts)} {msg.time_ms}"
    if isinstance(msg, StatusMessage):
        fields = {k: _num(v) for k, v in msg.status.items() if k not in _STATUS_SKIPPED}
        if all(v is None for v in fields.values()):
            fields = {"present": True}
        return line(STATUS_MEASUREMENT, {"band": msg.band_id, "gateway": msg.gateway}, fields,
                    msg.time_ms)  # fmt: skip
    assert isinstance(msg, GatewayStatusMessage)
    # The Last Will carries no time (it is composed at connect time): use arrival.
    ts = msg.time_ms if msg.time_ms is not None else received_ms
    gw_fields: dict[str, FieldValue | None] = {"online": msg.online, **msg.backlog}
    return line(GATEWAY_MEASUREMENT, {"gateway": msg.gateway}, gw_fields, ts)


def status_line(recorder_id: str, counts: dict[str, float], time_ms: int) -> str:
    """The ``recorder_status`` point, tag ``recorder`` (its MQTT client id), float fields."""
    fields: dict[str, FieldValue | None] = {k: float(v) for k, v in sorted(counts.items())}
    return line(RECORDER_MEASUREMENT, {"recorder": recorder_id}, fields, time_ms)


class Recorder:
    """Consume crampwatch MQTT messages and store them in InfluxDB.

    Parameters
    ----------
    cfg
        MQTT settings (its ``username`` should be a read-only recorder user).
    writer
        The InfluxDB writer (1.x or 2.x).
    spool
        Disk spool for batches while InfluxDB is down.
    batch_size, flush_interval_s, retry_interval_s
        Batching (see :class:`~sensor_gateway.influx.InfluxConfig`).
    client_role
        Role part of the default client id (``crampwatch-<role>-<gateway_id>``).
    status_interval_s
        Write a ``recorder_status`` point this often and once more at :meth:`close`
        (``None``: never).
    clock
        Wall clock (POSIX seconds) for the Last Will's arrival time and status points.
    """

    def __init__(
        self,
        cfg: MqttConfig,
        writer: InfluxWriter,
        spool: Outbox,
        *,
        batch_size: int = 5000,
        flush_interval_s: float = 0.2,
        retry_interval_s: float = 1.0,
        client_role: str = "recorder",
        status_interval_s: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.topics = Topics(cfg.topic_prefix)
        self.buffer = BufferedWriter(writer, spool, batch_size=batch_size,
                                     flush_interval_s=flush_interval_s,
                                     retry_interval_s=retry_interval_s)  # fmt: skip
        self.client_id = cfg.client_id_for(client_role)
        self.adapter = MqttAdapter(cfg, self.client_id, manual_ack=True,
                                   on_connect=self._connected)  # fmt: skip
        self.status_interval_s = status_interval_s
        self.counts: Counter[str] = Counter()
        self.clock = clock
        self._logged: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._status_task: asyncio.Task[None] | None = None
        self._unacked = 0  # QoS 1 messages handed to the buffer, not yet acknowledged

    def subscriptions(self) -> list[tuple[str, int]]:
        """Filters subscribed to (with ``$share/<group>/`` when ``share_group`` is set)."""
        subs = self.topics.subscriptions()
        if self.cfg.share_group:
            subs = [(f"$share/{self.cfg.share_group}/{f}", q) for f, q in subs]
        return subs

    def _connected(self, session_present: bool) -> None:
        self.adapter.subscribe(self.subscriptions())

    async def start(self) -> None:
        """Connect and start consuming (returns at once)."""
        self.buffer.start()
        self.adapter.start()
        self._task = asyncio.create_task(self._consume(), name="recorder")
        if self.status_interval_s is not None:
            self._status_task = asyncio.create_task(self._status_loop(), name="recorder-status")

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then shut down cleanly."""
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop consuming, write a last status point, flush (acks go out), disconnect."""
        for task in (self._task, self._status_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._status_task = None
        if self.status_interval_s is not None:
            await self.write_status()
        await self.buffer.close()
        await self.adapter.stop()
        log.info("recorder counts: %s", dict(self.counts))

    def crash(self) -> None:
        """Tests: vanish like a killed process (nothing flushed, nothing acknowledged)."""
        for task in (self._task, self._status_task):
            if task is not None:
                task.cancel()
        self.buffer.abort()
        self.adapter.kill()

    def status(self) -> dict[str, float]:
        """Backlog and counters: the fields of the ``recorder_status`` point.

        ``spool_batches``/``spool_bytes`` (InfluxDB backlog on disk), ``buffered``
        (points waiting for the next write), ``unacked`` (MQTT messages not yet
        acknowledged), ``received``, ``invalid`` (all kinds), ``points_written``,
        ``points_spooled``, ``points_rejected``, ``store_failed``.
        """
        spool = self.buffer.spool
        done = self.buffer.counts
        return {
            "spool_batches": len(spool),
            "spool_bytes": spool.bytes_used,
            "buffered": self.buffer.buffered,
            "unacked": self._unacked,
            "received": self.counts["received"],
            "invalid": sum(v for k, v in self.counts.items() if k.startswith("invalid_")),
            **{k: done[k] for k in ("points_written", "points_spooled", "points_rejected",
                                    "store_failed")},
        }  # fmt: skip

    async def write_status(self) -> bool:
        """Queue a ``recorder_status`` point (written, or spooled, like the data).

        Never waits for a write: when the point would complete a batch (the batch must
        then wait for the previous write, which may be held while InfluxDB is down and
        the spool full), it is skipped and counted as ``status_skipped``; ``False``.
        """
        if self.buffer.buffered + 1 >= self.buffer.batch_size:
            self.counts["status_skipped"] += 1
            return False
        point = status_line(self.client_id, self.status(), round(self.clock() * 1000))
        await self.buffer.add([point])
        return True

    async def _status_loop(self) -> None:
        assert self.status_interval_s is not None
        while True:
            await asyncio.sleep(self.status_interval_s)
            await self.write_status()

    def _invalid(self, kind: str, topic: str, exc: Exception) -> None:
        self.counts[f"invalid_{kind}"] += 1
        if kind not in self._logged:
            self._logged.add(kind)
            log.warning("invalid message on %s skipped (%s): %s [logged once per kind]",
                        topic, kind, exc)  # fmt: skip

    def handle(self, msg: Received) -> str | None:
        """Validate one message; return its point, or ``None`` when invalid (counted)."""
        self.counts["received"] += 1
        try:
            parsed = parse_message(msg.topic, msg.payload, self.topics)
            point = to_line(parsed, round(self.clock() * 1000))
        except MessageError as exc:
            self._invalid(exc.kind, msg.topic, exc)
            return None
        except ValueError as exc:  # no storable field
            self._invalid("fields", msg.topic, exc)
            return None
        except Exception:  # a gap in validation must not stop the recorder
            self.counts["invalid_unexpected"] += 1
            if "unexpected" not in self._logged:
                self._logged.add("unexpected")
                log.exception("unexpected error on a message on %s, skipped [logged once]",
                              msg.topic)  # fmt: skip
            return None
        self.counts[_STORED[type(parsed)]] += 1
        return point

    async def store(self, batch: list[Received]) -> None:
        """Validate, map and buffer received messages; each is acknowledged once durable."""
        lines = [p for p in map(self.handle, batch) if p is not None]
        acked = [m for m in batch if m.qos > 0]
        self._unacked += len(acked)
        await self.buffer.add(lines, self._acker(acked) if acked else None)
        await asyncio.sleep(0)  # under load, let socket I/O (InfluxDB request, PUBACKs) go on

    async def _consume(self) -> None:
        queue = self.adapter.messages
        # The broker sends at most max_inflight unacknowledged QoS 1 messages: when
        # nothing more is queued and half of that waits for a write, write now
        # instead of at the timer.
        window = max(1, self.cfg.max_inflight // 2)
        while True:
            batch = [await queue.get()]
            while not queue.empty() and len(batch) < 1000:
                batch.append(queue.get_nowait())
            await self.store(batch)
            if self._unacked >= window and queue.empty():
                await self.buffer.submit()

    def _acker(self, messages: list[Received]) -> Callable[[], None]:
        def ack() -> None:
            self._unacked -= len(messages)
            for m in messages:
                self.adapter.ack(m)

        return ack


def spool_for(directory: Path, max_bytes: int) -> Outbox:
    """The recorder's InfluxDB spool in ``directory``."""
    return Outbox(directory.expanduser(), max_bytes=max_bytes, name="influx spool")
