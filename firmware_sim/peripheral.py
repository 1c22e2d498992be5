"""The simulated band as a BLE GATT peripheral on a BlueZ adapter (dbus-fast, one event loop).

:class:`BandPeripheral` exports the band's GATT application (the service of
``docs/band-protocol.md`` §1: data, status and control characteristics) and an LE
advertisement (local name ``CalfBand-<band id>``, the service UUID) under
``/com/crampwatch/band_<id>`` on the system bus, registers both with
``org.bluez.GattManager1`` / ``org.bluez.LEAdvertisingManager1`` of the chosen
adapter, and paces :class:`~firmware_sim.band.BandFirmware` in real time × ``speed``.

Notifications
-------------
Both notifying characteristics expose ``NotifyAcquired``, so BlueZ (and bluezoo)
subscribe with ``AcquireNotify``: the band hands over one end of a
``SOCK_SEQPACKET`` socket pair and every notification is one ``send`` on its end,
no D-Bus round trip.  (With ``StartNotify`` bluezoo would call back our ``Confirm``
method for every value; that halves the rate.)  The other end closing (the
central unsubscribed or the link dropped) ends the subscription.

Pacing and buffering
--------------------
Packet *n* is due at ``t0 + n · period / speed`` (absolute deadlines), where the
period is 50 ms of the band's crystal (:attr:`~firmware_sim.band.BandFirmware.period_s`:
shorter for a crystal that runs fast).
Each period the firmware produces one packet into its 40-packet (2 s) ring; while
a central is subscribed and the link is not stalled the ring is drained into the
socket.  With nobody subscribed the ring keeps the newest 2 s and counts the rest
as dropped (status ``dropped_packets``), exactly as §3.6 describes for a full
radio queue; a new subscriber first receives that backlog.

Link drops
----------
bluezoo has no link layer to break.  The band drops a link by calling
``org.bluez.Device1.Disconnect`` on the *central's* view of the band
(``/org/bluez/<central adapter>/dev_<band address>``): bluezoo then marks both
sides disconnected and ``bleak`` reports the disconnect.  ``Disconnect`` on the
band adapter's own view of the central only flips that view.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from dbus_fast import BusType, DBusError, Message, MessageType, PropertyAccess, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusSignature
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property

from firmware_sim.band import BandFirmware
from sensor_gateway.errors import (
    LinkError,
    MalformedPacketError,
    PacketTooShortError,
    ProtocolError,
    SimulationError,
)
from sensor_gateway.protocol import (
    CONTROL_CHAR_UUID,
    DATA_CHAR_UUID,
    MAX_DATA_PACKET_SIZE,
    PACKET_SECONDS,
    SERVICE_UUID,
    STATUS_CHAR_UUID,
    ControlCommand,
    decode_control,
)

__all__ = ["ATT_MTU", "BandPeripheral", "LinkCounters", "PeripheralConfig", "local_name"]

log = logging.getLogger(__name__)

#: ATT_MTU the band asks for (docs/band-protocol.md §1.1).
ATT_MTU = 247
#: Smallest ATT_MTU that carries a full data packet.
MIN_STREAM_MTU = MAX_DATA_PACKET_SIZE + 3
#: Wall seconds between advertisement refreshes (see :meth:`BandPeripheral._advertise`).
ADVERT_REFRESH_S = 0.5
#: Band seconds between periodic status notifications.
STATUS_PERIOD_S = 10.0

_BLUEZ = "org.bluez"
_PROPS = "org.freedesktop.DBus.Properties"
_DEVICE = "org.bluez.Device1"

DBusDict = Annotated[dict[str, Variant], DBusSignature("a{sv}")]
DBusBytes = Annotated[bytes, DBusSignature("ay")]
DBusStr = Annotated[str, DBusSignature("s")]
DBusBool = Annotated[bool, DBusSignature("b")]
DBusUInt16 = Annotated[int, DBusSignature("q")]
DBusPath = Annotated[str, DBusSignature("o")]
DBusStrList = Annotated[list[str], DBusSignature("as")]
FdAndMtu = Annotated[tuple[int, int], DBusSignature("hq")]
#: Return annotation of a method without out-arguments (a bare ``None`` confuses dbus-fast
#: under ``from __future__ import annotations``).
NoReply = Annotated[None, DBusSignature("")]


def local_name(band_id: str) -> str:
    """Advertised Complete Local Name of band ``band_id``: ``CalfBand-<band_id>``."""
    return f"CalfBand-{band_id}"


@dataclass(frozen=True)
class PeripheralConfig:
    """Where and how fast the band runs.

    Attributes
    ----------
    adapter
        BlueZ adapter hosting the band (``hci1``).
    speed
        Band seconds per wall-clock second (20 → 400 notifications/s).
    bus_address
        D-Bus address; ``None``: the system bus (``$DBUS_SYSTEM_BUS_ADDRESS``).
    max_late_s
        If the loop falls further behind than this (wall seconds), the band skips
        ahead instead of bursting; skipped periods are counted, not produced.
    """

    adapter: str = "hci1"
    speed: float = 1.0
    bus_address: str | None = None
    max_late_s: float = 1.0

    def __post_init__(self) -> None:
        if not self.speed > 0:
            raise SimulationError(f"speed must be positive, got {self.speed}")
        if not self.adapter.startswith("hci"):
            raise SimulationError(f"adapter {self.adapter!r} is not an hciN name")


@dataclass
class LinkCounters:
    """What the link did (the firmware counts packets in ``BandFirmware.counters``).

    Attributes
    ----------
    notified
        Data notifications written to a subscriber's socket.
    status_notified
        Status notifications written.
    subscriptions, connects, disconnects, forced_disconnects
        Link events (``forced_disconnects``: by the fault injector or a reboot).
    control_writes, control_rejected
        Control writes accepted / answered with an error.
    skipped_periods
        50 ms periods skipped because the event loop fell too far behind.
    late_periods
        Periods produced after their deadline (the loop was busy).
    """

    notified: int = 0
    status_notified: int = 0
    subscriptions: int = 0
    connects: int = 0
    disconnects: int = 0
    forced_disconnects: int = 0
    control_writes: int = 0
    control_rejected: int = 0
    skipped_periods: int = 0
    late_periods: int = 0


class _Notifier:
    """One AcquireNotify subscription: our end of a SOCK_SEQPACKET pair."""

    def __init__(self, mtu: int) -> None:
        self.local, self.remote = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.local.setblocking(False)
        self.mtu = mtu
        self.closed = False

    def send(self, data: bytes) -> bool:
        """Send one notification; False if the socket is full (try later)."""
        try:
            self.local.send(data)
        except BlockingIOError:
            return False
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.local.close()
            self.remote.close()


class _Service(ServiceInterface):
    def __init__(self, uuid: str) -> None:
        super().__init__("org.bluez.GattService1")
        self._uuid = uuid

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> DBusStr:  # noqa: N802
        return self._uuid

    @dbus_property(access=PropertyAccess.READ)
    def Primary(self) -> DBusBool:  # noqa: N802
        return True

    @dbus_property(access=PropertyAccess.READ)
    def Includes(self) -> Annotated[list[str], DBusSignature("ao")]:  # noqa: N802
        return []


class _Characteristic(ServiceInterface):
    """A GattCharacteristic1 whose behaviour is delegated to the :class:`BandPeripheral`."""

    def __init__(
        self, owner: BandPeripheral, role: str, uuid: str, service: str, flags: list[str]
    ) -> None:
        super().__init__("org.bluez.GattCharacteristic1")
        self._owner = owner
        self.role = role
        self._uuid = uuid
        self._service = service
        self._flags = flags
        self.notifier: _Notifier | None = None
        self.notify_acquired = False

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> DBusStr:  # noqa: N802
        return self._uuid

    @dbus_property(access=PropertyAccess.READ)
    def Service(self) -> DBusPath:  # noqa: N802
        return self._service

    @dbus_property(access=PropertyAccess.READ)
    def Flags(self) -> DBusStrList:  # noqa: N802
        return self._flags

    @dbus_property(access=PropertyAccess.READ, disabled=False)
    def MTU(self) -> DBusUInt16:  # noqa: N802
        return ATT_MTU

    @dbus_property(access=PropertyAccess.READ)
    def NotifyAcquired(self) -> DBusBool:  # noqa: N802
        return self.notify_acquired

    @dbus_property(access=PropertyAccess.READ)
    def Notifying(self) -> DBusBool:  # noqa: N802
        return self.notifier is not None

    @dbus_method()
    def ReadValue(self, options: DBusDict) -> DBusBytes:  # noqa: N802
        return self._owner.on_read(self.role, options)

    @dbus_method()
    def WriteValue(self, value: DBusBytes, options: DBusDict) -> NoReply:  # noqa: N802
        self._owner.on_write(self.role, bytes(value), options)

    @dbus_method()
    def AcquireNotify(self, options: DBusDict) -> FdAndMtu:  # noqa: N802
        if "notify" not in self._flags:
            raise DBusError("org.bluez.Error.NotSupported", "characteristic does not notify")
        if self.notifier is not None:
            raise DBusError("org.bluez.Error.NotPermitted", "notifications already acquired")
        mtu = ATT_MTU
        if "mtu" in options:
            mtu = int(options["mtu"].value)
        n = _Notifier(mtu)
        self.notifier = n
        self.notify_acquired = True
        self._owner.on_subscribed(self, n)
        return n.remote.fileno(), mtu

    @dbus_method()
    def StartNotify(self) -> NoReply:  # noqa: N802
        raise DBusError("org.bluez.Error.NotSupported", "use AcquireNotify")

    @dbus_method()
    def StopNotify(self) -> NoReply:  # noqa: N802
        self._owner.on_unsubscribed(self)

    @dbus_method()
    def Confirm(self) -> NoReply:  # noqa: N802
        return None


class _Advertisement(ServiceInterface):
    def __init__(self, name: str) -> None:
        super().__init__("org.bluez.LEAdvertisement1")
        self._name = name
        self.released = False
        self.payload = b"\x00\x00\x00"

    def refresh(self, battery_pct: int, counter: int) -> None:
        """Change the service data so that scanners see a fresh advertisement."""
        self.payload = bytes((battery_pct & 0xFF, counter & 0xFF, (counter >> 8) & 0xFF))
        self.emit_properties_changed({"ServiceData": self._service_data()})

    def _service_data(self) -> dict[str, Variant]:
        return {SERVICE_UUID: Variant("ay", self.payload)}

    @dbus_property(access=PropertyAccess.READ)
    def ServiceData(self) -> DBusDict:  # noqa: N802
        # Not ManufacturerData: bluezoo 1.0.2 types it a{sv} where BlueZ has a{qv}, and
        # a correct a{qv} value kills bluezoo's scan task.
        return self._service_data()

    @dbus_method()
    def Release(self) -> NoReply:  # noqa: N802
        self.released = True
        log.info("advertisement %s released by BlueZ", self._name)

    @dbus_property(access=PropertyAccess.READ)
    def Type(self) -> DBusStr:  # noqa: N802
        return "peripheral"

    @dbus_property(access=PropertyAccess.READ)
    def ServiceUUIDs(self) -> DBusStrList:  # noqa: N802
        return [SERVICE_UUID]

    @dbus_property(access=PropertyAccess.READ)
    def LocalName(self) -> DBusStr:  # noqa: N802
        return self._name

    @dbus_property(access=PropertyAccess.READ)
    def Discoverable(self) -> DBusBool:  # noqa: N802
        # Set on the advertisement, not on the adapter: the adapter's Discoverable
        # switches itself off after DiscoverableTimeout (180 s in bluezoo).
        return True

    @dbus_property(access=PropertyAccess.READ)
    def Includes(self) -> DBusStrList:  # noqa: N802
        return ["tx-power"]


def _att_error(code: int, text: str) -> DBusError:
    """A D-Bus error BlueZ turns into ATT error ``code`` for the central."""
    if code == 0x0D:
        return DBusError("org.bluez.Error.InvalidValueLength", text)
    return DBusError("org.bluez.Error.Failed", f"0x{code:02x}: {text}")


class BandPeripheral:
    """One simulated band on one BlueZ adapter.

    Parameters
    ----------
    firmware
        The band model to pace and expose.
    config
        Adapter, speed, bus.
    on_event
        Optional callback ``(name, details)`` for log-worthy events (``connected``,
        ``subscribed``, ``disconnect``, ``stall``, ``reboot``, ``control``...).

    Notes
    -----
    Use as ``async with BandPeripheral(fw, cfg) as band: await band.run()`` or call
    :meth:`start` / :meth:`stop` yourself.  :meth:`run` returns when the firmware's
    source is exhausted (after flushing) or :meth:`stop` is called.
    """

    def __init__(
        self,
        firmware: BandFirmware,
        config: PeripheralConfig,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.fw = firmware
        self.config = config
        self.counters = LinkCounters()
        self._on_event = on_event
        bid = "".join(c if c.isalnum() else "_" for c in firmware.config.band_id)
        self.root = f"/com/crampwatch/band_{bid}"
        self.adapter_path = f"/org/bluez/{config.adapter}"
        self.name = local_name(firmware.config.band_id)
        svc = f"{self.root}/service0"
        self._service = _Service(SERVICE_UUID)
        self._data = _Characteristic(self, "data", DATA_CHAR_UUID, svc, ["notify"])
        self._status = _Characteristic(self, "status", STATUS_CHAR_UUID, svc, ["read", "notify"])
        self._control = _Characteristic(
            self, "control", CONTROL_CHAR_UUID, svc, ["write", "write-without-response"]
        )
        self._chars = {
            f"{svc}/char0": self._data,
            f"{svc}/char1": self._status,
            f"{svc}/char2": self._control,
        }
        self._adv = _Advertisement(self.name)
        self._adv_path = f"{self.root}/advertisement0"
        self._bus: MessageBus | None = None
        self._registered = False
        self._centrals: set[str] = set()  # our adapter's Device1 paths that are connected
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self.address = ""
        self.finished = False

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> BandPeripheral:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Connect to the bus, export objects, register application and advertisement.

        Raises
        ------
        LinkError
            The adapter does not exist or BlueZ refused a registration.
        """
        bus_type = BusType.SYSTEM
        bus = MessageBus(
            bus_address=self.config.bus_address, bus_type=bus_type, negotiate_unix_fd=True
        )
        try:
            self._bus = await bus.connect()
        except (OSError, EOFError) as exc:
            where = self.config.bus_address or "the system bus ($DBUS_SYSTEM_BUS_ADDRESS)"
            raise LinkError(f"cannot reach D-Bus at {where}: {exc}") from exc
        try:
            self.address = str(
                await self._get_prop(self.adapter_path, "org.bluez.Adapter1", "Address")
            )
        except DBusError as exc:
            raise LinkError(f"{self.config.adapter}: no such BlueZ adapter ({exc.text})") from exc
        self._bus.add_message_handler(self._on_signal)
        await self._add_match(
            f"type='signal',sender='{_BLUEZ}',interface='{_PROPS}',"
            f"member='PropertiesChanged',path_namespace='{self.adapter_path}'"
        )
        self._bus.export(self.root, _Root())
        self._bus.export(f"{self.root}/service0", self._service)
        for path, ch in self._chars.items():
            self._bus.export(path, ch)
        self._bus.export(self._adv_path, self._adv)
        await self._call(
            self.adapter_path,
            "org.bluez.GattManager1",
            "RegisterApplication",
            "oa{sv}",
            [self.root, {}],
        )
        await self._call(
            self.adapter_path,
            "org.bluez.LEAdvertisingManager1",
            "RegisterAdvertisement",
            "oa{sv}",
            [self._adv_path, {}],
        )
        self._registered = True
        self._spawn(self._advertise())
        self._event(
            "advertising", adapter=self.config.adapter, local_name=self.name, address=self.address
        )

    async def stop(self) -> None:
        """Stop pacing, unregister advertisement and application, close subscriptions."""
        self._stop.set()
        self._wake.set()
        for ch in (self._data, self._status):
            self._close_notifier(ch, emit=False)
        bus = self._bus
        if bus is None:
            return
        if self._registered:
            self._registered = False
            with contextlib.suppress(DBusError, LinkError, EOFError, OSError):
                await self._call(
                    self.adapter_path,
                    "org.bluez.LEAdvertisingManager1",
                    "UnregisterAdvertisement",
                    "o",
                    [self._adv_path],
                )
            with contextlib.suppress(DBusError, LinkError, EOFError, OSError):
                await self._call(
                    self.adapter_path,
                    "org.bluez.GattManager1",
                    "UnregisterApplication",
                    "o",
                    [self.root],
                )
        for t in list(self._tasks):
            t.cancel()
        bus.disconnect()
        self._bus = None
        self._event("stopped", **self.summary())

    async def _advertise(self) -> None:
        """Keep the advertisement "alive" for scanners.

        bluezoo reports an advertiser to a scanning adapter once (InterfacesAdded) and
        afterwards only when a property changes; bleak's ``find_device_by_*`` and any
        scanner started after that first report would never see the band.  A real band
        re-advertises every 100 ms; here the advertised service data (for the band's
        service UUID: battery %, u16 counter) changes every :data:`ADVERT_REFRESH_S` s, which makes
        bluezoo send a PropertiesChanged for the device on each scan round.
        """
        counter = 0
        while True:
            counter += 1
            self._adv.refresh(round(self.fw.battery_pct), counter)
            await asyncio.sleep(ADVERT_REFRESH_S)

    def request_stop(self) -> None:
        """Ask :meth:`run` to return (safe from a signal handler)."""
        self._stop.set()
        self._wake.set()

    # ------------------------------------------------------------------ D-Bus helpers

    async def _call(self, path: str, iface: str, member: str, sig: str, body: list[Any]) -> Any:
        assert self._bus is not None
        reply = await self._bus.call(
            Message(
                destination=_BLUEZ,
                path=path,
                interface=iface,
                member=member,
                signature=sig,
                body=body,
            )
        )
        if reply is None:
            raise LinkError(f"{member}: no reply")
        if reply.message_type == MessageType.ERROR:
            text = reply.body[0] if reply.body else ""
            raise DBusError(reply.error_name or "org.bluez.Error.Failed", f"{member}: {text}")
        return reply.body

    async def _get_prop(self, path: str, iface: str, name: str) -> Any:
        body = await self._call(path, _PROPS, "Get", "ss", [iface, name])
        return body[0].value

    async def _add_match(self, rule: str) -> None:
        assert self._bus is not None
        await self._bus.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="AddMatch",
                signature="s",
                body=[rule],
            )
        )

    def _on_signal(self, msg: Message) -> None:
        if (
            msg.message_type != MessageType.SIGNAL
            or msg.member != "PropertiesChanged"
            or not msg.path
            or not msg.path.startswith(self.adapter_path + "/dev_")
            or msg.body[0] != _DEVICE
        ):
            return
        changed: dict[str, Variant] = msg.body[1]
        if "Connected" not in changed:
            return
        path = msg.path
        if changed["Connected"].value:
            if path not in self._centrals:
                self._centrals.add(path)
                self.counters.connects += 1
                self._event("connected", central=path)
        elif path in self._centrals:
            self._centrals.discard(path)
            self.counters.disconnects += 1
            self._event("disconnected", central=path)
            if not self._centrals:
                for ch in (self._data, self._status):
                    self._close_notifier(ch)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _event(self, name: str, **details: Any) -> None:
        log.info("%s: %s %s", self.name, name, " ".join(f"{k}={v}" for k, v in details.items()))
        if self._on_event is not None:
            self._on_event(name, details)

    # ------------------------------------------------------------------ GATT callbacks

    def on_subscribed(self, ch: _Characteristic, n: _Notifier) -> None:
        """AcquireNotify: watch our end for hang-up; close the peer's copy once it is sent."""
        self.counters.subscriptions += 1
        self._event("subscribed", characteristic=ch.role, mtu=n.mtu)
        loop = asyncio.get_running_loop()
        loop.add_reader(n.local.fileno(), self._on_notifier_readable, ch, n)
        self._spawn(self._release_remote(ch, n))
        self._wake.set()

    async def _release_remote(self, ch: _Characteristic, n: _Notifier) -> None:
        # The AcquireNotify reply (carrying n.remote) is queued before this Ping; once
        # the Ping is answered the fd has been passed and our copy can go, so that the
        # subscriber closing its copy shows up as a hang-up on n.local.
        assert self._bus is not None
        await self._bus.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus.Peer",
                member="Ping",
            )
        )
        n.remote.close()
        ch.emit_properties_changed({"NotifyAcquired": True, "Notifying": True})

    def _on_notifier_readable(self, ch: _Characteristic, n: _Notifier) -> None:
        try:
            data = n.local.recv(16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data and ch.notifier is n:  # hang-up: the subscriber went away
            self._event("unsubscribed", characteristic=ch.role)
            self._close_notifier(ch)

    def on_unsubscribed(self, ch: _Characteristic) -> None:
        """StopNotify."""
        if ch.notifier is not None:
            self._event("unsubscribed", characteristic=ch.role)
        self._close_notifier(ch)

    def _close_notifier(self, ch: _Characteristic, *, emit: bool = True) -> None:
        n = ch.notifier
        if n is None:
            return
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(n.local.fileno())
        n.close()
        ch.notifier = None
        ch.notify_acquired = False
        if emit and self._bus is not None and self._bus.connected:
            ch.emit_properties_changed({"NotifyAcquired": False, "Notifying": False})

    def on_read(self, role: str, options: dict[str, Variant]) -> bytes:
        """ReadValue: only the status characteristic is readable."""
        if role != "status":
            raise DBusError("org.bluez.Error.NotPermitted", f"{role} is not readable")
        return self.fw.status_bytes()

    def on_write(self, role: str, value: bytes, options: dict[str, Variant]) -> None:
        """WriteValue on the control characteristic (docs/band-protocol.md §5)."""
        if role != "control":
            raise DBusError("org.bluez.Error.NotPermitted", f"{role} is not writable")
        command = options.get("type")
        silent = command is not None and command.value == "command"  # write without response
        try:
            self._control_write(value, options)
        except DBusError as exc:
            self.counters.control_rejected += 1
            self._event("control-rejected", value=value.hex(), error=exc.text)
            if not silent:
                raise
            return
        self.counters.control_writes += 1

    def _control_write(self, value: bytes, options: dict[str, Variant]) -> None:
        try:
            msg = decode_control(value)
        except PacketTooShortError as exc:
            raise _att_error(0x0D, str(exc)) from None
        except MalformedPacketError as exc:
            if value and value[0] in {int(c) for c in ControlCommand}:
                code = 0x81 if value[0] == ControlCommand.SET_EMG_RATE and len(value) == 3 else 0x0D
                raise _att_error(code, str(exc)) from None
            raise _att_error(0x80, str(exc)) from None
        except ProtocolError as exc:
            raise _att_error(0x80, str(exc)) from None
        self._event("control", command=msg.command.name)
        if msg.command is ControlCommand.START_STREAM:
            mtu = int(options["mtu"].value) if "mtu" in options else ATT_MTU
            if mtu < MIN_STREAM_MTU:
                raise _att_error(0x83, f"ATT_MTU {mtu} < {MIN_STREAM_MTU}")
            was = self.fw.streaming
            self.fw.start_stream()
            if not was:
                self._notify_status()
        elif msg.command is ControlCommand.STOP_STREAM:
            was = self.fw.streaming
            self.fw.stop_stream()
            if was:
                self._notify_status()
        elif msg.command is ControlCommand.TIME_SYNC:
            self._notify_status(sync_host_ms=msg.unix_ms)
        elif msg.command is ControlCommand.SET_EMG_RATE:
            assert msg.emg_fs is not None
            if self.fw.streaming:
                raise _att_error(0x82, "SET_EMG_RATE while streaming")
            try:
                self.fw.set_emg_rate(msg.emg_fs)
            except SimulationError as exc:
                raise _att_error(0x81, str(exc)) from None

    def _notify_status(self, *, sync_host_ms: int | None = None) -> None:
        data = self.fw.status_bytes(sync_host_ms=sync_host_ms)
        n = self._status.notifier
        if n is not None and n.send(data):
            self.counters.status_notified += 1

    # ------------------------------------------------------------------ link faults

    async def drop_link(self, reason: str) -> None:
        """Disconnect every connected central (see the module notes on how)."""
        if not self._centrals or self._bus is None:
            return
        self.counters.forced_disconnects += 1
        self._event("disconnect", reason=reason)
        band_dev = "dev_" + self.address.replace(":", "_")
        for path in list(self._centrals):
            try:
                central_addr = await self._get_prop(path, _DEVICE, "Address")
                adapter = await self._adapter_with_address(str(central_addr))
                target = f"{adapter}/{band_dev}" if adapter else path
                await self._call(target, _DEVICE, "Disconnect", "", [])
            except (DBusError, LinkError) as exc:
                log.warning("%s: could not drop link to %s: %s", self.name, path, exc)
        for ch in (self._data, self._status):
            self._close_notifier(ch)

    async def _adapter_with_address(self, address: str) -> str | None:
        body = await self._call(
            "/", "org.freedesktop.DBus.ObjectManager", "GetManagedObjects", "", []
        )
        objects: dict[str, dict[str, dict[str, Variant]]] = body[0]
        for path, ifaces in objects.items():
            a = ifaces.get("org.bluez.Adapter1")
            if a is not None and str(a["Address"].value).upper() == address.upper():
                return path
        return None

    # ------------------------------------------------------------------ pacing

    async def run(self) -> None:
        """Pace the firmware until its source ends (then flush) or :meth:`stop`.

        Packet periods are scheduled on absolute deadlines ``t0 + n·period_s/speed``.
        """
        loop = asyncio.get_running_loop()
        period = self.fw.period_s / self.config.speed
        t0 = loop.time()
        n = 0
        next_status = STATUS_PERIOD_S
        stalled = False
        while not self._stop.is_set():
            n += 1
            deadline = t0 + n * period
            delay = deadline - loop.time()
            if delay > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=delay)
                if self._stop.is_set():
                    break
                if loop.time() < deadline:  # woken early (subscription): flush, then wait
                    self._flush()
                    n -= 1
                    continue
            elif -delay > self.config.max_late_s:
                skip = int(-delay / period)
                self.counters.skipped_periods += skip
                t0 += skip * period
            else:
                self.counters.late_periods += 1
                await asyncio.sleep(0)
            before = self.fw.life_s
            self.fw.step()
            if self.fw.reboot_due():
                self._event("reboot", at_s=round(self.fw.life_s, 3))
                await self.drop_link("reboot")
                dead_from = self.fw.life_s
                self.fw.reboot()
                n += round((self.fw.life_s - dead_from) / PACKET_SECONDS)  # dead time passes
                continue
            if self.fw.link_drop_due(before):
                await self.drop_link("fault: disconnect_every")
            now_stalled = self.fw.link_stalled()
            if now_stalled != stalled:
                stalled = now_stalled
                self._event("stall" if stalled else "stall-end", queued=self.fw.queued)
            if not stalled:
                self._flush()
            if self.fw.life_s >= next_status:
                next_status += STATUS_PERIOD_S
                self._notify_status()
            if self.fw.exhausted and self.fw.queued == 0:
                self.finished = True
                self._event("source-exhausted", **self.summary())
                break
            if self.fw.exhausted and self._data.notifier is None:
                self.finished = True
                break

    def _flush(self) -> None:
        n = self._data.notifier
        if n is None or self.fw.link_stalled():
            return
        pending = self.fw.drain()
        for i, p in enumerate(pending):
            try:
                ok = n.send(p.data)
            except OSError as exc:
                if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ECONNREFUSED):
                    raise
                ok = False
                self._close_notifier(self._data)
            if not ok:
                self.fw.unsend(pending[i:])
                return
            self.counters.notified += 1

    def summary(self) -> dict[str, Any]:
        """Counters of firmware and link, for logs and tests."""
        c = self.fw.counters
        return {
            "produced": c.produced,
            "notified": self.counters.notified,
            "lost_injected": c.lost,
            "overflowed": c.overflowed,
            "queued": self.fw.queued,
            "reboots": c.reboots,
            "connects": self.counters.connects,
            "disconnects": self.counters.disconnects,
            "forced_disconnects": self.counters.forced_disconnects,
            "control_writes": self.counters.control_writes,
            "control_rejected": self.counters.control_rejected,
            "skipped_periods": self.counters.skipped_periods,
        }


class _Root(ServiceInterface):
    """Placeholder interface so the application root path exists (ObjectManager lives here)."""

    def __init__(self) -> None:
        super().__init__("com.crampwatch.Band1")
