"""The BLE edge of the gateway: find bands, keep one link per band alive, hand raw bytes inward.

Only this module talks to :mod:`bleak`.  Everything it receives goes, undecoded,
into a bounded :class:`asyncio.Queue` per band; decoding and processing run in the
gateway's processing task, so bleak's notification callback never blocks and
never raises (a full queue is counted as ``queue_drops``, see :class:`LinkStats`).

Link life cycle (:meth:`BandLink.run`)::

    connect (BleakClient(..., disconnected_callback, bluez={"adapter": ...}))
      → start_notify(data) → read + start_notify(status) → write time-sync control
      → stream; watchdog: no notification for ``watchdog_s`` → "stall" → disconnect
      → on any loss: LINK_LOST marker into the queue, wait backoff, reconnect

Backoff is exponential (``backoff_initial_s`` x ``backoff_factor`` ** n) capped at
``backoff_max_s`` and reset after a session that streamed, so a band that comes
back into range streams again within ``backoff_max_s`` + connect time.

Scanning (:func:`discover_bands`) uses ``BleakScanner`` with the band service UUID
as filter (BlueZ sets a discovery filter for it), or matches pinned addresses /
advertised names.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sensor_gateway.errors import LinkError

__all__ = [
    "LINK_LOST",
    "BandLink",
    "BandProtocol",
    "LinkSettings",
    "LinkStats",
    "Notification",
    "discover_bands",
]

log = logging.getLogger(__name__)

#: Queue item kinds.
DATA, STATUS, LINK_UP, LINK_LOST = "data", "status", "link_up", "link_lost"


@dataclass(frozen=True)
class Notification:
    """One item of a band's queue: raw bytes from a characteristic, or a link-state marker."""

    kind: str  # DATA, STATUS, LINK_UP or LINK_LOST
    host_time: float
    payload: bytes = b""
    reason: str = ""


@dataclass(frozen=True)
class BandProtocol:
    """UUIDs and the control-message encoder the link needs (built from ``protocol``)."""

    service_uuid: str
    data_uuid: str
    status_uuid: str | None = None
    control_uuid: str | None = None
    #: ``host_time -> bytes`` of the time-sync control write, or ``None`` for none.
    time_sync: Callable[[float], bytes] | None = None


@dataclass(frozen=True)
class LinkSettings:
    """Timing of one link (taken from ``GatewayConfig``)."""

    adapter: str = "hci0"
    connect_timeout_s: float = 10.0
    watchdog_s: float = 3.0
    backoff_initial_s: float = 0.25
    backoff_max_s: float = 2.0
    backoff_factor: float = 2.0


@dataclass
class LinkStats:
    """Counters of one link (monotonic)."""

    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    stalls: int = 0
    notifications: int = 0
    queue_drops: int = 0
    last_connect_s: float | None = None  # seconds from start of attempt to first notification
    reconnect_times_s: list[float] = field(default_factory=list)  # link lost → streaming again


class BandLink:
    """Keeps one band connected and streaming into ``queue``.

    Parameters
    ----------
    band_id
        Name used in logs and records.
    target
        A ``bleak.backends.device.BLEDevice`` from a scan or an address string.
    protocol
        UUIDs and time-sync encoder.
    settings
        Adapter, watchdog, backoff.
    queue
        Bounded queue of :class:`Notification`; this class only ever ``put_nowait``.
    """

    def __init__(
        self,
        band_id: str,
        target: Any,
        protocol: BandProtocol,
        settings: LinkSettings,
        queue: asyncio.Queue[Notification],
    ) -> None:
        self.band_id = band_id
        self.target = target
        self.protocol = protocol
        self.settings = settings
        self.queue = queue
        self.stats = LinkStats()
        self.connected = False
        self._last_rx = 0.0
        self._lost_at: float | None = None
        self._client: Any = None
        self._force: asyncio.Event = asyncio.Event()

    # ------------------------------------------------------------------ callbacks (sync!)

    def _put(self, item: Notification) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.stats.queue_drops += 1

    def _on_data(self, _char: Any, data: bytearray) -> None:
        now = time.time()
        self._last_rx = time.monotonic()
        self.stats.notifications += 1
        if self._lost_at is not None:
            self.stats.reconnect_times_s.append(self._last_rx - self._lost_at)
            self._lost_at = None
        self._put(Notification(DATA, now, bytes(data)))

    def _on_status(self, _char: Any, data: bytearray) -> None:
        self._put(Notification(STATUS, time.time(), bytes(data)))

    # ------------------------------------------------------------------ control

    def force_disconnect(self) -> None:
        """Drop the current connection (tests, operator); the link reconnects by itself."""
        self._force.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, stream, reconnect with backoff until ``stop`` is set."""
        backoff = self.settings.backoff_initial_s
        while not stop.is_set():
            n0 = self.stats.notifications
            try:
                reason = await self._session(stop)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # bleak raises many backend-specific types
                self.stats.connect_failures += 1
                reason = f"{type(exc).__name__}: {exc}"
                log.info("%s: link failed: %s", self.band_id, reason)
            streamed = self.stats.notifications > n0
            if streamed:
                self.stats.disconnects += 1
            if self._lost_at is None and streamed:
                self._lost_at = time.monotonic()
            self.connected = False
            self._put(Notification(LINK_LOST, time.time(), reason=reason))
            if stop.is_set():
                break
            if streamed:
                backoff = self.settings.backoff_initial_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=backoff)
            backoff = min(backoff * self.settings.backoff_factor, self.settings.backoff_max_s)

    async def _session(self, stop: asyncio.Event) -> str:
        from bleak import BleakClient  # noqa: PLC0415  (keep imports of the edge local)

        gone = asyncio.Event()
        self._force.clear()
        client = BleakClient(
            self.target,
            disconnected_callback=lambda _c: gone.set(),
            timeout=self.settings.connect_timeout_s,
            bluez={"adapter": self.settings.adapter},
        )
        self._client = client
        await client.connect()
        try:
            self.connected = True
            self.stats.connects += 1
            self._last_rx = time.monotonic()
            p = self.protocol
            await client.start_notify(p.data_uuid, self._on_data)
            if p.status_uuid is not None:
                with contextlib.suppress(Exception):
                    self._on_status(None, await client.read_gatt_char(p.status_uuid))
                with contextlib.suppress(Exception):
                    await client.start_notify(p.status_uuid, self._on_status)
            if p.control_uuid is not None and p.time_sync is not None:
                try:
                    await client.write_gatt_char(
                        p.control_uuid, p.time_sync(time.time()), response=True
                    )
                except Exception as exc:
                    log.warning("%s: time-sync write failed: %s", self.band_id, exc)
            self._put(Notification(LINK_UP, time.time()))
            return await self._watch(stop, gone)
        finally:
            self.connected = False
            if client.is_connected:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.disconnect(), timeout=5.0)
            self._client = None

    async def _watch(self, stop: asyncio.Event, gone: asyncio.Event) -> str:
        w = self.settings.watchdog_s
        tick = min(0.25, w / 4)
        while True:
            if stop.is_set():
                return "stopping"
            if gone.is_set():
                return "disconnected"
            if self._force.is_set():
                return "forced"
            if time.monotonic() - self._last_rx > w:
                self.stats.stalls += 1
                log.warning("%s: no data for %.1f s: stall, reconnecting", self.band_id, w)
                return "stall"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gone.wait(), timeout=tick)


async def discover_bands(
    protocol: BandProtocol,
    *,
    adapter: str,
    pinned: Sequence[str] = (),
    max_bands: int = 0,
    timeout_s: float = 10.0,
) -> dict[str, Any]:
    """Scan for bands; return ``{band_id: BLEDevice}``.

    Parameters
    ----------
    protocol
        Its ``service_uuid`` is the scan filter when nothing is pinned.
    adapter
        BlueZ adapter (``hci0``).
    pinned
        Addresses or advertised names to look for; empty = every band advertising
        the service.  The band id is the pinned string, else the advertised name,
        else the address.
    max_bands
        Stop scanning once this many are found (0 = until ``timeout_s``; with
        pinned bands, until all of them are found).
    timeout_s
        Longest scan.

    Raises
    ------
    LinkError
        If the adapter cannot scan.
    """
    from bleak import BleakScanner  # noqa: PLC0415

    found: dict[str, Any] = {}
    want = {p.upper(): p for p in pinned}
    done = asyncio.Event()
    svc = protocol.service_uuid.lower()

    def on_adv(device: Any, adv: Any) -> None:
        name = adv.local_name or device.name or ""
        uuids = [u.lower() for u in (adv.service_uuids or [])]
        band_id: str | None = None
        if want:
            for key in (device.address.upper(), name.upper()):
                if key in want:
                    band_id = want[key]
        elif svc in uuids:
            band_id = name or device.address
        if band_id is None or band_id in found:
            return
        found[band_id] = device
        log.info("found band %s (%s)", band_id, device.address)
        if (want and len(found) == len(want)) or (max_bands and len(found) >= max_bands):
            done.set()

    try:
        async with BleakScanner(
            on_adv,
            service_uuids=None if want else [protocol.service_uuid],
            bluez={"adapter": adapter},
        ):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout=timeout_s)
    except Exception as exc:
        if isinstance(exc, asyncio.CancelledError):
            raise
        raise LinkError(f"{adapter}: scan failed: {exc}") from exc
    return found
