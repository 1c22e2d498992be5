"""The BLE edge of the gateway: find bands, keep one link per band alive, hand raw bytes inward.

Only this module talks to :mod:`bleak`.  Everything it receives goes, undecoded,
into a bounded :class:`asyncio.Queue` per band; decoding and processing run in the
gateway's processing task, so bleak's notification callback never blocks and
never raises (a full queue is counted as ``queue_drops``, see :class:`LinkStats`).

Link life cycle (:meth:`BandLink.run`), in the order docs/band-protocol.md §7 asks
for (learn the band before enabling data)::

    connect (BleakClient(..., disconnected_callback, bluez={"adapter": ...}))
      → read status → start_notify(status) → write TIME_SYNC, wait for its reply
      → start_notify(data) → START_STREAM if the status said "not streaming"
      → stream; watchdog: no notification for ``watchdog_s`` → "stall" → disconnect
      → on any loss: LINK_LOST marker into the queue, wait backoff, reconnect

The time-sync reply reaches the queue before the first data packet of the
session, so the processing side can anchor the band's tick (Cristian's
algorithm, protocol §5.1) before it sees the data, e.g. to size the gap after a
band reboot.

Receive times come from the link's ``clock`` (POSIX seconds; a clock running
*N* x faster for bands simulated at ``--speed N``); watchdog, backoff and the
reconnect figure use the real monotonic clock.

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

from sensor_gateway.errors import LinkError, ProtocolError
from sensor_gateway.protocol import (
    CONTROL_CHAR_UUID,
    DATA_CHAR_UUID,
    SERVICE_UUID,
    STATUS_CHAR_UUID,
    STATUS_SIZE,
    ControlCommand,
    StatusFlags,
    decode_status,
    encode_control,
)

__all__ = [
    "DATA",
    "LINK_LOST",
    "LINK_UP",
    "STATUS",
    "BandLink",
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
class LinkSettings:
    """Timing of one link (taken from ``GatewayConfig``).

    Attributes
    ----------
    adapter
        BlueZ adapter of the gateway.
    connect_timeout_s
        bleak's connect timeout.
    watchdog_s
        No notification for this long while connected = stall → reconnect.
    backoff_initial_s, backoff_max_s, backoff_factor
        Reconnect backoff: exponential, capped.
    sync_timeout_s
        How long a session waits for the band's time-sync reply before streaming anyway.
    """

    adapter: str = "hci0"
    connect_timeout_s: float = 10.0
    watchdog_s: float = 3.0
    backoff_initial_s: float = 0.25
    backoff_max_s: float = 2.0
    backoff_factor: float = 2.0
    sync_timeout_s: float = 1.0


@dataclass
class LinkStats:
    """Counters of one link (monotonic).

    Attributes
    ----------
    connects, connect_failures, disconnects, stalls
        Link events (``disconnects``: sessions that streamed and then ended).
    notifications
        Data notifications received.
    queue_drops
        Notifications dropped because the band's queue was full.
    time_syncs
        Time-sync replies seen in time (the session waited for them).
    stream_starts
        ``START_STREAM`` writes (the band was idle when the session began).
    reconnect_times_s
        Real seconds from losing a streaming link to the next data notification.
    """

    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    stalls: int = 0
    notifications: int = 0
    queue_drops: int = 0
    time_syncs: int = 0
    stream_starts: int = 0
    reconnect_times_s: list[float] = field(default_factory=list)


class BandLink:
    """Keeps one band connected and streaming into ``queue``.

    Parameters
    ----------
    band_id
        Name used in logs and records.
    target
        A ``bleak.backends.device.BLEDevice`` from a scan or an address string.
    settings
        Adapter, watchdog, backoff.
    queue
        Bounded queue of :class:`Notification`; this class only ever ``put_nowait``.
    clock
        Host time (POSIX seconds) stamped on every queue item and sent in ``TIME_SYNC``.
    """

    def __init__(
        self,
        band_id: str,
        target: Any,
        settings: LinkSettings,
        queue: asyncio.Queue[Notification],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.band_id = band_id
        self.target = target
        self.settings = settings
        self.queue = queue
        self.clock = clock
        self.stats = LinkStats()
        self.connected = False
        self._last_rx = 0.0
        self._lost_at: float | None = None
        self._synced = asyncio.Event()

    # ------------------------------------------------------------------ callbacks (sync!)

    def _put(self, item: Notification) -> None:
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.stats.queue_drops += 1

    def _on_data(self, _char: Any, data: bytearray) -> None:
        now = self.clock()
        self._last_rx = time.monotonic()
        self.stats.notifications += 1
        if self._lost_at is not None:
            self.stats.reconnect_times_s.append(self._last_rx - self._lost_at)
            self._lost_at = None
        self._put(Notification(DATA, now, bytes(data)))

    def _on_status(self, _char: Any, data: bytearray) -> None:
        self._put(Notification(STATUS, self.clock(), bytes(data)))
        if len(data) == STATUS_SIZE and data[1] & StatusFlags.SYNC_REPLY:
            self._synced.set()

    # ------------------------------------------------------------------ control

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
                if self._lost_at is None:
                    self._lost_at = time.monotonic()
                backoff = self.settings.backoff_initial_s
            self.connected = False
            self._put(Notification(LINK_LOST, self.clock(), reason=reason))
            if stop.is_set():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=backoff)
            backoff = min(backoff * self.settings.backoff_factor, self.settings.backoff_max_s)

    async def _session(self, stop: asyncio.Event) -> str:
        from bleak import BleakClient  # noqa: PLC0415  (keep imports of the edge local)

        gone = asyncio.Event()
        client = BleakClient(
            self.target,
            disconnected_callback=lambda _c: gone.set(),
            timeout=self.settings.connect_timeout_s,
            bluez={"adapter": self.settings.adapter},
        )
        await client.connect()
        try:
            self.connected = True
            self.stats.connects += 1
            first = await client.read_gatt_char(STATUS_CHAR_UUID)
            self._on_status(None, first)
            try:
                idle = not decode_status(first).streaming
            except ProtocolError as exc:  # e.g. a band speaking another protocol version
                raise LinkError(f"{self.band_id}: status unreadable: {exc}") from exc
            await client.start_notify(STATUS_CHAR_UUID, self._on_status)
            await self._time_sync(client)
            self._last_rx = time.monotonic()
            await client.start_notify(DATA_CHAR_UUID, self._on_data)
            if idle:
                await client.write_gatt_char(
                    CONTROL_CHAR_UUID, encode_control(ControlCommand.START_STREAM), response=True
                )
                self.stats.stream_starts += 1
            self._put(Notification(LINK_UP, self.clock()))
            return await self._watch(stop, gone)
        finally:
            self.connected = False
            # Also after the band dropped the link: only disconnect() closes the client's
            # D-Bus connection (bleak), else every dropped link leaks a socket.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), timeout=5.0)

    async def _time_sync(self, client: Any) -> None:
        """Write ``TIME_SYNC`` with the host time and wait (bounded) for the band's reply."""
        self._synced.clear()
        request = encode_control(ControlCommand.TIME_SYNC, unix_ms=round(self.clock() * 1000))
        try:
            await client.write_gatt_char(CONTROL_CHAR_UUID, request, response=True)
        except Exception as exc:  # bleak raises backend-specific types; stream unsynced
            log.warning("%s: time-sync write failed: %s", self.band_id, exc)
            return
        try:
            await asyncio.wait_for(self._synced.wait(), timeout=self.settings.sync_timeout_s)
        except TimeoutError:
            log.warning("%s: no time-sync reply within %g s", self.band_id,
                        self.settings.sync_timeout_s)  # fmt: skip
            return
        self.stats.time_syncs += 1

    async def _watch(self, stop: asyncio.Event, gone: asyncio.Event) -> str:
        w = self.settings.watchdog_s
        tick = min(0.25, w / 4)
        while True:
            if stop.is_set():
                return "stopping"
            if gone.is_set():
                return "disconnected"
            if time.monotonic() - self._last_rx > w:
                self.stats.stalls += 1
                log.warning("%s: no data for %.1f s: stall, reconnecting", self.band_id, w)
                return "stall"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gone.wait(), timeout=tick)


async def discover_bands(
    *,
    adapter: str,
    pinned: Sequence[str] = (),
    max_bands: int = 0,
    timeout_s: float = 10.0,
) -> dict[str, Any]:
    """Scan for bands; return ``{band_id: BLEDevice}``.

    Parameters
    ----------
    adapter
        BlueZ adapter (``hci0``).
    pinned
        Addresses or advertised names to look for; empty = every band advertising
        the band service (:data:`~sensor_gateway.protocol.SERVICE_UUID`).  The band
        id is the pinned string, else the advertised name, else the address.
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

    def on_adv(device: Any, adv: Any) -> None:
        name = adv.local_name or device.name or ""
        uuids = [u.lower() for u in (adv.service_uuids or [])]
        band_id: str | None = None
        if want:
            for key in (device.address.upper(), name.upper()):
                if key in want:
                    band_id = want[key]
        elif SERVICE_UUID in uuids:
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
            service_uuids=None if want else [SERVICE_UUID],
            bluez={"adapter": adapter},
        ):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout=timeout_s)
    except Exception as exc:
        if isinstance(exc, asyncio.CancelledError):
            raise
        raise LinkError(f"{adapter}: scan failed: {exc}") from exc
    return found
