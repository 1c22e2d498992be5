"""The calf band's Bluetooth LE protocol, version 1: constants and a pure codec.

This module is the executable form of ``docs/band-protocol.md``; the document is
normative, this code follows it.  It does no I/O: the BLE client hands it the raw
value of a GATT notification or read, the simulator asks it for the bytes to send.

Three characteristics live in one custom service (:data:`SERVICE_UUID`):

* **data** (:data:`DATA_CHAR_UUID`, notify) -- one :class:`BandPacket` per 50 ms:
  a 10-byte header, up to 100 EMG samples (int16, 0.5 µV/LSB) and up to 5
  accelerometer samples (3 x int16, 1 mg/LSB).  :func:`encode_data_packet`,
  :func:`decode_data_packet`.
* **status** (:data:`STATUS_CHAR_UUID`, read + notify) -- a 32-byte
  :class:`BandStatus` (battery, lead-off, rates, firmware, uptime, current tick,
  packets dropped on the band, time-sync echo).  :func:`encode_status`,
  :func:`decode_status`.
* **control** (:data:`CONTROL_CHAR_UUID`, write / write with response) -- a
  :class:`ControlMessage`: start, stop, time sync, EMG rate.  :func:`encode_control`,
  :func:`decode_control`.

All multi-byte fields are little-endian, as on the band's Cortex-M MCU and as the
Bluetooth Core Specification uses for its own attribute values [1]_.

Error contract
--------------
The three decoders take bytes from the radio and raise only subclasses of
:class:`~sensor_gateway.errors.ProtocolError`
(:class:`~sensor_gateway.errors.PacketTooShortError`,
:class:`~sensor_gateway.errors.UnsupportedVersionError`,
:class:`~sensor_gateway.errors.MalformedPacketError`), never ``IndexError``,
``ValueError`` or ``struct.error``.  The encoders take values from our own code
and raise ``ValueError`` for values the protocol cannot carry (a programming
error, not a radio problem).

The synchronisation of the band's 32.768 kHz tick with the host clock follows
Cristian's probabilistic clock reading [2]_: the host writes a time-sync request
carrying its own time, the band answers on the status characteristic with its
tick and that echo, and the host brackets the tick between send and receive.

References
----------
.. [1] Bluetooth SIG, *Bluetooth Core Specification* v5.3, Vol 3, Part F
   (Attribute Protocol), sec. 3.2.9 "Long attribute values" and Part G (GATT),
   sec. 3.3.3.3 "Client Characteristic Configuration"; Vol 6, Part B, sec. 4.6.6
   "LE Data Packet Length Extension".
.. [2] F. Cristian, "Probabilistic clock synchronization", *Distributed
   Computing* 3 (1989) 146-158.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sensor_gateway.errors import (
    MalformedPacketError,
    PacketTooShortError,
    ProtocolError,
    UnsupportedVersionError,
)

__all__ = [
    "ACC_FS",
    "ACC_G_PER_LSB",
    "CONTROL_CHAR_UUID",
    "DATA_CHAR_UUID",
    "DATA_HEADER_SIZE",
    "EMG_RATES",
    "EMG_UV_PER_LSB",
    "MAX_DATA_PACKET_SIZE",
    "PACKET_SECONDS",
    "PROTOCOL_VERSION",
    "SEQ_MODULUS",
    "SERVICE_UUID",
    "STATUS_CHAR_UUID",
    "STATUS_SIZE",
    "TICK_HZ",
    "TICK_MODULUS",
    "BandPacket",
    "BandStatus",
    "ControlCommand",
    "ControlMessage",
    "PacketFlags",
    "ProtocolError",
    "Quantized",
    "StatusFlags",
    "acc_counts_to_g",
    "acc_g_to_counts",
    "decode_control",
    "decode_data_packet",
    "decode_status",
    "emg_counts_to_uv",
    "emg_uv_to_counts",
    "encode_control",
    "encode_data_packet",
    "encode_status",
    "seq_delta",
    "tick_delta",
]

# --------------------------------------------------------------------------- constants

#: Protocol version carried in byte 0 of every data packet and status record.
PROTOCOL_VERSION: Final = 1

#: The band's primary service (128-bit, random, advertised in the scan response).
SERVICE_UUID: Final = "c7a30001-5e1f-4b9d-8f26-3d94a1e07b5c"
#: Data characteristic: notify, one :class:`BandPacket` per notification.
DATA_CHAR_UUID: Final = "c7a30002-5e1f-4b9d-8f26-3d94a1e07b5c"
#: Status characteristic: read + notify, one :class:`BandStatus`.
STATUS_CHAR_UUID: Final = "c7a30003-5e1f-4b9d-8f26-3d94a1e07b5c"
#: Control characteristic: write / write with response, one :class:`ControlMessage`.
CONTROL_CHAR_UUID: Final = "c7a30004-5e1f-4b9d-8f26-3d94a1e07b5c"

#: Band tick rate (Hz): the 32.768 kHz RTC crystal.
TICK_HZ: Final = 32768
#: Modulus of the u32 tick field (wraps after 2**32 / 32768 s = 36.4 h).
TICK_MODULUS: Final = 1 << 32
#: Modulus of the u16 sequence field (wraps after 65536 packets = 54.6 min).
SEQ_MODULUS: Final = 1 << 16
#: EMG scale: 0.5 µV per count, full scale -16384 ... +16383.5 µV.
EMG_UV_PER_LSB: Final = 0.5
#: Accelerometer scale: 1 mg per count, full scale -32.768 ... +32.767 g.
ACC_G_PER_LSB: Final = 0.001
_ACC_COUNTS_PER_G: Final = 1000.0  # exact reciprocal of ACC_G_PER_LSB
#: Nominal period of data packets (s): 20 packets/s.
PACKET_SECONDS: Final = 0.05
#: EMG sample rates the band supports (Hz).
EMG_RATES: Final = (1000, 2000)
#: Accelerometer sample rate (Hz) when the band has one.
ACC_FS: Final = 100

#: Bytes of the data-packet header.
DATA_HEADER_SIZE: Final = 10
#: Largest data packet: 10 + 100 x 2 + 5 x 6 = 240 bytes (fits ATT_MTU 247 - 3).
MAX_DATA_PACKET_SIZE: Final = 240
#: Bytes of a status record.
STATUS_SIZE: Final = 32

_HEADER = struct.Struct("<BBHIBB")  # version, flags, seq, tick, n_emg, n_acc
_STATUS = struct.Struct("<BBBBBBHIIIHHQ")
_I16 = np.dtype("<i2")
_INT16_MIN, _INT16_MAX = -32768, 32767


# --------------------------------------------------------------------------- flags


class PacketFlags(enum.IntFlag):
    """Byte 1 of a data packet.  Bits 6 and 7 are reserved and must be 0.

    ``ACC_PRESENT`` and ``EMG_RATE_1000`` describe the packet's layout; the other
    bits report the band's state while the packet was sampled.
    """

    #: An EMG electrode lost skin contact (impedance check failed).
    LEAD_OFF = 0x01
    #: The EMG front end clipped during this packet.
    EMG_SATURATED = 0x02
    #: The packet carries accelerometer samples.
    ACC_PRESENT = 0x04
    #: EMG is sampled at 1000 Hz (clear: 2000 Hz).
    EMG_RATE_1000 = 0x08
    #: The band has answered a time-sync request since it booted.
    TIME_SYNCED = 0x10
    #: Battery below 15 %.
    BATTERY_LOW = 0x20


_NO_FLAGS: Final = PacketFlags(0)
#: Bits that describe the packet layout (derived from ``emg_fs`` and ``acc`` on encode).
_LAYOUT_BITS: Final = int(PacketFlags.ACC_PRESENT | PacketFlags.EMG_RATE_1000)
_PACKET_RESERVED: Final = 0xFF & ~sum(int(f) for f in PacketFlags)
#: Pre-built flag values: ``PacketFlags(x)`` costs microseconds, a tuple index does not.
_PACKET_FLAGS: Final = tuple(PacketFlags(i) for i in range(1 << 6))


class StatusFlags(enum.IntFlag):
    """Byte 1 of a status record.  Bit 7 is reserved and must be 0."""

    LEAD_OFF = 0x01
    #: The EMG front end clipped within the last second.
    EMG_SATURATED = 0x02
    #: The band is streaming data packets.
    STREAMING = 0x04
    BATTERY_LOW = 0x08
    #: The band is on its charger.
    CHARGING = 0x10
    TIME_SYNCED = 0x20
    #: This record answers a time-sync request; ``sync_host_ms`` is its echo.
    SYNC_REPLY = 0x40


_STATUS_RESERVED: Final = 0xFF & ~sum(int(f) for f in StatusFlags)


# --------------------------------------------------------------------------- wrap helpers


@overload
def seq_delta(new: int, old: int) -> int: ...
@overload
def seq_delta(new: NDArray[np.integer], old: int | NDArray[np.integer]) -> NDArray[np.int64]: ...
def seq_delta(
    new: int | NDArray[np.integer], old: int | NDArray[np.integer]
) -> int | NDArray[np.int64]:
    """Signed modular difference ``new - old`` of u16 sequence numbers.

    Parameters
    ----------
    new, old
        Sequence numbers (ints or integer arrays; taken modulo 65536).

    Returns
    -------
    int or ndarray of int64
        The difference in ``[-32768, 32767]``: ``seq_delta(2, 65535) == 3`` across a
        wrap, ``seq_delta(65535, 2) == -3`` for a packet that is older.
    """
    return _signed_delta(new, old, SEQ_MODULUS)


@overload
def tick_delta(new: int, old: int) -> int: ...
@overload
def tick_delta(new: NDArray[np.integer], old: int | NDArray[np.integer]) -> NDArray[np.int64]: ...
def tick_delta(
    new: int | NDArray[np.integer], old: int | NDArray[np.integer]
) -> int | NDArray[np.int64]:
    """Signed modular difference ``new - old`` of u32 band ticks.

    Parameters
    ----------
    new, old
        Ticks (ints or integer arrays; taken modulo 2**32).

    Returns
    -------
    int or ndarray of int64
        The difference in ``[-2**31, 2**31 - 1]`` ticks, i.e. unambiguous for
        intervals shorter than 18.2 h (half the 36.4 h wrap period).
    """
    return _signed_delta(new, old, TICK_MODULUS)


def _signed_delta(
    new: int | NDArray[np.integer], old: int | NDArray[np.integer], modulus: int
) -> int | NDArray[np.int64]:
    half = modulus // 2
    if isinstance(new, int) and isinstance(old, int):
        return (new - old + half) % modulus - half
    d = np.asarray(new).astype(np.int64) - np.asarray(old).astype(np.int64)
    out: NDArray[np.int64] = (d + half) % modulus - half
    return out


# --------------------------------------------------------------------------- scaling


@dataclass(frozen=True)
class Quantized:
    """Counts ready for the wire and which inputs had to be clipped to full scale.

    Attributes
    ----------
    counts
        int16 counts, same shape as the input.
    clipped
        ``True`` where the rounded value lay outside the int16 range.
    """

    counts: NDArray[np.int16]
    clipped: NDArray[np.bool_]

    @property
    def n_clipped(self) -> int:
        """Number of clipped samples."""
        return int(np.count_nonzero(self.clipped))


def _quantize(values: ArrayLike, counts_per_unit: float, what: str) -> Quantized:
    x = np.asarray(values, dtype=np.float64)
    if np.isnan(x).any():
        raise ValueError(f"{what}: NaN cannot be quantized")
    r = np.rint(x * counts_per_unit)  # round half to even (IEEE 754 default)
    clipped = (r < _INT16_MIN) | (r > _INT16_MAX)
    counts = np.clip(r, _INT16_MIN, _INT16_MAX).astype(np.int16)
    return Quantized(counts, clipped)


def emg_uv_to_counts(uv: ArrayLike) -> Quantized:
    """EMG in µV → int16 counts at 0.5 µV/LSB (rounded half to even, clipped).

    Parameters
    ----------
    uv
        EMG in microvolts (any shape; ±inf clip to full scale).

    Returns
    -------
    Quantized
        Counts and the mask of inputs outside -16384.25 ... +16383.75 µV.

    Raises
    ------
    ValueError
        If any value is NaN.
    """
    return _quantize(uv, 1.0 / EMG_UV_PER_LSB, "EMG")


def emg_counts_to_uv(counts: ArrayLike) -> NDArray[np.float64]:
    """int16 EMG counts → µV (exact: 0.5 µV/LSB is a power of two)."""
    return np.asarray(counts).astype(np.float64) * EMG_UV_PER_LSB


def acc_g_to_counts(g: ArrayLike) -> Quantized:
    """Acceleration in g → int16 counts at 1 mg/LSB (rounded half to even, clipped).

    Parameters
    ----------
    g
        Acceleration in standard gravity (any shape; ±inf clip to full scale).

    Returns
    -------
    Quantized
        Counts and the mask of inputs outside -32.7685 ... +32.7675 g.

    Raises
    ------
    ValueError
        If any value is NaN.
    """
    return _quantize(g, _ACC_COUNTS_PER_G, "ACC")


def acc_counts_to_g(counts: ArrayLike) -> NDArray[np.float64]:
    """int16 accelerometer counts → g (``counts / 1000``, correctly rounded)."""
    return np.asarray(counts).astype(np.float64) / _ACC_COUNTS_PER_G


# --------------------------------------------------------------------------- data packets


_RATE_1000: Final = int(PacketFlags.EMG_RATE_1000)
_ACC_PRESENT: Final = int(PacketFlags.ACC_PRESENT)


def _layout_or_none(flags: int, n_emg: int) -> tuple[float, int] | None:
    """``(emg_fs, expected n_acc)`` of a header (§3.4), or ``None`` for an impossible n_emg."""
    fs, max_emg, decim = (1000.0, 50, 10) if flags & _RATE_1000 else (2000.0, 100, 20)
    if not 1 <= n_emg <= max_emg:
        return None
    return fs, (-(-n_emg // decim) if flags & _ACC_PRESENT else 0)


def _n_emg_error(flags: int, n_emg: int) -> MalformedPacketError:
    fs, max_emg = (1000, 50) if flags & _RATE_1000 else (2000, 100)
    return MalformedPacketError(f"data packet: n_emg = {n_emg}, must be 1..{max_emg} at {fs} Hz")


#: ``_LAYOUTS[(flags & 0x0C) << 6 | n_emg]`` is ``_layout_or_none(flags, n_emg)``: one
#: tuple index on the hot path instead of IntFlag arithmetic (which costs microseconds).
_LAYOUTS: Final = tuple(_layout_or_none(i >> 6, i & 0xFF) for i in range(1024))


@dataclass(frozen=True, slots=True)
class BandPacket:
    """One data notification.

    Attributes
    ----------
    seq
        Sequence number, 0 ... 65535, +1 per packet (wraps).
    tick
        Band tick (32768 Hz, u32) of the first EMG sample.
    flags
        :class:`PacketFlags` as on the wire (layout bits included after decoding).
    emg_fs
        EMG sample rate, 1000.0 or 2000.0 Hz.
    emg
        ``(n_emg,)`` int16 EMG counts (0.5 µV/LSB).
    acc
        ``(n_acc, 3)`` int16 accelerometer counts x, y, z (1 mg/LSB); ``(0, 3)``
        when the band has no accelerometer.

    Notes
    -----
    Decoded arrays are read-only views of the received bytes.
    """

    seq: int
    tick: int
    flags: PacketFlags
    emg_fs: float
    emg: NDArray[np.int16]
    acc: NDArray[np.int16]

    @classmethod
    def create(
        cls,
        seq: int,
        tick: int,
        emg: ArrayLike,
        acc: ArrayLike | None = None,
        *,
        emg_fs: float = 2000.0,
        flags: PacketFlags = _NO_FLAGS,
    ) -> BandPacket:
        """Build a packet with the layout flags (``ACC_PRESENT``, ``EMG_RATE_1000``) set.

        Parameters
        ----------
        seq, tick
            Sequence number and first-sample tick (taken modulo 2**16 and 2**32).
        emg
            EMG counts (int16-representable integers).
        acc
            ``(n, 3)`` accelerometer counts, or ``None`` for a band without one.
        emg_fs
            1000 or 2000 Hz.
        flags
            State bits (``LEAD_OFF``, ``EMG_SATURATED``, ``TIME_SYNCED``, ``BATTERY_LOW``).
        """
        e = np.ascontiguousarray(emg, dtype=np.int16)
        a = (
            np.zeros((0, 3), dtype=np.int16)
            if acc is None
            else np.ascontiguousarray(acc, dtype=np.int16).reshape(-1, 3)
        )
        layout = PacketFlags(0)
        if a.shape[0]:
            layout |= PacketFlags.ACC_PRESENT
        if emg_fs == 1000.0:
            layout |= PacketFlags.EMG_RATE_1000
        state = PacketFlags(int(flags) & ~_LAYOUT_BITS)
        return cls(seq % SEQ_MODULUS, tick % TICK_MODULUS, state | layout, float(emg_fs), e, a)

    @property
    def n_emg(self) -> int:
        """Number of EMG samples."""
        return int(self.emg.shape[0])

    @property
    def n_acc(self) -> int:
        """Number of accelerometer samples (rows of :attr:`acc`)."""
        return int(self.acc.shape[0])


def _int16_bytes(arr: NDArray[np.generic], what: str) -> bytes:
    a = np.asarray(arr)
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{what}: integer counts required, got {a.dtype}")
    if a.size and (int(a.min()) < _INT16_MIN or int(a.max()) > _INT16_MAX):
        raise ValueError(f"{what}: counts outside int16 range")
    return a.astype(_I16, copy=False).tobytes()


def encode_data_packet(p: BandPacket) -> bytes:
    """Serialise a data packet (docs/band-protocol.md, "Data packet").

    Parameters
    ----------
    p
        The packet.  ``p.flags`` carries either none of the layout bits
        (``ACC_PRESENT``, ``EMG_RATE_1000``; they are then derived from ``emg_fs``
        and ``acc``) or exactly the ones ``emg_fs`` and ``acc`` imply.

    Returns
    -------
    bytes
        ``10 + 2 n_emg + 6 n_acc`` bytes.

    Raises
    ------
    ValueError
        If a field is out of range, the shapes are wrong, ``n_acc`` does not match
        ``n_emg`` (``ceil(n_emg / (emg_fs / 100))`` or 0) or the flags contradict the
        layout.
    """
    if not 0 <= p.seq < SEQ_MODULUS:
        raise ValueError(f"seq {p.seq} outside 0..65535")
    if not 0 <= p.tick < TICK_MODULUS:
        raise ValueError(f"tick {p.tick} outside 0..2**32-1")
    if p.emg_fs not in EMG_RATES:
        raise ValueError(f"emg_fs {p.emg_fs} not one of {EMG_RATES}")
    flags = int(p.flags)
    if flags & ~0xFF or flags & _PACKET_RESERVED:
        raise ValueError(f"flags 0x{flags:x} set reserved bits")
    emg, acc = np.asarray(p.emg), np.asarray(p.acc)
    if emg.ndim != 1 or acc.ndim != 2 or acc.shape[1] != 3:
        raise ValueError(f"shapes emg {emg.shape}, acc {acc.shape}: need (n,) and (m, 3)")
    layout = (_RATE_1000 if p.emg_fs == 1000 else 0) | (_ACC_PRESENT if acc.shape[0] else 0)
    given = flags & _LAYOUT_BITS
    if given and given != layout:
        raise ValueError(
            f"flags {PacketFlags(given)!r} contradict emg_fs={p.emg_fs:g}, n_acc={acc.shape[0]}"
        )
    wire_flags = (flags & ~_LAYOUT_BITS) | layout
    layout_info = _layout_or_none(wire_flags | _ACC_PRESENT, emg.shape[0])
    if layout_info is None:
        raise ValueError(str(_n_emg_error(wire_flags, emg.shape[0])))
    n_acc = layout_info[1]
    if acc.shape[0] not in (0, n_acc):
        raise ValueError(
            f"{emg.shape[0]} EMG samples at {p.emg_fs:g} Hz need {n_acc} ACC samples, "
            f"got {acc.shape[0]}"
        )
    head = _HEADER.pack(PROTOCOL_VERSION, wire_flags, p.seq, p.tick, emg.shape[0], acc.shape[0])
    return head + _int16_bytes(emg, "EMG") + _int16_bytes(acc, "ACC")


def _as_bytes(data: bytes | bytearray | memoryview) -> bytes:
    if type(data) is bytes:
        return data
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)  # immutable copy: the decoded arrays are views of it
    raise TypeError(f"expected bytes, bytearray or memoryview, got {type(data).__name__}")


def decode_data_packet(data: bytes | bytearray | memoryview) -> BandPacket:
    """Parse one data notification (docs/band-protocol.md, "Data packet").

    Parameters
    ----------
    data
        The characteristic value, exactly as notified.

    Returns
    -------
    BandPacket
        With read-only ``emg`` / ``acc`` views (``np.frombuffer``, no copy).

    Raises
    ------
    PacketTooShortError
        Fewer bytes than the header or than the header announces.
    UnsupportedVersionError
        Byte 0 is not :data:`PROTOCOL_VERSION`.
    MalformedPacketError
        Reserved flag bits set, sample counts impossible for the rate or
        inconsistent with each other, or trailing bytes.
    """
    buf = _as_bytes(data)
    size = len(buf)
    if size < DATA_HEADER_SIZE:
        if size and buf[0] != PROTOCOL_VERSION:
            raise UnsupportedVersionError(
                f"data packet: protocol version {buf[0]}, this gateway speaks {PROTOCOL_VERSION}"
            )
        raise PacketTooShortError(
            f"data packet: {size} bytes, shorter than the {DATA_HEADER_SIZE}-byte header"
        )
    version, flags, seq, tick, n_emg, n_acc = _HEADER.unpack_from(buf)
    if version != PROTOCOL_VERSION:
        raise UnsupportedVersionError(
            f"data packet: protocol version {version}, this gateway speaks {PROTOCOL_VERSION}"
        )
    if flags & _PACKET_RESERVED:
        raise MalformedPacketError(
            f"data packet: reserved flag bits set (flags 0x{flags:02x}, reserved mask "
            f"0x{_PACKET_RESERVED:02x})"
        )
    layout = _LAYOUTS[(flags & _LAYOUT_BITS) << 6 | n_emg]
    if layout is None:
        raise _n_emg_error(flags, n_emg)
    fs, want_acc = layout
    if n_acc != want_acc:
        why = (
            "ACC_PRESENT is clear"
            if not flags & _ACC_PRESENT
            else f"{n_emg} EMG samples at {fs:g} Hz span {want_acc} ACC samples at 100 Hz"
        )
        raise MalformedPacketError(f"data packet: n_acc = {n_acc}, expected {want_acc} ({why})")
    need = DATA_HEADER_SIZE + 2 * n_emg + 6 * n_acc
    if size != need:
        msg = (
            f"data packet: {size} bytes, header announces {n_emg} EMG + {n_acc} ACC "
            f"samples = {need} bytes"
        )
        if size < need:
            raise PacketTooShortError(msg)
        raise MalformedPacketError(msg + f" ({size - need} trailing bytes)")
    v = np.frombuffer(buf, dtype=_I16, offset=DATA_HEADER_SIZE)
    return BandPacket(seq, tick, _PACKET_FLAGS[flags], fs, v[:n_emg], v[n_emg:].reshape(n_acc, 3))


# --------------------------------------------------------------------------- status


@dataclass(frozen=True)
class BandStatus:
    """One status record (read or notified on the status characteristic).

    Attributes
    ----------
    battery_pct
        State of charge, 0 ... 100 %.
    lead_off, emg_saturated, streaming, battery_low, charging, time_synced
        The :class:`StatusFlags` bits (``SYNC_REPLY`` is ``sync_host_ms is not None``).
    emg_fs
        Current EMG rate, 1000 or 2000 Hz.
    acc_fs
        Accelerometer rate, 100 Hz, or 0 for a band without one.
    firmware
        Firmware version ``(major, minor, patch)``.
    uptime_s
        Seconds since the band booted.
    tick
        The band's tick when this record was latched (for a time-sync reply: when
        the request was received).
    dropped_packets
        Data packets the band discarded because its radio queue was full (since boot,
        u32; their sequence numbers were consumed, so the host sees a gap).
    sync_host_ms
        The host time echoed from the time-sync request this record answers, else
        ``None``.
    """

    battery_pct: int
    lead_off: bool = False
    emg_saturated: bool = False
    streaming: bool = False
    battery_low: bool = False
    charging: bool = False
    time_synced: bool = False
    emg_fs: int = 2000
    acc_fs: int = ACC_FS
    firmware: tuple[int, int, int] = (1, 0, 0)
    uptime_s: int = 0
    tick: int = 0
    dropped_packets: int = 0
    sync_host_ms: int | None = None

    @property
    def flags(self) -> StatusFlags:
        """The record's :class:`StatusFlags` byte."""
        f = StatusFlags(0)
        for bit, on in (
            (StatusFlags.LEAD_OFF, self.lead_off),
            (StatusFlags.EMG_SATURATED, self.emg_saturated),
            (StatusFlags.STREAMING, self.streaming),
            (StatusFlags.BATTERY_LOW, self.battery_low),
            (StatusFlags.CHARGING, self.charging),
            (StatusFlags.TIME_SYNCED, self.time_synced),
            (StatusFlags.SYNC_REPLY, self.sync_host_ms is not None),
        ):
            if on:
                f |= bit
        return f

    @property
    def firmware_version(self) -> str:
        """``"major.minor.patch"``."""
        return ".".join(str(v) for v in self.firmware)


def encode_status(s: BandStatus) -> bytes:
    """Serialise a status record (32 bytes, docs/band-protocol.md, "Status record").

    Raises
    ------
    ValueError
        If a field is out of range (battery > 100 %, unsupported rate, ...).
    """
    if not 0 <= s.battery_pct <= 100:
        raise ValueError(f"battery_pct {s.battery_pct} outside 0..100")
    if s.emg_fs not in EMG_RATES:
        raise ValueError(f"emg_fs {s.emg_fs} not one of {EMG_RATES}")
    if s.acc_fs not in (0, ACC_FS):
        raise ValueError(f"acc_fs {s.acc_fs} must be 0 or {ACC_FS}")
    if len(s.firmware) != 3 or not all(0 <= v <= 255 for v in s.firmware):
        raise ValueError(f"firmware {s.firmware} must be three numbers 0..255")
    for name in ("uptime_s", "tick", "dropped_packets"):
        if not 0 <= getattr(s, name) < 1 << 32:
            raise ValueError(f"{name} outside u32")
    echo = 0 if s.sync_host_ms is None else s.sync_host_ms
    if not 0 <= echo < 1 << 64:
        raise ValueError("sync_host_ms outside u64")
    return _STATUS.pack(
        PROTOCOL_VERSION, int(s.flags), s.battery_pct, *s.firmware, s.emg_fs, s.tick,
        s.uptime_s, s.dropped_packets, s.acc_fs, 0, echo,
    )  # fmt: skip


def decode_status(data: bytes | bytearray | memoryview) -> BandStatus:
    """Parse a status record (docs/band-protocol.md, "Status record").

    Raises
    ------
    PacketTooShortError
        Fewer than 32 bytes.
    UnsupportedVersionError
        Byte 0 is not :data:`PROTOCOL_VERSION`.
    MalformedPacketError
        More than 32 bytes, reserved bits or bytes set, battery above 100 %, an
        unsupported rate, or an echo without ``SYNC_REPLY``.
    """
    buf = _as_bytes(data)
    if buf and buf[0] != PROTOCOL_VERSION:
        raise UnsupportedVersionError(
            f"status: protocol version {buf[0]}, this gateway speaks {PROTOCOL_VERSION}"
        )
    if len(buf) != STATUS_SIZE:
        msg = f"status: {len(buf)} bytes, a version-1 status record is {STATUS_SIZE} bytes"
        if len(buf) < STATUS_SIZE:
            raise PacketTooShortError(msg)
        raise MalformedPacketError(msg)
    (_, flags, battery, major, minor, patch, emg_fs, tick, uptime, dropped, acc_fs, reserved,
     echo) = _STATUS.unpack(buf)  # fmt: skip
    if flags & _STATUS_RESERVED:
        raise MalformedPacketError(f"status: reserved flag bits set (flags 0x{flags:02x})")
    if reserved:
        raise MalformedPacketError(f"status: reserved bytes 22..23 = 0x{reserved:04x}, must be 0")
    if battery > 100:
        raise MalformedPacketError(f"status: battery {battery} %, must be 0..100")
    if emg_fs not in EMG_RATES:
        raise MalformedPacketError(f"status: EMG rate {emg_fs} Hz, must be 1000 or 2000")
    if acc_fs not in (0, ACC_FS):
        raise MalformedPacketError(f"status: ACC rate {acc_fs} Hz, must be 0 or {ACC_FS}")
    reply = bool(flags & StatusFlags.SYNC_REPLY)
    if echo and not reply:
        raise MalformedPacketError("status: time-sync echo set but SYNC_REPLY flag clear")
    return BandStatus(
        battery_pct=battery,
        lead_off=bool(flags & StatusFlags.LEAD_OFF),
        emg_saturated=bool(flags & StatusFlags.EMG_SATURATED),
        streaming=bool(flags & StatusFlags.STREAMING),
        battery_low=bool(flags & StatusFlags.BATTERY_LOW),
        charging=bool(flags & StatusFlags.CHARGING),
        time_synced=bool(flags & StatusFlags.TIME_SYNCED),
        emg_fs=emg_fs,
        acc_fs=acc_fs,
        firmware=(major, minor, patch),
        uptime_s=uptime,
        tick=tick,
        dropped_packets=dropped,
        sync_host_ms=echo if reply else None,
    )


# --------------------------------------------------------------------------- control


class ControlCommand(enum.IntEnum):
    """Opcode, byte 0 of a control write."""

    #: Start streaming data packets (seq restarts at 0).  No parameters.
    START_STREAM = 0x01
    #: Stop streaming after flushing the current, possibly short, packet.
    STOP_STREAM = 0x02
    #: Ask for a status notification with ``SYNC_REPLY``; u64 host time to echo.
    TIME_SYNC = 0x03
    #: Set the EMG rate (u16 Hz: 1000 or 2000); only while not streaming.
    SET_EMG_RATE = 0x04


#: Exact length of each control write.
_CONTROL_SIZE: Final = {
    ControlCommand.START_STREAM: 1,
    ControlCommand.STOP_STREAM: 1,
    ControlCommand.TIME_SYNC: 9,
    ControlCommand.SET_EMG_RATE: 3,
}
_U64 = struct.Struct("<Q")
_U16 = struct.Struct("<H")


@dataclass(frozen=True)
class ControlMessage:
    """A decoded control write.

    Attributes
    ----------
    command
        The opcode.
    unix_ms
        For ``TIME_SYNC``: the host time (ms since the Unix epoch) the band echoes;
        0 for every other command.
    emg_fs
        For ``SET_EMG_RATE``: the requested rate (Hz); ``None`` otherwise.
    """

    command: ControlCommand
    unix_ms: int = 0
    emg_fs: int | None = None


def encode_control(
    command: ControlCommand, *, unix_ms: int = 0, emg_fs: int | None = None
) -> bytes:
    """Serialise a control write (docs/band-protocol.md, "Control").

    Parameters
    ----------
    command
        The opcode.
    unix_ms
        ``TIME_SYNC`` only: host time in ms (u64), echoed back by the band.
    emg_fs
        ``SET_EMG_RATE`` only: 1000 or 2000.

    Raises
    ------
    ValueError
        A parameter given for a command that does not take it, or out of range.
    """
    command = ControlCommand(command)
    if unix_ms and command is not ControlCommand.TIME_SYNC:
        raise ValueError(f"{command.name} takes no unix_ms")
    if emg_fs is not None and command is not ControlCommand.SET_EMG_RATE:
        raise ValueError(f"{command.name} takes no emg_fs")
    op = bytes((command,))
    if command is ControlCommand.TIME_SYNC:
        if not 0 <= unix_ms < 1 << 64:
            raise ValueError(f"unix_ms {unix_ms} outside u64")
        return op + _U64.pack(unix_ms)
    if command is ControlCommand.SET_EMG_RATE:
        if emg_fs not in EMG_RATES:
            raise ValueError(f"emg_fs {emg_fs} not one of {EMG_RATES}")
        return op + _U16.pack(emg_fs)
    return op


def decode_control(data: bytes | bytearray | memoryview) -> ControlMessage:
    """Parse a control write, as the band does (strictly: exact length, known values).

    Raises
    ------
    PacketTooShortError
        Empty write, or fewer bytes than the opcode needs.
    MalformedPacketError
        Unknown opcode, extra bytes, or an unsupported EMG rate.
    """
    buf = _as_bytes(data)
    if not buf:
        raise PacketTooShortError("control: empty write, need at least the opcode byte")
    try:
        command = ControlCommand(buf[0])
    except ValueError:
        raise MalformedPacketError(f"control: unknown opcode 0x{buf[0]:02x}") from None
    need = _CONTROL_SIZE[command]
    if len(buf) != need:
        msg = f"control: {command.name} is {need} bytes, got {len(buf)}"
        if len(buf) < need:
            raise PacketTooShortError(msg)
        raise MalformedPacketError(msg)
    if command is ControlCommand.TIME_SYNC:
        return ControlMessage(command, unix_ms=_U64.unpack_from(buf, 1)[0])
    if command is ControlCommand.SET_EMG_RATE:
        rate = _U16.unpack_from(buf, 1)[0]
        if rate not in EMG_RATES:
            raise MalformedPacketError(f"control: SET_EMG_RATE {rate} Hz, must be 1000 or 2000")
        return ControlMessage(command, emg_fs=rate)
    return ControlMessage(command)
