"""The gateway's MQTT output: an :class:`~sensor_gateway.sinks.EventSink` with a disk outbox.

Events are never lost between the detector and the broker:

1. :meth:`MqttSink.publish_event` builds the payload (:mod:`sensor_gateway.messages`)
   and appends it to the :class:`~sensor_gateway.outbox.Outbox` (fsync'd) before
   returning;
2. a window of at most ``max_inflight`` outbox entries is handed to paho at QoS 1;
   paho resends them after a reconnect (persistent session, stable client id);
3. the broker's PUBACK acknowledges the entry in the outbox, which compacts.

After a process restart every entry not yet acknowledged is published again, in
order; duplicates carry the same deterministic ``event_id`` and time, so the
recorder writes the same InfluxDB point again (idempotent).

Also: band status (QoS 1, retained; while offline only the newest per band is
kept), the band's last ``cramp_end`` event again as retained "last cramp" (same
rule), 1 Hz summaries (QoS 0; dropped and counted while offline), gateway
online/offline (retained; offline is the Last Will) with the outbox backlog (at
connect and with every band status round), optional Home Assistant
discovery ("Calf cramp" binary sensor from the summaries' ``state``, "Connected",
"Battery", "Last cramp").  Topics and payloads: docs/mqtt.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path

from sensor_gateway.band_stream import StampedEvent, StampedSummary
from sensor_gateway.errors import SinkError
from sensor_gateway.messages import (
    MessageError,
    Topics,
    build_event,
    build_gateway_status,
    build_status,
    build_summary,
    validate_id,
)
from sensor_gateway.mqtt import MqttAdapter, MqttConfig
from sensor_gateway.outbox import Outbox, OutboxEntry

__all__ = ["MqttSink", "discovery_configs"]

log = logging.getLogger(__name__)


def _split(body: bytes) -> tuple[str, bytes]:
    topic, _, payload = body.partition(b"\n")
    return topic.decode("utf-8"), payload


def discovery_configs(cfg: MqttConfig, topics: Topics, band_id: str) -> list[tuple[str, bytes]]:
    """Home Assistant MQTT discovery ``(topic, retained payload)`` pairs for one band."""
    gw = cfg.gateway
    uid = f"crampwatch_{band_id}".replace(":", "").replace(".", "_").replace("-", "_")
    device = {"identifiers": [uid], "name": f"Calf band {band_id}", "manufacturer": "crampwatch",
              "via_device": f"crampwatch_{gw}"}  # fmt: skip
    avail = {
        "availability_topic": topics.gateway_status(gw),
        "availability_template": "{{ 'online' if value_json.online else 'offline' }}",
    }
    entities: list[tuple[str, str, dict[str, object]]] = [
        ("binary_sensor", "cramp", {"name": "Calf cramp", "state_topic": topics.summary(band_id),
         "value_template": "{{ 'ON' if value_json.state == 'cramp' else 'OFF' }}",
         "expire_after": 30, "icon": "mdi:alert-octagon"}),
        ("binary_sensor", "connected", {"name": "Connected", "state_topic": topics.status(band_id),
         "value_template": "{{ 'ON' if value_json.status.connected else 'OFF' }}",
         "device_class": "connectivity"}),
        ("sensor", "battery", {"name": "Battery", "state_topic": topics.status(band_id),
         "value_template": "{{ value_json.status.battery_pct }}", "unit_of_measurement": "%",
         "device_class": "battery"}),
        ("sensor", "last_cramp", {"name": "Last cramp", "state_topic": topics.last_cramp(band_id),
         "value_template": "{{ value_json.time }}", "device_class": "timestamp",
         "json_attributes_topic": topics.last_cramp(band_id),
         "json_attributes_template": "{{ value_json.details | tojson }}"}),
    ]  # fmt: skip
    out = []
    for component, key, conf in entities:
        doc = {**conf, **avail, "unique_id": f"{uid}_{key}", "object_id": f"{uid}_{key}",
               "device": device}  # fmt: skip
        out.append((f"{cfg.discovery_prefix}/{component}/{uid}/{key}/config",
                    json.dumps(doc, separators=(",", ":")).encode()))  # fmt: skip
    return out


class MqttSink:
    """EventSink publishing to MQTT through a durable outbox.

    Parameters
    ----------
    cfg
        Broker and session settings (``[mqtt]``).
    outbox
        The outbox to use; default: ``Outbox(cfg.outbox_dir, max_bytes=cfg.outbox_max_bytes)``.
    clock
        Wall clock for ``published`` times (tests).
    close_timeout_s
        How long :meth:`close` waits for the outbox to empty while connected.

    The connection is started by :meth:`start` or lazily by the first publish.
    :attr:`counts` has ``events_queued``, ``events_acked``, ``events_refused``,
    ``summaries_sent``, ``summaries_dropped``, ``status_sent``, ``invalid``.
    """

    def __init__(
        self,
        cfg: MqttConfig,
        *,
        outbox: Outbox | None = None,
        clock: Callable[[], float] = time.time,
        close_timeout_s: float = 5.0,
    ) -> None:
        self.cfg = cfg
        self.gateway = validate_id(cfg.gateway, "gateway id")
        self.topics = Topics(cfg.topic_prefix)
        self.outbox = outbox or Outbox(
            Path(cfg.outbox_dir).expanduser(), max_bytes=cfg.outbox_max_bytes, name="mqtt outbox"
        )
        self.clock = clock
        self.close_timeout_s = close_timeout_s
        self.counts: Counter[str] = Counter()
        self._inflight: dict[int, int] = {}  # mid -> outbox seq
        self._status_mids: set[int] = set()
        self._to_submit: deque[OutboxEntry] = deque(self.outbox.pending())
        self._retained: dict[str, bytes] = {}  # topic -> newest payload not yet handed over
        self._discovered: set[str] = set()
        self._logged: set[str] = set()
        self._drained = asyncio.Event()
        self._backlog_sent_at: float | None = None
        will = (self.topics.gateway_status(self.gateway),
                build_gateway_status(self.gateway, False, None), 1, True)  # fmt: skip
        self.adapter = MqttAdapter(
            cfg,
            cfg.client_id_for("gw"),
            will=will,
            on_connect=self._connected,
            on_published=self._published,
        )
        self._started = False
        self._closed = False

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Connect (in the background) and start publishing the outbox."""
        if not self._started:
            self._started = True
            self.adapter.start()
            self._pump()

    async def wait_connected(self, timeout_s: float = 10.0) -> bool:
        """Start if needed and wait for the broker; ``False`` on timeout."""
        self.start()
        return await self.adapter.wait_connected(timeout_s)

    async def wait_drained(self, timeout_s: float) -> bool:
        """Wait until every outbox entry is acknowledged by the broker."""
        deadline = time.monotonic() + timeout_s
        while len(self.outbox):
            self._drained.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), min(left, 0.5))
        return True

    async def close(self) -> None:
        """Wait (bounded) for the outbox, publish offline, disconnect; pending entries stay."""
        if self._closed:
            return
        self._closed = True
        if self._started:
            if self.adapter.connected.is_set():
                await self.wait_drained(self.close_timeout_s)
                offline = build_gateway_status(self.gateway, False, self.clock(), self.backlog())
                mid = self.adapter.publish(self.topics.gateway_status(self.gateway), offline, 1,
                                           True)  # fmt: skip
                self._status_mids.add(mid)
                deadline = time.monotonic() + 2.0
                while mid in self._status_mids and time.monotonic() < deadline:
                    await asyncio.sleep(0.01)
            await self.adapter.stop()
        if len(self.outbox):
            log.warning("MQTT outbox keeps %d events for the next run", len(self.outbox))
        self.outbox.close()

    def crash(self) -> None:
        """Tests: vanish like a killed process (no DISCONNECT, no flush)."""
        self._closed = True
        self.adapter.kill()
        self.outbox.close()

    # ---------------------------------------------------------------- EventSink

    async def publish_event(self, band_id: str, event: StampedEvent) -> None:
        """Make ``event`` durable in the outbox, then publish it at QoS 1.

        Raises
        ------
        SinkError
            If the payload is invalid or the outbox is full / unwritable.
        """
        self.start()
        ev = event.event
        try:
            _eid, payload = build_event(
                self.gateway,
                band_id,
                event_type=ev.type,
                episode=ev.episode,
                wall_time_s=event.wall_time,
                t_s=ev.t_s,
                emitted_at_s=ev.emitted_at_s,
                details=ev.details,
                published_s=self.clock(),
            )
        except MessageError as exc:
            self.counts["invalid"] += 1
            raise SinkError(f"event of band {band_id!r} not publishable: {exc}") from None
        body = self.topics.event(band_id).encode() + b"\n" + payload
        seq = self.outbox.append(body)
        self.counts["events_queued"] += 1
        self._to_submit.append(OutboxEntry(seq, body))
        self._pump()
        if ev.type == "cramp_end":  # retained copy for dashboards and Home Assistant
            self._send_retained(self.topics.last_cramp(band_id), payload)
        await self._discover(band_id)

    async def publish_status(self, band_id: str, status: dict[str, object]) -> None:
        """Publish the band status retained at QoS 1 (newest only while offline)."""
        self.start()
        try:
            payload = build_status(self.gateway, band_id, self.clock(), status)
        except MessageError as exc:
            self.counts["invalid"] += 1
            raise SinkError(f"status of band {band_id!r}: {exc}") from None
        self._send_retained(self.topics.status(band_id), payload)
        now = self.clock()
        # one gateway status per status round (the bands' statuses come together)
        if self._backlog_sent_at is None or now - self._backlog_sent_at >= 1.0:
            self._send_gateway_status(now)
        await self._discover(band_id)

    def backlog(self) -> dict[str, int]:
        """The outbox backlog and loss counters published in the gateway status."""
        return {"outbox_entries": len(self.outbox), "outbox_bytes": self.outbox.bytes_used,
                "summaries_dropped": self.counts["summaries_dropped"],
                "events_refused": self.counts["events_refused"]}  # fmt: skip

    async def publish_summary(self, band_id: str, summary: StampedSummary) -> None:
        """Publish a 1 Hz summary at QoS 0; dropped (counted) while offline."""
        self.start()
        if not self.adapter.connected.is_set():
            self.counts["summaries_dropped"] += 1
            return
        try:
            payload = build_summary(self.gateway, band_id, summary.wall_time,
                                    summary.summary.to_json())  # fmt: skip
        except MessageError as exc:
            self.counts["invalid"] += 1
            raise SinkError(f"summary of band {band_id!r}: {exc}") from None
        self.adapter.publish(self.topics.summary(band_id), payload, 0)
        self.counts["summaries_sent"] += 1

    # ---------------------------------------------------------------- internals

    def _send_retained(self, topic: str, payload: bytes | None = None) -> None:
        # Retained state (band status, last cramp): while offline only the newest per
        # topic is kept, and handed to paho on the next connect.
        if payload is not None:
            self._retained[topic] = payload
        if not self.adapter.connected.is_set() or topic not in self._retained:
            return
        self._status_mids.add(self.adapter.publish(topic, self._retained.pop(topic), 1, True))
        self.counts["status_sent"] += 1

    async def _discover(self, band_id: str) -> None:
        if not self.cfg.homeassistant or band_id in self._discovered:
            return
        self._discovered.add(band_id)
        for topic, payload in discovery_configs(self.cfg, self.topics, band_id):
            self._status_mids.add(self.adapter.publish(topic, payload, 1, True))

    def _pump(self) -> None:
        if not self._started or self._closed:
            return
        while self._to_submit and len(self._inflight) < self.cfg.max_inflight:
            entry = self._to_submit.popleft()
            topic, payload = _split(entry.body)
            mid = self.adapter.publish(topic, payload, 1)
            self._inflight[mid] = entry.seq

    def _send_gateway_status(self, now: float) -> None:
        # online, with the backlog; while offline the Last Will speaks for the gateway
        if not self.adapter.connected.is_set():
            return
        self._backlog_sent_at = now
        self._status_mids.add(self.adapter.publish(
            self.topics.gateway_status(self.gateway),
            build_gateway_status(self.gateway, True, now, self.backlog()), 1, True))  # fmt: skip

    def _connected(self, session_present: bool) -> None:
        self._send_gateway_status(self.clock())
        for topic in list(self._retained):
            self._send_retained(topic)

    def _published(self, mid: int, ok: bool, reason: str) -> None:
        if mid in self._status_mids:
            self._status_mids.discard(mid)
            return
        seq = self._inflight.pop(mid, None)
        if seq is None:
            return
        if ok:
            self.counts["events_acked"] += 1
        else:  # the broker refused it (MQTT 5 ACL denial): resending cannot help
            self.counts["events_refused"] += 1
        try:
            self.outbox.ack(seq)
        except SinkError as exc:
            if "ack" not in self._logged:
                self._logged.add("ack")
                log.error("%s", exc)
        if not len(self.outbox):
            self._drained.set()
        self._pump()
