"""Alert delivery: MQTT alert topic and HTTP webhooks, each behind a durable outbox.

Every destination has its own :class:`~sensor_gateway.outbox.Outbox` (fsync'd,
ordered, bounded) and one :class:`DeliveryQueue` task draining it: an alert is on
disk before :meth:`DeliveryQueue.enqueue` returns, and leaves the outbox only when
the destination accepted it (MQTT PUBACK, HTTP 2xx).  Failures are retried with
exponential backoff (``retry_min_s`` doubling up to ``retry_max_s``), logged once
per kind until delivery works again, and counted; after a restart every pending
alert is sent again, in order.  One destination being down never holds up another.

Destinations (docs/alerts.md):

:class:`MqttDestination`
    ``<prefix>/alert/<band>/<rule>``, QoS 1, not retained; the payload is
    :meth:`Alert.to_json <sensor_gateway.alerts.Alert.to_json>`.
:class:`WebhookDestination`
    ``style = "json"``: POST the same JSON (optional ``Authorization: Bearer``);
    ``"ntfy"``: POST the message as text with ``Title``, ``Priority`` and ``Tags``
    headers (ntfy.sh or a self-hosted ntfy); ``"homeassistant"``: POST the JSON to
    ``<base>/api/webhook/<id>``.

Delivery is at least once: a crash between the destination's acceptance and the
outbox acknowledgement sends that alert again; the ``alert_id`` lets a receiver
drop the repeat.  HTTP 400/413/415/422 mean the receiver refuses this payload, so
the alert is dropped, logged with its text at ERROR and counted
(``rejected``); everything else (5xx, 401/403/404, redirects, timeouts, refused
connections) is retried: a wrong URL or token keeps alerts on disk until fixed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import aiohttp

from sensor_gateway.alerts import RULES, Alert, AlertError
from sensor_gateway.config import load_section
from sensor_gateway.errors import ConfigError, SinkError
from sensor_gateway.mqtt import MqttAdapter
from sensor_gateway.outbox import Outbox

__all__ = [
    "DeliveryError",
    "DeliveryQueue",
    "Destination",
    "LogOnce",
    "MqttDestination",
    "WebhookConfig",
    "WebhookDestination",
    "alert_topic",
    "load_webhooks",
]

log = logging.getLogger(__name__)

STYLES: Final = ("json", "ntfy", "homeassistant")
#: HTTP answers that refuse the payload itself: retrying cannot help.
_REFUSED: Final = frozenset({400, 413, 415, 422})
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def alert_topic(prefix: str, alert: Alert) -> str:
    """``<prefix>/alert/<band>/<rule>``: QoS 1, not retained."""
    return f"{prefix}/alert/{alert.band_id}/{alert.rule}"


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class WebhookConfig:
    """``[alerts.webhooks.<name>]`` (env ``CRAMPWATCH_ALERTS_WEBHOOKS_<NAME>_<FIELD>``).

    Attributes
    ----------
    url
        Where to POST (``http(s)://``). For Home Assistant it contains the webhook
        id, which is a secret: give it as ``..._URL_FILE``.
    style
        ``json``, ``ntfy`` or ``homeassistant``.
    token
        ``Authorization: Bearer`` token (json, ntfy); only from the environment
        or ``..._TOKEN_FILE``, never in the file.
    rules
        Only these rules (empty = all of :data:`~sensor_gateway.alerts.RULES`).
    """

    url: str = ""
    style: str = "json"
    token: str = ""
    rules: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be http(s)://host/...")
        if self.style not in STYLES:
            raise ValueError(f"style must be one of {', '.join(STYLES)}, got {self.style!r}")
        if self.style == "homeassistant" and (
            not re.fullmatch(r".*/api/webhook/[^/]+", parts.path) or self.token
        ):
            raise ValueError("homeassistant: url must end in /api/webhook/<id>, and no token")
        unknown = sorted(set(self.rules) - set(RULES))
        if unknown:
            raise ValueError(f"unknown rule(s) {', '.join(unknown)}; rules: {', '.join(RULES)}")

    def accepts(self, alert: Alert) -> bool:
        """Whether this webhook wants ``alert``."""
        return not self.rules or alert.rule in self.rules


def load_webhooks(
    document: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> dict[str, WebhookConfig]:
    """The ``[alerts.webhooks.<name>]`` tables, each with its environment overrides.

    Raises
    ------
    ConfigError
        If a name is not ``[a-z][a-z0-9_]*``, a webhook is invalid, or the file
        holds a token (tokens come from the environment or a ``_FILE``).
    """
    tables = dict(document.get("alerts", {})).get("webhooks", {})
    if not isinstance(tables, Mapping):
        raise ConfigError("[alerts.webhooks] must hold one table per webhook")
    out = {}
    for name, table in tables.items():
        if not _NAME_RE.match(name) or not isinstance(table, Mapping):
            raise ConfigError(f"[alerts.webhooks.{name}]: name must be [a-z][a-z0-9_]*, a table")
        if "token" in table:
            raise ConfigError(
                f"[alerts.webhooks.{name}]: no token in the file; set "
                f"CRAMPWATCH_ALERTS_WEBHOOKS_{name.upper()}_TOKEN_FILE"
            )
        section = f"alerts_webhooks_{name}"
        out[name] = load_section(WebhookConfig, section, {section: table}, environ)
    return out


# --------------------------------------------------------------------------- destinations


class DeliveryError(SinkError):
    """One delivery attempt failed.

    Attributes
    ----------
    kind
        Short stable name (``http_503``, ``ClientConnectorError``, ``timeout`` ...).
    retriable
        ``False`` when the receiver refused the payload itself.
    """

    def __init__(self, message: str, *, kind: str, retriable: bool = True) -> None:
        super().__init__(message)
        self.kind = kind
        self.retriable = retriable


class Destination(Protocol):
    """Where alerts go: one attempt per :meth:`send`."""

    name: str

    def accepts(self, alert: Alert) -> bool:
        """Whether ``alert`` is for this destination."""

    async def send(self, alert: Alert, body: bytes) -> None:
        """Deliver once; raise :class:`DeliveryError` on failure."""

    async def close(self) -> None:
        """Release connections."""


class MqttDestination:
    """Publishes alerts at QoS 1 on :func:`alert_topic` through an :class:`MqttAdapter`.

    The adapter's ``on_published`` callback must call :meth:`published`.
    """

    name = "mqtt"

    def __init__(self, prefix: str, timeout_s: float) -> None:
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.adapter: MqttAdapter | None = None
        self._acks: dict[int, asyncio.Future[tuple[bool, str]]] = {}

    def accepts(self, alert: Alert) -> bool:
        """Every alert goes to MQTT."""
        return True

    def published(self, mid: int, ok: bool, reason: str) -> None:
        """PUBACK (or refusal) of message ``mid``."""
        fut = self._acks.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result((ok, reason))

    async def send(self, alert: Alert, body: bytes) -> None:
        """Publish and wait for the broker's PUBACK."""
        assert self.adapter is not None, "MqttDestination.adapter not set"
        if not await self.adapter.wait_connected(self.timeout_s):
            raise DeliveryError("MQTT broker not connected", kind="offline")
        fut: asyncio.Future[tuple[bool, str]] = asyncio.get_running_loop().create_future()
        try:
            mid = self.adapter.publish(alert_topic(self.prefix, alert), body, 1)
        except SinkError as exc:
            raise DeliveryError(str(exc), kind="publish") from None
        self._acks[mid] = fut
        try:
            ok, reason = await asyncio.wait_for(fut, self.timeout_s)
        except TimeoutError:
            raise DeliveryError("no PUBACK in time", kind="timeout") from None
        finally:
            self._acks.pop(mid, None)
        if not ok:
            raise DeliveryError(f"broker refused the alert: {reason}", kind=f"refused:{reason}")

    async def close(self) -> None:
        """Nothing to release (the service owns the adapter)."""


def _header(text: str) -> str:
    """A header value: ASCII as is, anything else RFC 2047-encoded (ntfy decodes it)."""
    if text.isascii():
        return text
    return "=?UTF-8?B?" + base64.b64encode(text.encode("utf-8")).decode("ascii") + "?="


class WebhookDestination:
    """POSTs alerts to one webhook with aiohttp (one session, kept alive)."""

    def __init__(self, name: str, cfg: WebhookConfig, timeout_s: float) -> None:
        self.name = f"webhook {name}"
        self.cfg = cfg
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def accepts(self, alert: Alert) -> bool:
        """See :meth:`WebhookConfig.accepts`."""
        return self.cfg.accepts(alert)

    def request(self, alert: Alert, body: bytes) -> tuple[dict[str, str], bytes]:
        """Headers and body of the POST for this webhook's style."""
        headers = {"User-Agent": "crampwatch-alerts"}
        if self.cfg.token:
            headers["Authorization"] = f"Bearer {self.cfg.token}"
        if self.cfg.style != "ntfy":
            headers["Content-Type"] = "application/json"
            return headers, body
        headers.update(
            {
                "Content-Type": "text/plain; charset=utf-8",
                "Title": _header(alert.title),
                "Priority": alert.priority,
                "Tags": ",".join(alert.tags),
            }
        )
        return headers, alert.message.encode("utf-8")

    async def send(self, alert: Alert, body: bytes) -> None:
        """POST once; 2xx is success."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        headers, data = self.request(alert, body)
        try:
            async with self._session.post(
                self.cfg.url, data=data, headers=headers, allow_redirects=False
            ) as resp:
                status = resp.status
                answer = (await resp.read())[:200].decode("utf-8", "replace")
        except TimeoutError:
            raise DeliveryError("no answer in time", kind="timeout") from None
        except aiohttp.ClientError as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}", kind=type(exc).__name__) from None
        if 200 <= status < 300:
            return
        raise DeliveryError(
            f"HTTP {status}: {answer}", kind=f"http_{status}", retriable=status not in _REFUSED
        )

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None


# --------------------------------------------------------------------------- queue


class LogOnce:
    """Log each kind of trouble once (repeats at DEBUG) until it is :meth:`forget`-ten."""

    def __init__(self) -> None:
        self._kinds: set[str] = set()

    def __call__(self, kind: str, level: int, message: str, *args: object) -> None:
        """Log ``message % args`` at ``level`` the first time ``kind`` comes up."""
        if kind in self._kinds:
            log.debug(message, *args)
        else:
            self._kinds.add(kind)
            log.log(level, message + " [logged once per kind]", *args)

    def forget(self, kind: str | None = None) -> None:
        """Log ``kind`` (``None``: every kind) again next time."""
        if kind is None:
            self._kinds.clear()
        else:
            self._kinds.discard(kind)


class DeliveryQueue:
    """A destination, its outbox and the task that drains it with backoff.

    Parameters
    ----------
    destination
        Where the alerts go.
    outbox
        Its undelivered alerts (one outbox per destination, survives restarts).
    retry_min_s, retry_max_s
        First delay after a failure; the delay doubles up to this.

    :attr:`counts`: ``queued``, ``delivered``, ``attempts_failed``,
    ``failed_<kind>``, ``rejected``, ``unreadable``.
    """

    def __init__(
        self, destination: Destination, outbox: Outbox, *, retry_min_s: float, retry_max_s: float
    ) -> None:
        self.destination = destination
        self.outbox = outbox
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self.counts: Counter[str] = Counter()
        self._log_once = LogOnce()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def name(self) -> str:
        """The destination's name."""
        return self.destination.name

    def accepts(self, alert: Alert) -> bool:
        """Whether the destination wants ``alert``."""
        return self.destination.accepts(alert)

    def enqueue(self, body: bytes) -> None:
        """Make the alert durable in the outbox and wake the sender.

        Raises
        ------
        SinkError
            If the outbox is full or cannot be written.
        """
        self.outbox.append(body)
        self.counts["queued"] += 1
        self._wake.set()

    def start(self) -> None:
        """Start draining (needs a running loop); pending alerts of a previous run first."""
        if len(self.outbox):
            log.warning(
                "%s: %d undelivered alerts from a previous run; sending them",
                self.name,
                len(self.outbox),
            )
        self._task = asyncio.create_task(self._run(), name=f"alerts {self.name}")

    async def close(self) -> None:
        """Stop the sender; undelivered alerts stay in the outbox for the next run."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.destination.close()
        if len(self.outbox):
            log.warning(
                "%s: %d undelivered alerts kept for the next run", self.name, len(self.outbox)
            )
        self.outbox.close()

    async def _run(self) -> None:
        failures = 0
        while True:
            entry = self.outbox.peek()
            if entry is None:
                await self._wake.wait()
                self._wake.clear()
                continue
            try:
                alert = Alert.from_json(entry.body)
            except AlertError as exc:
                self.counts["unreadable"] += 1
                log.error(
                    "%s: unreadable outbox entry %d dropped: %s: %r",
                    self.name,
                    entry.seq,
                    exc,
                    entry.body[:200],
                )
                self._ack(entry.seq)
                continue
            try:
                await self._send(alert, entry.body)
            except DeliveryError as exc:
                if exc.retriable:
                    failures += 1
                    self._failed(exc, alert, failures)
                    await asyncio.sleep(self._delay(failures))
                    continue
                self.counts["rejected"] += 1
                log.error(
                    "%s refused alert %s (%s) for good, dropped: %s. It said: %s: %s",
                    self.name,
                    alert.alert_id,
                    alert.rule,
                    exc,
                    alert.title,
                    alert.message,
                )
            else:
                self.counts["delivered"] += 1
                if failures:
                    log.info("%s: delivered again after %d failed attempts", self.name, failures)
                    failures = 0
                    self._log_once.forget()
            self._ack(entry.seq)

    async def _send(self, alert: Alert, body: bytes) -> None:
        try:
            await self.destination.send(alert, body)
        except DeliveryError:
            raise
        except Exception as exc:  # a surprise from a library must not stop deliveries
            log.debug("%s: unexpected error", self.name, exc_info=True)
            raise DeliveryError(f"{type(exc).__name__}: {exc}", kind=type(exc).__name__) from None

    def _ack(self, seq: int) -> None:
        try:
            self.outbox.ack(seq)
        except SinkError as exc:  # the entry may come again after a restart
            self._log_once("ack", logging.ERROR, "%s: %s", self.name, exc)

    def _delay(self, failures: int) -> float:
        return float(min(self.retry_max_s, self.retry_min_s * 2.0 ** min(failures - 1, 30)))

    def _failed(self, exc: DeliveryError, alert: Alert, failures: int) -> None:
        self.counts["attempts_failed"] += 1
        self.counts[f"failed_{exc.kind}"] += 1
        self._log_once(
            exc.kind,
            logging.WARNING,
            "%s: alert %s not delivered (%s); %d pending, retrying in %.1f s",
            self.name,
            alert.alert_id,
            exc,
            len(self.outbox),
            self._delay(failures),
        )
