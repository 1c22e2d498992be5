"""The alerts service behind ``crampwatch alerts``: MQTT in, rules, durable delivery out.

:class:`AlertService` is the I/O shell around the pure
:class:`~sensor_gateway.alerts.AlertEngine`:

* it subscribes (persistent session, client id ``crampwatch-alerts-<gateway_id>``,
  *manual acknowledgement*) to band events, band status (retained) and gateway
  status; each message is validated by :func:`~sensor_gateway.messages.parse_message`
  (invalid ones are counted per kind, logged once, acknowledged and skipped) and
  PUBACKed only after the alerts it caused are on disk;
* once a second it runs the engine's timers (disconnected, lead-off) and releases
  alerts held by quiet hours whose time has come;
* every ``weekly_check_s`` it counts, with InfluxQL, the nights with cramps of the
  last 7 nights per band (:func:`nights_with_cramps`);
* alerts go to one :class:`~sensor_gateway.alert_delivery.DeliveryQueue` per
  destination (MQTT, each webhook), held ones to a ``held`` outbox, all under
  ``[alerts].state_dir``, which also keeps the engine's memory (``state.json``,
  replaced atomically).  Nothing an alert needs lives only in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sensor_gateway.alert_delivery import (
    DeliveryQueue,
    LogOnce,
    MqttDestination,
    WebhookConfig,
    WebhookDestination,
)
from sensor_gateway.alerts import Alert, AlertEngine, AlertError, AlertsConfig
from sensor_gateway.errors import SinkError
from sensor_gateway.influx import InfluxQuery
from sensor_gateway.messages import (
    EventMessage,
    GatewayStatusMessage,
    MessageError,
    StatusMessage,
    Topics,
    parse_message,
)
from sensor_gateway.mqtt import MqttAdapter, MqttConfig, Received
from sensor_gateway.nights import night_containing, night_of, quote_ident
from sensor_gateway.outbox import Outbox
from sensor_gateway.recorder import EVENT_MEASUREMENT

__all__ = ["AlertService", "nights_with_cramps"]

log = logging.getLogger(__name__)

_STATE_FILE = "state.json"
_WEEKLY_RETRY_S = 60.0


async def nights_with_cramps(
    query: InfluxQuery, tz: ZoneInfo, now_ms: int
) -> tuple[date, dict[str, set[date]]]:
    """The current night and, per band, which of the last 7 nights had a confirmed cramp.

    A night is local noon to local noon (:func:`~sensor_gateway.nights.night_containing`).
    ``cramp_confirmed`` points are counted per 15 minutes and band in InfluxDB: a
    bucket never straddles a local noon (every zone's offset is a multiple of 15
    min) and the answer stays small however many events there are.

    Raises
    ------
    SinkError
        If the query fails.
    """
    last = night_containing(now_ms, tz).day
    start_ms = night_of(last - timedelta(days=6), tz).start_ms
    query_text = (
        f"SELECT count({quote_ident('event_id')}) AS n FROM {quote_ident(EVENT_MEASUREMENT)} "
        f"WHERE {quote_ident('type')} = 'cramp_confirmed' AND time >= {start_ms}ms "
        f"AND time <= {now_ms}ms GROUP BY time(15m), {quote_ident('band')} fill(none)"
    )
    nights: dict[str, set[date]] = {}
    for row in await query.rows(query_text):
        if row.get("n"):
            day = night_containing(int(row["time"]), tz).day
            nights.setdefault(str(row["band"]), set()).add(day)
    return last, nights


class AlertService:
    """Consume crampwatch MQTT messages, apply the rules, deliver alerts durably.

    Parameters
    ----------
    cfg
        ``[alerts]``: rules, delivery settings, ``state_dir``.
    mqtt_cfg
        Broker and credentials (a user that may read ``crampwatch/#`` and write
        ``crampwatch/alert/#``, docs/alerts.md).
    webhooks
        ``[alerts.webhooks.<name>]`` tables.
    tz
        Zone of quiet hours, watch hours and nights.
    query
        InfluxQL connection for the weekly rule (``None``: no weekly rule); closed by
        :meth:`close`.
    clock
        Wall clock, POSIX seconds (tests).
    tick_s
        Period of the timers and of the release of held alerts.
    """

    def __init__(
        self,
        cfg: AlertsConfig,
        mqtt_cfg: MqttConfig,
        webhooks: Mapping[str, WebhookConfig],
        *,
        tz: ZoneInfo,
        query: InfluxQuery | None = None,
        clock: Callable[[], float] = time.time,
        tick_s: float = 1.0,
    ) -> None:
        self.cfg = cfg
        self.topics = Topics(mqtt_cfg.topic_prefix)
        self.query = query
        self.clock = clock
        self.tick_s = tick_s
        self.state_dir = cfg.state_dir.expanduser()
        self.counts: Counter[str] = Counter()
        self._log_once = LogOnce()
        self._tasks: list[asyncio.Task[None]] = []
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AlertError(f"alerts state {self.state_dir}: {exc.strerror}") from None
        self._saved = ""
        try:
            self.engine = AlertEngine(cfg, tz, self._read_state())
        except AlertError as exc:
            log.warning("%s: starting without cooldowns and timers", exc)
            self.engine = AlertEngine(cfg, tz)
        self.mqtt = MqttDestination(mqtt_cfg.topic_prefix, cfg.timeout_s) if cfg.mqtt else None
        self.adapter = MqttAdapter(
            mqtt_cfg,
            mqtt_cfg.client_id_for("alerts"),
            manual_ack=True,
            on_connect=self._connected,
            on_published=self._published,
        )
        self.queues: list[DeliveryQueue] = []
        if self.mqtt is not None:
            self.mqtt.adapter = self.adapter
            self.queues.append(self._queue(self.mqtt, "outbox-mqtt"))
        for name, hook in webhooks.items():
            destination = WebhookDestination(name, hook, cfg.timeout_s)
            self.queues.append(self._queue(destination, f"outbox-webhook-{name}"))
        self.held = self._outbox("held")
        self._warn_orphans({q.outbox.directory.name for q in self.queues})

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect, start the senders, the timers and the weekly check (returns at once)."""
        self.adapter.start()
        for queue in self.queues:
            queue.start()
        self._tasks = [
            asyncio.create_task(self._consume(), name="alerts consume"),
            asyncio.create_task(self._ticker(), name="alerts timers"),
        ]
        if self.query is not None and self.cfg.weekly_nights:
            self._tasks.append(asyncio.create_task(self._weekly(), name="alerts weekly"))

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then shut down cleanly."""
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.close()

    async def close(self) -> None:
        """Stop everything; undelivered and held alerts stay on disk for the next run."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for queue in self.queues:
            await queue.close()
        self._save_state()
        self.held.close()
        await self.adapter.stop()
        if self.query is not None:
            await self.query.close()
        log.info("alerts counts: %s", dict(self.counts + self.engine.counts))

    # ------------------------------------------------------------------ inputs

    def handle(self, msg: Received) -> None:
        """Validate one message and run the rules on it (alerts are durable on return)."""
        now_ms = self._now_ms()
        try:
            parsed = parse_message(msg.topic, msg.payload, self.topics)
        except MessageError as exc:
            self.counts[f"invalid_{exc.kind}"] += 1
            self._log_once(
                f"invalid_{exc.kind}",
                logging.WARNING,
                "invalid message on %s skipped (%s): %s",
                msg.topic,
                exc.kind,
                exc,
            )
            return
        if isinstance(parsed, EventMessage):
            alerts = self.engine.on_event(parsed, now_ms)
        elif isinstance(parsed, StatusMessage):
            alerts = self.engine.on_status(parsed, now_ms)
        elif isinstance(parsed, GatewayStatusMessage):
            alerts = self.engine.on_gateway_status(parsed, now_ms)
        else:  # summaries are not subscribed to
            return
        self.dispatch(alerts, now_ms)

    def dispatch(self, alerts: list[Alert], now_ms: int) -> None:
        """Queue each alert for its destinations (or hold it), then save the engine state."""
        for alert in alerts:
            log.info("alert %s for %s: %s", alert.rule, alert.band_id, alert.title)
            body = alert.to_json()
            if alert.deliver_at_ms > now_ms:
                try:
                    self.held.append(body)
                except SinkError as exc:
                    self._lost(alert, "held", exc)
            else:
                self._route(alert, body)
        self._save_state()

    async def check_weekly(self) -> bool:
        """Run the weekly rule now; ``False`` if InfluxDB could not be asked."""
        assert self.query is not None
        now_ms = self._now_ms()
        try:
            last, nights = await nights_with_cramps(self.query, self.engine.tz, now_ms)
        except SinkError as exc:
            self.counts["weekly_failed"] += 1
            self._log_once(
                "weekly", logging.WARNING, "weekly rule: InfluxDB query failed, retrying: %s", exc
            )
            return False
        self._log_once.forget("weekly")
        self.dispatch(self.engine.on_weekly(nights, last, now_ms), now_ms)
        return True

    def release_held(self, now_ms: int) -> None:
        """Send the held alerts whose quiet hours are over."""
        for entry in self.held.pending():
            try:
                alert = Alert.from_json(entry.body)
            except AlertError as exc:
                log.error(
                    "held alert %d unreadable, dropped: %s: %r", entry.seq, exc, entry.body[:200]
                )
            else:
                if alert.deliver_at_ms > now_ms:
                    continue
                self._route(alert, entry.body)
            try:
                self.held.ack(entry.seq)
            except SinkError as exc:
                self._log_once("held_ack", logging.ERROR, "%s", exc)

    # ------------------------------------------------------------------ internals

    def _now_ms(self) -> int:
        return round(self.clock() * 1000)

    def _outbox(self, name: str) -> Outbox:
        return Outbox(
            self.state_dir / name, max_bytes=self.cfg.outbox_max_bytes, name=f"alerts {name}"
        )

    def _queue(self, destination: MqttDestination | WebhookDestination, name: str) -> DeliveryQueue:
        return DeliveryQueue(
            destination,
            self._outbox(name),
            retry_min_s=self.cfg.retry_min_s,
            retry_max_s=self.cfg.retry_max_s,
        )

    def _warn_orphans(self, used: set[str]) -> None:
        for path in sorted(self.state_dir.glob("outbox-*")):
            if path.name not in used and any(path.glob("seg-*.log")):
                log.warning(
                    "%s belongs to a destination no longer configured; alerts it may "
                    "still hold are not sent",
                    path,
                )

    def _route(self, alert: Alert, body: bytes) -> None:
        routed = False
        for queue in self.queues:
            if queue.accepts(alert):
                routed = True
                try:
                    queue.enqueue(body)
                except SinkError as exc:
                    self._lost(alert, queue.name, exc)
        if not routed:
            self.counts["unrouted"] += 1
            self._log_once(
                f"unrouted_{alert.rule}",
                logging.WARNING,
                "no destination takes %s alerts (see [alerts] mqtt and webhook rules)",
                alert.rule,
            )

    def _lost(self, alert: Alert, where: str, exc: SinkError) -> None:
        self.counts["not_queued"] += 1
        log.error(
            "alert %s (%s) could not be queued for %s: %s. It said: %s: %s",
            alert.alert_id,
            alert.rule,
            where,
            exc,
            alert.title,
            alert.message,
        )

    def _connected(self, session_present: bool) -> None:
        self.adapter.subscribe(
            [
                (self.topics.event("+"), 1),
                (self.topics.status("+"), 1),
                (self.topics.gateway_status("+"), 1),
            ]
        )

    def _published(self, mid: int, ok: bool, reason: str) -> None:
        if self.mqtt is not None:
            self.mqtt.published(mid, ok, reason)

    async def _consume(self) -> None:
        while True:
            msg = await self.adapter.messages.get()
            self.handle(msg)
            self.adapter.ack(msg)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            now_ms = self._now_ms()
            self.dispatch(self.engine.tick(now_ms), now_ms)
            self.release_held(now_ms)

    async def _weekly(self) -> None:
        while True:
            ok = await self.check_weekly()
            interval = self.cfg.weekly_check_s
            await asyncio.sleep(interval if ok else min(interval, _WEEKLY_RETRY_S))

    # ------------------------------------------------------------------ state file

    def _read_state(self) -> dict[str, Any] | None:
        path = self.state_dir / _STATE_FILE
        try:
            text = path.read_text(encoding="utf-8")
            state = json.loads(text)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise AlertError(f"{path} unreadable: {exc}") from None
        if not isinstance(state, dict):
            raise AlertError(f"{path} is not a JSON object")
        self._saved = text
        return state

    def _save_state(self) -> None:
        text = json.dumps(self.engine.state(), sort_keys=True)
        if text == self._saved:
            return
        path = self.state_dir / _STATE_FILE
        tmp = path.with_suffix(".tmp")
        try:
            with tmp.open("w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            tmp.replace(path)
        except OSError as exc:
            self._log_once("state", logging.ERROR, "cannot save %s: %s", path, exc)
            return
        self._saved = text
