"""MQTT configuration and the one adapter between paho-mqtt's network thread and asyncio.

:class:`MqttAdapter` owns a paho ``Client`` (callback API version 2) running its
network loop in paho's own thread (``loop_start``), the only extra thread in
crampwatch.  Every paho callback does nothing but hand its arguments to the
event loop with ``loop.call_soon_threadsafe``; all crampwatch logic runs on the
loop.  Received messages are handed over in bursts (one wake-up of the loop per
burst, not per message) into a bounded :class:`asyncio.Queue`.

Sessions are persistent (MQTT 5 ``clean_start=False`` plus a session expiry, or
3.1.1 ``clean_session=False``) under a stable client id, so QoS 1 messages
queued by the broker while a client is away are delivered when it returns.  A
subscriber can use *manual acknowledgement*: the PUBACK for a QoS 1 message is
sent only when :meth:`MqttAdapter.ack` is called (after the data is stored);
acknowledgements for messages of an earlier connection are not sent (their
packet ids mean nothing on the new connection; the broker redelivers them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sensor_gateway.config import load_section
from sensor_gateway.errors import ConfigError, SinkError

__all__ = ["MqttAdapter", "MqttConfig", "Received", "default_gateway_id", "tls_context"]

log = logging.getLogger(__name__)


def default_gateway_id() -> str:
    """The host name, reduced to the characters allowed in ids (stable per machine)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:64].strip("-.")
    return name or "gateway"


@dataclass(frozen=True)
class MqttConfig:
    """``[mqtt]`` table (env ``CRAMPWATCH_MQTT_<FIELD>``; password via ``..._PASSWORD_FILE``).

    Attributes
    ----------
    host, port
        Broker address.
    username, password
        Credentials; no default password (empty = anonymous, refused by a sane broker).
    client_id
        MQTT client id; empty = ``crampwatch-<role>-<gateway_id>``.  Must stay the
        same across restarts, or the persistent session is lost.
    gateway_id
        Id of this gateway in topics and payloads (default: the host name).
    protocol
        ``"5"`` (default) or ``"3.1.1"``.
    keepalive_s, session_expiry_s
        Keepalive; how long the broker keeps the session of an absent client.
    tls, ca_file
        TLS on (port 8883 usually); the broker's certificate is verified (host name
        included) against ``ca_file``, or the system's CAs when empty.
    cert_file, key_file
        Client certificate and key (PEM) for brokers with ``require_certificate``;
        ``key_file`` may be empty when the key is in ``cert_file``.
    topic_prefix
        First topic level(s), default ``crampwatch``.
    reconnect_min_s, reconnect_max_s
        paho's reconnect backoff.
    max_inflight
        QoS 1 messages sent but not yet PUBACKed (publisher) / Receive Maximum (subscriber).
    queue_size
        Bound of the received-message queue.
    outbox_dir, outbox_max_bytes
        The publisher's disk outbox.
    share_group
        Recorder: subscribe as ``$share/<group>/...`` (several recorders share the load).
    homeassistant, discovery_prefix
        Publish Home Assistant MQTT discovery configs (retained) for each band.
    """

    host: str = "127.0.0.1"
    port: int = 1883
    username: str = ""
    password: str = ""
    client_id: str = ""
    gateway_id: str = ""
    protocol: str = "5"
    keepalive_s: int = 30
    session_expiry_s: int = 7 * 86_400
    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    topic_prefix: str = "crampwatch"
    reconnect_min_s: float = 0.2
    reconnect_max_s: float = 10.0
    max_inflight: int = 200
    queue_size: int = 5000
    outbox_dir: Path = Path("~/.local/state/crampwatch/mqtt-outbox")
    outbox_max_bytes: int = 64 * 1024 * 1024
    share_group: str = ""
    homeassistant: bool = False
    discovery_prefix: str = "homeassistant"

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port out of range: {self.port}")
        if self.protocol not in ("5", "3.1.1"):
            raise ValueError(f"protocol must be '5' or '3.1.1', got {self.protocol!r}")
        if not 5 <= self.keepalive_s <= 3600 or self.session_expiry_s < 0:
            raise ValueError("keepalive_s must be 5..3600 and session_expiry_s >= 0")
        if not 1 <= self.max_inflight <= 65535 or self.queue_size < 2 * self.max_inflight:
            raise ValueError("max_inflight must be 1..65535 and queue_size >= 2*max_inflight")
        if not re.fullmatch(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*", self.topic_prefix):
            raise ValueError(f"bad topic_prefix {self.topic_prefix!r}")
        if self.share_group and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", self.share_group):
            raise ValueError(f"bad share_group {self.share_group!r}")
        if self.gateway_id and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}",
                                                self.gateway_id):  # fmt: skip
            raise ValueError(f"bad gateway_id {self.gateway_id!r}")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise ValueError("need 0 < reconnect_min_s <= reconnect_max_s")
        if (self.ca_file or self.cert_file or self.key_file) and not self.tls:
            # most likely a forgotten `tls = true`: do not send the password in clear
            raise ValueError("ca_file, cert_file and key_file need tls = true")
        if self.key_file and not self.cert_file:
            raise ValueError("key_file needs cert_file")

    @classmethod
    def load(cls, document: Mapping[str, Any] | None = None) -> MqttConfig:
        """Load from the ``[mqtt]`` table and the environment."""
        return load_section(cls, "mqtt", document)

    @property
    def gateway(self) -> str:
        """``gateway_id`` or the default derived from the host name."""
        return self.gateway_id or default_gateway_id()

    def client_id_for(self, role: str) -> str:
        """``client_id`` or ``crampwatch-<role>-<gateway>``."""
        return self.client_id or f"crampwatch-{role}-{self.gateway}"


def tls_context(cfg: MqttConfig) -> ssl.SSLContext:
    """The client TLS context of ``cfg``: verifies the broker, optional client certificate.

    Raises
    ------
    ConfigError
        If a CA, certificate or key file cannot be read.
    """
    try:
        ctx = ssl.create_default_context(cafile=cfg.ca_file or None)
        if cfg.cert_file:
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"[mqtt] TLS files: {exc}") from None
    return ctx


@dataclass(frozen=True)
class Received:
    """One received message, as handed to the event loop."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int
    generation: int


class MqttAdapter:
    """paho-mqtt client behind an asyncio facade (the only place paho's thread exists).

    Parameters
    ----------
    cfg
        Broker, credentials, session settings.
    client_id
        Stable id (see :meth:`MqttConfig.client_id_for`).
    will
        ``(topic, payload, qos, retain)`` Last Will, or ``None``.
    manual_ack
        Send PUBACKs for received QoS 1 messages only on :meth:`ack`.
    on_connect, on_disconnect, on_published
        Called on the event loop: ``on_connect(session_present)``,
        ``on_disconnect(reason)``, ``on_published(mid, ok, reason)``.
    """

    def __init__(
        self,
        cfg: MqttConfig,
        client_id: str,
        *,
        will: tuple[str, bytes, int, bool] | None = None,
        manual_ack: bool = False,
        on_connect: Callable[[bool], None] | None = None,
        on_disconnect: Callable[[str], None] | None = None,
        on_published: Callable[[int, bool, str], None] | None = None,
    ) -> None:
        import paho.mqtt.client as mqtt  # noqa: PLC0415
        from paho.mqtt.enums import CallbackAPIVersion  # noqa: PLC0415

        self.cfg = cfg
        self.client_id = client_id
        self.messages: asyncio.Queue[Received] = asyncio.Queue(maxsize=cfg.queue_size)
        self.connected = asyncio.Event()
        self.dropped_qos0 = 0
        self.dropped_qos1 = 0
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._on_published = on_published
        self._loop: asyncio.AbstractEventLoop | None = None
        self._generation = 0  # written by paho's thread only
        self._gen_lock = threading.Lock()
        self._inbox: list[Received] = []  # paho's thread → loop, handed over in bursts
        self._inbox_lock = threading.Lock()
        self._logged: set[str] = set()
        v5 = cfg.protocol == "5"
        self._v5 = v5
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else False,
            manual_ack=manual_ack,
        )
        if cfg.username:
            self._client.username_pw_set(cfg.username, cfg.password or None)
        if cfg.tls:
            self._client.tls_set_context(tls_context(cfg))
        if will is not None:
            topic, payload, qos, retain = will
            self._client.will_set(topic, payload, qos=qos, retain=retain)
        self._client.reconnect_delay_set(
            max(1, round(cfg.reconnect_min_s)), max(1, round(cfg.reconnect_max_s))
        )
        self._client.max_inflight_messages_set(cfg.max_inflight)
        self._client.max_queued_messages_set(0)  # bounded by our outbox window instead
        self._client.on_connect = self._t_connect
        self._client.on_disconnect = self._t_disconnect
        self._client.on_publish = self._t_publish
        self._client.on_message = self._t_message
        self._client.on_subscribe = self._t_subscribe

    # ---------------------------------------------------------------- paho's thread
    # These run in paho's network thread: hand over to the loop, nothing else.

    def _post(self, fn: Callable[..., None], *args: object) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # loop closing
            loop.call_soon_threadsafe(fn, *args)

    def _t_connect(self, _c: Any, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            with self._gen_lock:
                self._generation += 1
        self._post(self._l_connect, bool(getattr(flags, "session_present", False)),
                   bool(reason.is_failure), str(reason))  # fmt: skip

    def _t_disconnect(self, _c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self._post(self._l_disconnect, str(reason))

    def _t_publish(self, _c: Any, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        self._post(self._l_published, mid, not reason.is_failure, str(reason))

    def _t_subscribe(self, _c: Any, _u: Any, _mid: int, reasons: Any, _p: Any) -> None:
        self._post(self._l_subscribed, [str(r) for r in reasons if r.is_failure])

    def _t_message(self, _c: Any, _u: Any, msg: Any) -> None:
        # Batch handoff: one call_soon_threadsafe (a self-pipe write that wakes the
        # loop) per burst, not per message.  _generation is written by this thread.
        item = Received(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain), msg.mid,
                        self._generation)  # fmt: skip
        with self._inbox_lock:
            self._inbox.append(item)
            if len(self._inbox) > 1:
                return  # a handoff is already scheduled and will take this one too
        self._post(self._l_messages)

    # ---------------------------------------------------------------- event loop side

    def _log_once(self, kind: str, level: int, msg: str, *args: object) -> None:
        if kind in self._logged:
            log.debug(msg, *args)
            return
        self._logged.add(kind)
        log.log(level, msg, *args)

    def _l_connect(self, session_present: bool, failed: bool, reason: str) -> None:
        if failed:
            self._log_once(f"connect:{reason}", logging.ERROR, "MQTT %s:%d refused %s: %s",
                           self.cfg.host, self.cfg.port, self.client_id, reason)  # fmt: skip
            return
        log.info("MQTT connected to %s:%d as %s (session present: %s)", self.cfg.host,
                 self.cfg.port, self.client_id, session_present)  # fmt: skip
        self._logged = {k for k in self._logged if not k.startswith("connect:")}
        self.connected.set()
        if self._on_connect is not None:
            self._on_connect(session_present)

    def _l_disconnect(self, reason: str) -> None:
        if self.connected.is_set():
            log.warning("MQTT %s disconnected: %s", self.client_id, reason)
        self.connected.clear()
        if self._on_disconnect is not None:
            self._on_disconnect(reason)

    def _l_published(self, mid: int, ok: bool, reason: str) -> None:
        if not ok:
            self._log_once(f"pub:{reason}", logging.ERROR, "MQTT broker refused a publish "
                           "(mid %d): %s", mid, reason)  # fmt: skip
        if self._on_published is not None:
            self._on_published(mid, ok, reason)

    def _l_subscribed(self, failures: list[str]) -> None:
        if failures:
            log.error("MQTT subscription refused: %s", ", ".join(failures))

    def _l_messages(self) -> None:
        with self._inbox_lock:
            batch, self._inbox = self._inbox, []
        for msg in batch:
            self._l_message(msg)

    def _l_message(self, msg: Received) -> None:
        # Keep room for QoS 1 messages: the broker sends at most max_inflight of them
        # unacknowledged, so QoS 0 may only use the rest of the queue.
        room = self.messages.maxsize - self.messages.qsize()
        if msg.qos == 0 and room <= self.cfg.max_inflight:
            self.dropped_qos0 += 1
            self._log_once("drop0", logging.WARNING, "MQTT receive queue busy: dropping QoS 0 "
                           "messages (first on %s)", msg.topic)  # fmt: skip
            return
        try:
            self.messages.put_nowait(msg)
        except asyncio.QueueFull:
            self.dropped_qos1 += 1  # not acked: the broker redelivers after a reconnect
            self._log_once("drop1", logging.ERROR, "MQTT receive queue full: QoS %d message on "
                           "%s not taken", msg.qos, msg.topic)  # fmt: skip

    # ---------------------------------------------------------------- API (event loop)

    def start(self) -> None:
        """Start connecting in paho's thread (returns at once; see :attr:`connected`)."""
        from paho.mqtt.packettypes import PacketTypes  # noqa: PLC0415
        from paho.mqtt.properties import Properties  # noqa: PLC0415

        self._loop = asyncio.get_running_loop()
        kwargs: dict[str, Any] = {}
        if self._v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self.cfg.session_expiry_s
            props.ReceiveMaximum = self.cfg.max_inflight
            kwargs = {"clean_start": False, "properties": props}
        try:
            self._client.connect_async(self.cfg.host, self.cfg.port, self.cfg.keepalive_s,
                                       **kwargs)  # fmt: skip
        except (OSError, ValueError) as exc:
            raise SinkError(f"MQTT {self.cfg.host}:{self.cfg.port}: {exc}") from None
        self._client.loop_start()

    async def wait_connected(self, timeout_s: float) -> bool:
        """Wait until connected; ``False`` on timeout."""
        try:
            await asyncio.wait_for(self.connected.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> int:
        """Hand a message to paho; return its mid (QoS 1 is kept and resent by paho).

        Raises
        ------
        SinkError
            If paho refuses it outright (bad topic, payload too large).
        """
        import paho.mqtt.client as mqtt  # noqa: PLC0415

        try:
            info = self._client.publish(topic, payload, qos=qos, retain=retain)
        except ValueError as exc:
            raise SinkError(f"MQTT publish to {topic}: {exc}") from None
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise SinkError(f"MQTT publish to {topic}: {mqtt.error_string(info.rc)}")
        return int(info.mid)

    def subscribe(self, filters: list[tuple[str, int]]) -> None:
        """Subscribe to ``(filter, qos)`` pairs (call again after each connect)."""
        self._client.subscribe(filters)

    def ack(self, msg: Received) -> None:
        """PUBACK a QoS 1 message taken with ``manual_ack``, if still on its connection."""
        if msg.qos == 0:
            return
        with self._gen_lock:
            if msg.generation == self._generation and self.connected.is_set():
                self._client.ack(msg.mid, msg.qos)

    async def stop(self) -> None:
        """Disconnect cleanly (no Last Will) and stop paho's thread."""
        self._client.disconnect()
        await asyncio.sleep(0)
        self._client.loop_stop()
        self.connected.clear()
        self._loop = None

    def kill(self) -> None:
        """Drop the connection without DISCONNECT (tests: the broker sends the Last Will)."""
        self._client.loop_stop()
        sock = self._client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        self._loop = None
