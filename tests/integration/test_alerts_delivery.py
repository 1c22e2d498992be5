"""Alerts end to end: real Mosquitto, real influxd, a real aiohttp webhook receiver.

Events are published over MQTT as the gateway publishes them; the alerts service
(:class:`~sensor_gateway.alert_service.AlertService`) delivers to the MQTT alert
topic, read back by a separate subscriber, and to webhooks served by a local
aiohttp app on a free port.  Faults are real: the receiver answers 500 or 400, or
is not listening at all (connection refused); the service is stopped and started
again over the same state directory.  The broker gets an ``alerts`` user with the
ACL of deploy/mosquitto/acl (read ``crampwatch/#``, write ``crampwatch/alert/#``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web

from sensor_gateway.alert_delivery import DeliveryQueue, WebhookConfig
from sensor_gateway.alert_service import AlertService, nights_with_cramps
from sensor_gateway.alerts import WEEKLY_ADVICE, AlertsConfig
from sensor_gateway.cli import main
from sensor_gateway.influx import InfluxQuery, InfluxV1Writer, line
from sensor_gateway.messages import Topics, build_event, build_status, event_id
from sensor_gateway.mqtt import MqttAdapter, MqttConfig
from sensor_gateway.outbox import Outbox
from sensor_gateway.recorder import EVENT_MEASUREMENT
from tests.fixtures.servers import (
    InfluxServer,
    MosquittoServer,
    free_port,
    serve_broker,
)

pytestmark = pytest.mark.integration

UTC_ZONE = ZoneInfo("UTC")
TOPICS = Topics()
_names = itertools.count()


@pytest.fixture(scope="module")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoServer]:
    """The shared broker setup plus an ``alerts`` user (overrides the plugin's fixture)."""
    yield from serve_broker(tmp_path_factory.mktemp("mosquitto-alerts"), alerters=("alerts",))


# --------------------------------------------------------------------------- helpers


def mqtt_cfg(broker: MosquittoServer, user: str, client_id: str) -> MqttConfig:
    """Broker settings for ``user`` with fast reconnects."""
    return MqttConfig(
        host="127.0.0.1",
        port=broker.port,
        username=user,
        password=broker.passwords[user],
        client_id=client_id,
        gateway_id="gw-alerts",
        keepalive_s=5,
        reconnect_min_s=0.5,
        reconnect_max_s=1.0,
    )


async def until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Poll ``predicate`` every 20 ms; whether it became true in time."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


@dataclass
class Receiver:
    """A webhook receiver: aiohttp on a fixed free port, started and stopped at will.

    ``answers`` maps a path to the HTTP status it replies with (default 200);
    ``hits`` holds every request seen as ``(path, status answered, headers, body)``.
    """

    port: int = field(default_factory=free_port)
    answers: dict[str, int] = field(default_factory=dict)
    hits: list[tuple[str, int, dict[str, str], bytes]] = field(default_factory=list)
    runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        """Full URL of ``path`` on this receiver."""
        return f"http://127.0.0.1:{self.port}{path}"

    def ok(self, path: str) -> list[tuple[dict[str, str], bytes]]:
        """Requests to ``path`` answered 200: (lower-case headers, body)."""
        return [(h, b) for p, status, h, b in self.hits if p == path and status == 200]

    def seen(self, path: str, status: int) -> int:
        """How many requests to ``path`` got ``status``."""
        return sum(1 for p, s, _h, _b in self.hits if p == path and s == status)

    async def _handle(self, request: web.Request) -> web.Response:
        status = self.answers.get(request.path, 200)
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.hits.append((request.path, status, headers, await request.read()))
        return web.Response(status=status, text="ok" if status == 200 else "no")

    async def start(self) -> None:
        """Listen on :attr:`port`."""
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        """Stop listening (connections are refused afterwards)."""
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


class Rig:
    """Publisher (gateway user), alert topic listener (recorder user), service factory."""

    def __init__(self, broker: MosquittoServer, tmp: Path) -> None:
        n = next(_names)
        self.broker, self.tmp, self.n = broker, tmp, n
        self.band = f"band-{n}"
        gateway_cfg = mqtt_cfg(broker, "gateway", f"t-gw-{n}")
        self.gateway = MqttAdapter(gateway_cfg, gateway_cfg.client_id)
        listen_cfg = mqtt_cfg(broker, "recorder", f"t-listen-{n}")
        self.listener = MqttAdapter(listen_cfg, listen_cfg.client_id, on_connect=self._listen)
        self.alerts: list[tuple[str, dict[str, Any]]] = []
        self.receiver = Receiver()
        self.services: list[AlertService] = []
        self._task: asyncio.Task[None] | None = None

    def _listen(self, session_present: bool) -> None:
        self.listener.subscribe([(f"{TOPICS.prefix}/alert/#", 1)])

    async def start(self) -> None:
        self.gateway.start()
        self.listener.start()
        assert await self.gateway.wait_connected(10.0)
        assert await self.listener.wait_connected(10.0)
        self._task = asyncio.create_task(self._collect())
        await asyncio.sleep(0.2)  # SUBACK

    async def _collect(self) -> None:
        while True:
            msg = await self.listener.messages.get()
            self.alerts.append((msg.topic, json.loads(msg.payload)))

    async def service(
        self,
        webhooks: dict[str, WebhookConfig],
        *,
        query: InfluxQuery | None = None,
        clock: Callable[[], float] = time.time,
        **cfg: object,
    ) -> AlertService:
        """Start an alerts service with fast retries over this rig's state directory."""
        settings: dict[str, object] = {
            "state_dir": self.tmp / "alerts",
            "retry_min_s": 0.1,
            "retry_max_s": 0.4,
            "timeout_s": 2.0,
            "watch_hours": "",
        }
        settings.update(cfg)
        alerts_cfg = AlertsConfig(**settings)  # type: ignore[arg-type]
        service = AlertService(
            alerts_cfg,
            mqtt_cfg(self.broker, "alerts", f"t-alerts-{self.n}"),
            webhooks,
            tz=UTC_ZONE,
            query=query,
            clock=clock,
            tick_s=0.1,
        )
        await service.start()
        assert await service.adapter.wait_connected(10.0)
        await asyncio.sleep(0.2)  # SUBACK
        self.services.append(service)
        return service

    def publish_cramp(self, episode: int = 1) -> bytes:
        """Publish a ``cramp_confirmed`` of this rig's band; return the payload."""
        now = time.time()
        _eid, payload = build_event(
            "gw-alerts",
            self.band,
            event_type="cramp_confirmed",
            episode=episode,
            wall_time_s=now - 12.0,
            t_s=100.0,
            emitted_at_s=112.0,
            details={"floor_uv": 4.0},
            published_s=now,
        )
        self.gateway.publish(TOPICS.event(self.band), payload, 1)
        return payload

    async def close(self) -> None:
        for service in self.services:
            await service.close()
        await self.receiver.stop()
        if self._task is not None:
            self._task.cancel()
        await self.gateway.stop()
        await self.listener.stop()


def queue_of(service: AlertService, name: str) -> DeliveryQueue:
    """The delivery queue of destination ``name`` (``"webhook hook"``, ``"mqtt"``)."""
    return next(q for q in service.queues if q.name == name)


def run(body: Callable[[Rig], Awaitable[None]], broker: MosquittoServer, tmp: Path) -> None:
    """Run ``body`` with a fresh rig on a fresh event loop."""

    async def main() -> None:
        rig = Rig(broker, tmp)
        await rig.start()
        try:
            await asyncio.wait_for(body(rig), 30.0)
        finally:
            await rig.close()

    asyncio.run(main())


# --------------------------------------------------------------------------- tests


def test_cramp_over_mqtt_reaches_the_alert_topic_and_every_webhook_style(
    mosquitto: MosquittoServer, tmp_path: Path
) -> None:
    """cramp_confirmed → MQTT alert topic, generic JSON, ntfy, Home Assistant; 400 is final."""

    async def body(rig: Rig) -> None:
        receiver = rig.receiver
        receiver.answers["/refuses"] = 400
        await receiver.start()
        hooks = {
            "generic": WebhookConfig(receiver.url("/generic"), "json", "s3cret"),
            "phone": WebhookConfig(
                receiver.url("/ntfy/cramps"), "ntfy", rules=("cramp", "frequent_cramps")
            ),
            "ha": WebhookConfig(receiver.url("/api/webhook/crampwatch-x1"), "homeassistant"),
            "broken": WebhookConfig(receiver.url("/refuses"), "json"),
        }
        service = await rig.service(hooks)
        rig.gateway.publish(TOPICS.event(rig.band), b"{not json", 1)  # counted, skipped
        payload = rig.publish_cramp()
        paths = ("/generic", "/ntfy/cramps", "/api/webhook/crampwatch-x1")
        assert await until(lambda: len(rig.alerts) == 1 and all(receiver.ok(p) for p in paths))
        topic, doc = rig.alerts[0]
        assert topic == f"crampwatch/alert/{rig.band}/cramp"
        assert (doc["kind"], doc["rule"], doc["band_id"]) == ("alert", "cramp", rig.band)
        assert doc["details"] == {
            "onset": doc["details"]["onset"],
            "episode": 1,
            "gateway": "gw-alerts",
        }
        [(headers, raw)] = receiver.ok("/generic")
        assert json.loads(raw) == doc and headers["authorization"] == "Bearer s3cret"
        assert json.loads(receiver.ok("/api/webhook/crampwatch-x1")[0][1]) == doc
        [(headers, raw)] = receiver.ok("/ntfy/cramps")
        assert raw.decode() == doc["message"] and "pull your toes up" in raw.decode()
        assert (headers["title"], headers["priority"], headers["tags"]) == (
            f"Calf cramp ({rig.band})",
            "high",
            "leg",
        )
        # a receiver refusing the payload (400) is final: logged, counted, not retried
        broken = queue_of(service, "webhook broken")
        assert await until(lambda: broken.counts["rejected"] == 1)
        await asyncio.sleep(0.5)
        assert receiver.seen("/refuses", 400) == 1 and not len(broken.outbox)
        assert service.counts["invalid_not_json"] == 1
        # the same event redelivered raises nothing
        rig.gateway.publish(TOPICS.event(rig.band), payload, 1)
        assert await until(lambda: service.engine.counts["duplicate_events"] == 1)
        assert len(rig.alerts) == 1

    run(body, mosquitto, tmp_path)


def test_webhook_down_then_up_gets_the_alert_exactly_once(
    mosquitto: MosquittoServer, tmp_path: Path
) -> None:
    """HTTP 500, then connection refused, then up: one delivery, failures counted."""

    async def body(rig: Rig) -> None:
        receiver = rig.receiver
        receiver.answers["/hook"] = 500
        await receiver.start()
        service = await rig.service({"hook": WebhookConfig(receiver.url("/hook"))})
        queue = queue_of(service, "webhook hook")
        rig.publish_cramp()
        assert await until(lambda: receiver.seen("/hook", 500) >= 2)
        await receiver.stop()
        assert await until(lambda: queue.counts["failed_ClientConnectorError"] >= 1)
        assert len(queue.outbox) == 1 and len(rig.alerts) == 1  # MQTT is not held up
        receiver.answers.clear()
        await receiver.start()
        assert await until(lambda: queue.counts["delivered"] == 1)
        await asyncio.sleep(1.0)  # time for a duplicate to show up, if there were one
        [(_headers, raw)] = receiver.ok("/hook")
        assert json.loads(raw) == rig.alerts[0][1]
        assert len(rig.alerts) == 1 and not len(queue.outbox)
        assert queue.counts["failed_http_500"] >= 2 and queue.counts["rejected"] == 0

    run(body, mosquitto, tmp_path)


def test_pending_alert_is_delivered_after_a_restart(
    mosquitto: MosquittoServer, tmp_path: Path
) -> None:
    """Stopped with an undelivered alert on disk; the next run delivers it, once."""

    async def body(rig: Rig) -> None:
        receiver = rig.receiver  # not listening yet: connection refused
        hooks = {"hook": WebhookConfig(receiver.url("/hook"))}
        first = await rig.service(hooks)
        rig.publish_cramp()
        assert await until(lambda: len(rig.alerts) == 1)
        queue = queue_of(first, "webhook hook")
        assert await until(lambda: queue.counts["attempts_failed"] >= 1)
        await first.close()
        rig.services.remove(first)
        outbox_dir = tmp_path / "alerts" / "outbox-webhook-hook"
        pending = Outbox(outbox_dir).pending()
        assert [json.loads(e.body)["alert_id"] for e in pending] == [rig.alerts[0][1]["alert_id"]]
        await receiver.start()
        second = await rig.service(hooks)
        queue = queue_of(second, "webhook hook")
        assert await until(lambda: queue.counts["delivered"] == 1)
        await asyncio.sleep(1.0)
        [(_headers, raw)] = receiver.ok("/hook")
        assert json.loads(raw) == rig.alerts[0][1]
        assert len(rig.alerts) == 1  # neither re-published on MQTT nor raised again

    run(body, mosquitto, tmp_path)


def test_weekly_rule_from_points_in_influxdb(
    mosquitto: MosquittoServer, influxdb: InfluxServer, tmp_path: Path
) -> None:
    """Cramps on 3 of the last 7 nights in influxd → one alert with the advice; 2 → none."""
    db = f"alerts_{next(_names)}_{int(time.time())}"
    influxdb.create_database(db)

    async def body(rig: Rig) -> None:
        day = 86_400_000
        now_ms = round(time.time() * 1000)
        points = [(rig.band, "cramp_confirmed", now_ms - k * day) for k in (1, 2, 4)]
        points += [(rig.band, "cramp_confirmed", now_ms - 2 * day + 60_000)]  # same night
        points += [("other", "cramp_confirmed", now_ms - k * day) for k in (1, 8, 9)]
        points += [("other", "cramp_end", now_ms - k * day) for k in (2, 3)]
        writer = InfluxV1Writer(influxdb.url, db)
        await writer.write(
            [
                line(
                    EVENT_MEASUREMENT,
                    {"band": band, "gateway": "gw-alerts", "type": kind},
                    {"event_id": event_id(band, i, kind, t), "episode": i},
                    t,
                )
                for i, (band, kind, t) in enumerate(points)
            ]
        )
        await writer.close()
        query = InfluxQuery(influxdb.url, db)
        last, nights = await nights_with_cramps(query, UTC_ZONE, now_ms)
        assert {band: len(days) for band, days in nights.items()} == {rig.band: 3, "other": 1}
        receiver = rig.receiver
        await receiver.start()
        await rig.service(
            {"phone": WebhookConfig(receiver.url("/ntfy"), "ntfy")},
            query=query,
            weekly_nights=3,
            weekly_check_s=3600.0,
        )
        assert await until(lambda: len(rig.alerts) == 1 and len(receiver.ok("/ntfy")) == 1)
        topic, doc = rig.alerts[0]
        assert topic == f"crampwatch/alert/{rig.band}/frequent_cramps"
        assert doc["advice"] == list(WEEKLY_ADVICE)
        assert doc["details"]["nights_with_cramps"] == 3
        assert doc["details"]["last_night"] == last.isoformat()
        [(headers, raw)] = receiver.ok("/ntfy")
        assert headers["title"] == f"Cramps on 3 of the last 7 nights ({rig.band})"
        text = raw.decode()
        assert "doctor" in text and "muscle weakness" in text and "pull your toes up" in text

    run(body, mosquitto, tmp_path)


def test_quiet_hours_hold_a_status_alert_across_a_restart_until_their_end(
    mosquitto: MosquittoServer, tmp_path: Path
) -> None:
    """Low battery (retained status) inside quiet hours: held on disk, sent at their end."""
    offset_s = [0.0]

    def clock() -> float:
        return time.time() + offset_s[0]

    now = time.gmtime()
    start, end = (f"{(now.tm_hour + h) % 24:02d}:{now.tm_min:02d}" for h in (-1, 1))

    async def body(rig: Rig) -> None:
        receiver = rig.receiver
        await receiver.start()
        hooks = {"hook": WebhookConfig(receiver.url("/hook"))}
        first = await rig.service(hooks, quiet_hours=f"{start}-{end}", clock=clock)
        status = build_status(
            "gw-alerts", rig.band, time.time(), {"connected": True, "battery_pct": 9.0}
        )
        rig.gateway.publish(TOPICS.status(rig.band), status, 1, retain=True)
        assert await until(lambda: len(first.held) == 1)
        await asyncio.sleep(0.3)
        assert rig.alerts == [] and receiver.hits == []
        await first.close()
        rig.services.remove(first)
        second = await rig.service(hooks, quiet_hours=f"{start}-{end}", clock=clock)
        await asyncio.sleep(0.3)  # the retained status again: no second alert
        assert len(second.held) == 1 and rig.alerts == []
        offset_s[0] = 2 * 3600.0  # the quiet hours are over
        assert await until(lambda: len(rig.alerts) == 1 and len(receiver.ok("/hook")) == 1)
        topic, doc = rig.alerts[0]
        assert topic == f"crampwatch/alert/{rig.band}/battery_low" and "9 %" in doc["message"]
        assert doc["deliver_at"] > doc["time"] and not len(second.held)
        rig.gateway.publish(TOPICS.status(rig.band), b"", 1, retain=True)  # clear the retained

    run(body, mosquitto, tmp_path)


def test_the_command_line_service_queues_alerts_on_disk(
    mosquitto: MosquittoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``crampwatch alerts`` with a TOML file and secret files; a cramp queued while it was
    away (persistent session) ends up in the outbox of the unreachable webhook."""
    secret = tmp_path / "mqtt-password"
    secret.write_text(mosquitto.passwords["alerts"] + "\n")
    for name in list(os.environ):
        if name.startswith("CRAMPWATCH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CRAMPWATCH_MQTT_PASSWORD_FILE", str(secret))
    config = tmp_path / "crampwatch.toml"
    config.write_text(
        f'[mqtt]\nport = {mosquitto.port}\nusername = "alerts"\nclient_id = "t-alerts-cli"\n'
        f'[alerts]\nstate_dir = "{tmp_path / "state"}"\nweekly_nights = 0\nmqtt = false\n'
        f'[alerts.webhooks.down]\nurl = "http://127.0.0.1:{free_port()}/hook"\n'
    )
    assert main(["alerts", "--config", str(config), "--duration", "0.5"]) == 0

    async def publish() -> None:
        cfg = mqtt_cfg(mosquitto, "gateway", "t-gw-cli")
        gateway = MqttAdapter(cfg, cfg.client_id)
        gateway.start()
        assert await gateway.wait_connected(10.0)
        _eid, payload = build_event(
            "gw-alerts",
            "band-cli",
            event_type="cramp_confirmed",
            episode=1,
            wall_time_s=time.time(),
            t_s=0.0,
            emitted_at_s=12.0,
            details={},
            published_s=time.time(),
        )
        gateway.publish(TOPICS.event("band-cli"), payload, 1)
        await asyncio.sleep(0.3)
        await gateway.stop()

    asyncio.run(publish())
    assert main(["alerts", "--config", str(config), "--duration", "1.5"]) == 0
    pending = Outbox(tmp_path / "state" / "outbox-webhook-down").pending()
    assert [json.loads(e.body)["band_id"] for e in pending] == ["band-cli"]
    assert json.loads((tmp_path / "state" / "state.json").read_text())["fired"]
