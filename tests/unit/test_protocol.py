"""Band protocol v1 codec (docs/band-protocol.md): round trips, golden bytes, errors."""

from __future__ import annotations

import math
from typing import cast

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from numpy.typing import NDArray

from sensor_gateway import protocol as pr
from sensor_gateway.errors import (
    MalformedPacketError,
    PacketTooShortError,
    ProtocolError,
    UnsupportedVersionError,
)
from sensor_gateway.protocol import BandPacket, BandStatus, ControlCommand, PacketFlags

STATE_BITS = [
    PacketFlags.LEAD_OFF,
    PacketFlags.EMG_SATURATED,
    PacketFlags.TIME_SYNCED,
    PacketFlags.BATTERY_LOW,
]

# Golden examples, typed in by hand from docs/band-protocol.md §3.7, §4 and §5.3.
DOC_DATA_1 = "01 16 34 12 EF CD AB 89 03 01 C8 00 FF FF 00 80 0C 00 06 FF E8 03"
DOC_DATA_2 = "01 09 FF FF 00 80 00 00 02 00 00 00 FF 7F"
DOC_STATUS = (
    "01 64 57 01 04 02 D0 07 40 E2 01 00 8D 0E 00 00"
    " 03 00 00 00 64 00 00 00 33 04 69 CF 8F 01 00 00"
)
DOC_SYNC_MS = 1_717_171_717_171


@st.composite
def packets(draw: st.DrawFn) -> BandPacket:
    """Any packet the spec allows (full or short, either rate, with or without ACC)."""
    fs = draw(st.sampled_from([1000, 2000]))
    n_max, decim = (50, 10) if fs == 1000 else (100, 20)
    n_emg = draw(st.integers(1, n_max))
    has_acc = draw(st.booleans())
    n_acc = math.ceil(n_emg / decim) if has_acc else 0
    emg = draw(arrays(np.int16, n_emg))
    acc = draw(arrays(np.int16, (n_acc, 3)))
    state = PacketFlags(0)
    for bit in draw(st.lists(st.sampled_from(STATE_BITS), unique=True)):
        state |= bit
    return BandPacket.create(
        draw(st.integers(0, 65535)),
        draw(st.integers(0, 2**32 - 1)),
        emg,
        acc if has_acc else None,
        emg_fs=float(fs),
        flags=state,
    )


statuses = st.builds(
    BandStatus,
    battery_pct=st.integers(0, 100),
    lead_off=st.booleans(),
    emg_saturated=st.booleans(),
    streaming=st.booleans(),
    battery_low=st.booleans(),
    charging=st.booleans(),
    time_synced=st.booleans(),
    emg_fs=st.sampled_from([1000, 2000]),
    acc_fs=st.sampled_from([0, 100]),
    firmware=st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)),
    uptime_s=st.integers(0, 2**32 - 1),
    tick=st.integers(0, 2**32 - 1),
    dropped_packets=st.integers(0, 2**32 - 1),
    sync_host_ms=st.none() | st.integers(0, 2**64 - 1),
)


def _header(flags: int, n_emg: int, n_acc: int, *, version: int = 1) -> bytes:
    """A data header written out byte by byte from the §3.1 table (seq 7, tick 0x01020304)."""
    return bytes([version, flags, 7, 0, 4, 3, 2, 1, n_emg, n_acc])


# ----------------------------------------------------------------------------- data packets


@given(packets())
def test_data_packet_round_trip(p: BandPacket) -> None:
    blob = pr.encode_data_packet(p)
    assert len(blob) == 10 + 2 * p.n_emg + 6 * p.n_acc  # §3.3 length formula
    q = pr.decode_data_packet(blob)
    assert (q.seq, q.tick, q.flags, q.emg_fs) == (p.seq, p.tick, p.flags, p.emg_fs)
    np.testing.assert_array_equal(q.emg, p.emg)
    np.testing.assert_array_equal(q.acc, p.acc)
    assert q.acc.shape == (p.n_acc, 3)
    assert pr.encode_data_packet(q) == blob


@given(packets())
def test_header_fields_sit_at_the_documented_offsets(p: BandPacket) -> None:
    blob = pr.encode_data_packet(p)
    assert blob[0] == 1
    assert blob[1] == int(p.flags)
    assert blob[2] + 256 * blob[3] == p.seq
    assert int.from_bytes(blob[4:8], "little") == p.tick
    assert (blob[8], blob[9]) == (p.n_emg, p.n_acc)
    first = int.from_bytes(blob[10:12], "little", signed=True)
    assert first == p.emg[0]


def test_full_packet_is_240_bytes_at_2000_hz() -> None:
    p = BandPacket.create(0, 0, np.zeros(100, np.int16), np.zeros((5, 3), np.int16))
    assert len(pr.encode_data_packet(p)) == pr.MAX_DATA_PACKET_SIZE == 240
    assert pr.MAX_DATA_PACKET_SIZE <= 247 - 3  # fits one notification at ATT_MTU 247


def test_doc_example_short_packet_at_2000_hz() -> None:
    p = pr.decode_data_packet(bytes.fromhex(DOC_DATA_1))
    assert p.seq == 0x1234
    assert p.tick == 0x89ABCDEF
    assert p.flags == PacketFlags.EMG_SATURATED | PacketFlags.ACC_PRESENT | PacketFlags.TIME_SYNCED
    assert p.emg_fs == 2000.0
    assert p.emg.tolist() == [200, -1, -32768]
    assert pr.emg_counts_to_uv(p.emg).tolist() == [100.0, -0.5, -16384.0]
    assert p.acc.tolist() == [[12, -250, 1000]]
    np.testing.assert_allclose(pr.acc_counts_to_g(p.acc), [[0.012, -0.25, 1.0]], rtol=0, atol=0)


def test_doc_example_no_acc_at_1000_hz() -> None:
    p = pr.decode_data_packet(bytes.fromhex(DOC_DATA_2))
    assert p.flags == PacketFlags.LEAD_OFF | PacketFlags.EMG_RATE_1000
    assert (p.seq, p.tick, p.emg_fs) == (65535, 32768, 1000.0)
    assert pr.emg_counts_to_uv(p.emg).tolist() == [0.0, 16383.5]
    assert p.acc.shape == (0, 3)


def test_decode_accepts_bytearray_and_memoryview_and_does_not_alias_them() -> None:
    raw = bytearray.fromhex(DOC_DATA_1)
    p = pr.decode_data_packet(raw)
    q = pr.decode_data_packet(memoryview(raw))
    raw[10:12] = b"\x00\x00"
    assert p.emg[0] == 200 and q.emg[0] == 200
    assert not p.emg.flags.writeable


@pytest.mark.parametrize(
    ("blob", "error", "fragment"),
    [
        (b"", PacketTooShortError, "0 bytes, shorter than the 10-byte header"),
        (bytes.fromhex("01 04 00 00"), PacketTooShortError, "4 bytes"),
        (b"\x02" + bytes(9), UnsupportedVersionError, "protocol version 2"),
        (b"\x00", UnsupportedVersionError, "protocol version 0"),
        (_header(0x40, 1, 0) + bytes(2), MalformedPacketError, "reserved flag bits"),
        (_header(0x80, 1, 0) + bytes(2), MalformedPacketError, "reserved flag bits"),
        (_header(0x00, 0, 0), MalformedPacketError, "n_emg = 0, must be 1..100 at 2000 Hz"),
        (_header(0x00, 101, 0) + bytes(202), MalformedPacketError, "n_emg = 101"),
        (_header(0x08, 51, 0) + bytes(102), MalformedPacketError, "must be 1..50 at 1000 Hz"),
        (_header(0x00, 20, 1) + bytes(46), MalformedPacketError, "ACC_PRESENT is clear"),
        (
            _header(0x04, 100, 4) + bytes(224),
            MalformedPacketError,
            "n_acc = 4, expected 5 (100 EMG samples at 2000 Hz span 5 ACC samples",
        ),
        (_header(0x04, 21, 1) + bytes(48), MalformedPacketError, "n_acc = 1, expected 2"),
        (_header(0x0C, 11, 1) + bytes(28), MalformedPacketError, "n_acc = 1, expected 2"),
        (
            _header(0x04, 100, 5) + bytes(2),
            PacketTooShortError,
            "data packet: 12 bytes, header announces 100 EMG + 5 ACC samples = 240 bytes",
        ),
        (_header(0x04, 100, 5) + bytes(231), MalformedPacketError, "1 trailing bytes"),
        (_header(0x00, 1, 0) + bytes(3), MalformedPacketError, "13 bytes, header announces"),
    ],
)
def test_malformed_data_packets(blob: bytes, error: type[ProtocolError], fragment: str) -> None:
    with pytest.raises(error) as info:
        pr.decode_data_packet(blob)
    assert fragment in str(info.value)


def test_short_packet_at_the_acc_boundaries_is_valid() -> None:
    # §3.4: n_acc = ceil(n_emg / D); 20 EMG at 2000 Hz -> 1 ACC, 21 -> 2, 11 at 1000 Hz -> 2.
    for flags, n_emg, n_acc in [(0x04, 20, 1), (0x04, 21, 2), (0x0C, 11, 2), (0x0C, 10, 1)]:
        p = pr.decode_data_packet(_header(flags, n_emg, n_acc) + bytes(2 * n_emg + 6 * n_acc))
        assert (p.n_emg, p.n_acc) == (n_emg, n_acc)


def test_count_rules_exhaustively() -> None:
    """§3.4 for every layout, n_emg 0..255 and n_acc 0..12: accepted iff the rule holds."""
    for layout in (0x00, 0x04, 0x08, 0x0C):
        at_1000, with_acc = bool(layout & 0x08), bool(layout & 0x04)
        n_max, decim = (50, 10) if at_1000 else (100, 20)
        for n_emg in range(256):
            for n_acc in range(13):
                ok = 1 <= n_emg <= n_max and n_acc == (-(-n_emg // decim) if with_acc else 0)
                blob = _header(layout, n_emg, n_acc) + bytes(2 * n_emg + 6 * n_acc)
                try:
                    p = pr.decode_data_packet(blob)
                except MalformedPacketError:
                    assert not ok, (layout, n_emg, n_acc)
                    continue
                assert ok, (layout, n_emg, n_acc)
                assert p.emg_fs == (1000.0 if at_1000 else 2000.0)


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_protocol_errors(blob: bytes) -> None:
    try:
        p = pr.decode_data_packet(blob)
    except ProtocolError:
        return
    assert pr.encode_data_packet(p) == blob  # anything accepted is canonical


@settings(max_examples=300)
@given(
    packets(),
    st.lists(st.integers(0, 8 * 240 - 1), max_size=4),
    st.integers(-20, 20),
    st.binary(max_size=20),
)
def test_mutated_packets_decode_canonically_or_raise_protocol_errors(
    p: BandPacket, flips: list[int], cut: int, extra: bytes
) -> None:
    raw = bytearray(pr.encode_data_packet(p))
    for bit in flips:
        if bit // 8 < len(raw):
            raw[bit // 8] ^= 1 << (bit % 8)
    blob = bytes(raw[:cut]) if cut < 0 else bytes(raw) + extra[:cut]
    try:
        q = pr.decode_data_packet(blob)
    except ProtocolError:
        return
    assert pr.encode_data_packet(q) == blob


def test_create_sets_layout_flags_and_drops_caller_layout_bits() -> None:
    p = BandPacket.create(
        1, 2, [1, 2], None, emg_fs=1000.0, flags=PacketFlags.LEAD_OFF | PacketFlags.ACC_PRESENT
    )
    assert p.flags == PacketFlags.LEAD_OFF | PacketFlags.EMG_RATE_1000
    assert p.acc.shape == (0, 3)


def _raw(
    *,
    seq: int = 0,
    tick: int = 0,
    flags: int = 0,
    fs: float = 2000.0,
    n_emg: int = 10,
    acc_shape: tuple[int, int] = (0, 3),
    emg_value: int = 0,
) -> BandPacket:
    """A BandPacket built field by field, bypassing :meth:`BandPacket.create`."""
    # int64 on purpose: the encoder must range-check rather than wrap silently.
    emg = cast("NDArray[np.int16]", np.full(n_emg, emg_value, dtype=np.int64))
    return BandPacket(seq, tick, PacketFlags(flags), fs, emg, np.zeros(acc_shape, np.int16))


@pytest.mark.parametrize(
    ("packet", "fragment"),
    [
        (_raw(n_emg=0), "n_emg = 0"),
        (_raw(n_emg=101), "n_emg = 101"),
        (_raw(fs=1500.0), "emg_fs"),
        (_raw(seq=65536), "seq"),
        (_raw(tick=2**32), "tick"),
        (_raw(flags=0x40), "reserved"),
        (_raw(flags=int(PacketFlags.ACC_PRESENT)), "contradict"),
        (_raw(flags=int(PacketFlags.EMG_RATE_1000)), "contradict"),
        (_raw(n_emg=100, acc_shape=(4, 3)), "need 5 ACC"),
        (_raw(acc_shape=(1, 2)), "shapes"),
        (_raw(emg_value=40000), "int16 range"),
        (_raw(emg_value=-32769), "int16 range"),
    ],
)
def test_encoder_rejects_what_the_wire_cannot_carry(packet: BandPacket, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        pr.encode_data_packet(packet)


# ----------------------------------------------------------------------------- wrap helpers


def test_seq_delta_across_the_wrap() -> None:
    assert pr.seq_delta(2, 65535) == 3
    assert pr.seq_delta(65535, 2) == -3
    assert pr.seq_delta(5, 5) == 0
    assert pr.seq_delta(32767, 0) == 32767
    assert pr.seq_delta(32768, 0) == -32768


def test_tick_delta_across_the_wrap() -> None:
    assert pr.tick_delta(1000, 2**32 - 638) == 1638
    assert pr.tick_delta(2**32 - 638, 1000) == -1638
    assert pr.tick_delta(2**31 - 1, 0) == 2**31 - 1
    assert pr.tick_delta(2**31, 0) == -(2**31)


@given(st.integers(0, 65535), st.integers(-32768, 32767))
def test_seq_delta_inverts_modular_addition(old: int, step: int) -> None:
    assert pr.seq_delta((old + step) % 65536, old) == step


@given(st.integers(0, 2**32 - 1), st.integers(-(2**31), 2**31 - 1))
def test_tick_delta_inverts_modular_addition(old: int, step: int) -> None:
    assert pr.tick_delta((old + step) % 2**32, old) == step


def test_wrap_helpers_on_arrays_match_scalars() -> None:
    rng = np.random.default_rng(3)
    new = rng.integers(0, 65536, 50).astype(np.uint16)
    old = rng.integers(0, 65536, 50).astype(np.uint16)
    got = pr.seq_delta(new, old)
    assert got.dtype == np.int64
    assert got.tolist() == [pr.seq_delta(int(a), int(b)) for a, b in zip(new, old, strict=True)]
    ticks = rng.integers(0, 2**32, 50).astype(np.uint32)
    got_t = pr.tick_delta(ticks, 0)
    assert got_t.tolist() == [pr.tick_delta(int(t), 0) for t in ticks]


# ----------------------------------------------------------------------------- scaling


def test_emg_full_scale_matches_the_edf_ranges() -> None:
    q = pr.emg_uv_to_counts([-16384.0, 16383.5, 0.0, 0.5, -0.5])
    assert q.counts.tolist() == [-32768, 32767, 0, 1, -1]
    assert q.counts.dtype == np.int16
    assert q.n_clipped == 0
    assert pr.emg_counts_to_uv(np.array([-32768, 32767], np.int16)).tolist() == [-16384.0, 16383.5]


def test_emg_clipping_is_reported() -> None:
    q = pr.emg_uv_to_counts([16384.0, -16385.0, math.inf, 100.0])
    assert q.counts.tolist() == [32767, -32768, 32767, 200]
    assert q.clipped.tolist() == [True, True, True, False]
    assert q.n_clipped == 3


def test_acc_full_scale_and_clipping() -> None:
    q = pr.acc_g_to_counts([[-32.768, 32.767, 1.0], [0.001, -0.001, 40.0]])
    assert q.counts.tolist() == [[-32768, 32767, 1000], [1, -1, 32767]]
    assert q.clipped.tolist() == [[False, False, False], [False, False, True]]
    assert pr.acc_counts_to_g(np.array([1000, -250], np.int16)).tolist() == [1.0, -0.25]


def test_quantizers_reject_nan() -> None:
    with pytest.raises(ValueError, match="NaN"):
        pr.emg_uv_to_counts([1.0, math.nan])
    with pytest.raises(ValueError, match="NaN"):
        pr.acc_g_to_counts([math.nan])


@given(st.floats(-16384.0, 16383.5))
def test_emg_quantization_error_is_at_most_half_an_lsb(uv: float) -> None:
    q = pr.emg_uv_to_counts(uv)
    assert q.n_clipped == 0
    assert abs(float(pr.emg_counts_to_uv(q.counts)) - uv) <= 0.25


@given(st.integers(-32768, 32767))
def test_acc_counts_survive_a_trip_through_g(counts: int) -> None:
    g = pr.acc_counts_to_g(np.int16(counts))
    assert int(pr.acc_g_to_counts(g).counts) == counts


# ----------------------------------------------------------------------------- status


@given(statuses)
def test_status_round_trip(s: BandStatus) -> None:
    blob = pr.encode_status(s)
    assert len(blob) == 32
    assert pr.decode_status(blob) == s


def test_doc_status_example() -> None:
    s = pr.decode_status(bytes.fromhex(DOC_STATUS))
    assert s == BandStatus(
        battery_pct=87,
        streaming=True,
        time_synced=True,
        emg_fs=2000,
        acc_fs=100,
        firmware=(1, 4, 2),
        uptime_s=3725,
        tick=123456,
        dropped_packets=3,
        sync_host_ms=DOC_SYNC_MS,
    )
    assert s.firmware_version == "1.4.2"
    assert (
        s.flags == pr.StatusFlags.STREAMING | pr.StatusFlags.TIME_SYNCED | pr.StatusFlags.SYNC_REPLY
    )


def _doc_status_with(offset: int, value: int) -> bytes:
    raw = bytearray.fromhex(DOC_STATUS)
    raw[offset] = value
    return bytes(raw)


@pytest.mark.parametrize(
    ("blob", "error", "fragment"),
    [
        (bytes.fromhex(DOC_STATUS)[:31], PacketTooShortError, "31 bytes"),
        (b"", PacketTooShortError, "0 bytes"),
        (bytes.fromhex(DOC_STATUS) + b"\x00", MalformedPacketError, "33 bytes"),
        (_doc_status_with(0, 2), UnsupportedVersionError, "protocol version 2"),
        (_doc_status_with(1, 0xE4), MalformedPacketError, "reserved flag bits"),
        (_doc_status_with(1, 0x24), MalformedPacketError, "SYNC_REPLY flag clear"),
        (_doc_status_with(2, 101), MalformedPacketError, "battery 101"),
        (_doc_status_with(6, 0xDC), MalformedPacketError, "EMG rate 2012 Hz"),
        (_doc_status_with(20, 50), MalformedPacketError, "ACC rate 50 Hz"),
        (_doc_status_with(23, 1), MalformedPacketError, "reserved bytes"),
    ],
)
def test_malformed_status(blob: bytes, error: type[ProtocolError], fragment: str) -> None:
    with pytest.raises(error, match=fragment):
        pr.decode_status(blob)


@settings(max_examples=200)
@given(st.binary(max_size=40))
def test_status_random_bytes_raise_only_protocol_errors(blob: bytes) -> None:
    try:
        s = pr.decode_status(blob)
    except ProtocolError:
        return
    assert pr.encode_status(s) == blob


def test_status_encoder_range_checks() -> None:
    with pytest.raises(ValueError, match="battery"):
        pr.encode_status(BandStatus(battery_pct=101))
    with pytest.raises(ValueError, match="emg_fs"):
        pr.encode_status(BandStatus(battery_pct=50, emg_fs=500))
    with pytest.raises(ValueError, match="tick"):
        pr.encode_status(BandStatus(battery_pct=50, tick=-1))


# ----------------------------------------------------------------------------- control


def test_doc_control_examples() -> None:
    assert pr.encode_control(ControlCommand.START_STREAM) == b"\x01"
    assert pr.encode_control(ControlCommand.STOP_STREAM) == b"\x02"
    sync = bytes.fromhex("03 33 04 69 CF 8F 01 00 00")
    assert pr.encode_control(ControlCommand.TIME_SYNC, unix_ms=DOC_SYNC_MS) == sync
    assert pr.decode_control(sync) == pr.ControlMessage(ControlCommand.TIME_SYNC, DOC_SYNC_MS)
    assert pr.encode_control(ControlCommand.SET_EMG_RATE, emg_fs=1000) == bytes.fromhex("04 E8 03")
    assert pr.decode_control(bytes.fromhex("04 D0 07")).emg_fs == 2000


@given(
    st.sampled_from(list(ControlCommand)),
    st.integers(0, 2**64 - 1),
    st.sampled_from([1000, 2000]),
)
def test_control_round_trip(cmd: ControlCommand, unix_ms: int, fs: int) -> None:
    ms = unix_ms if cmd is ControlCommand.TIME_SYNC else 0
    rate = fs if cmd is ControlCommand.SET_EMG_RATE else None
    msg = pr.decode_control(pr.encode_control(cmd, unix_ms=ms, emg_fs=rate))
    assert msg == pr.ControlMessage(cmd, ms, rate)


@pytest.mark.parametrize(
    ("blob", "error", "fragment"),
    [
        (b"", PacketTooShortError, "empty write"),
        (b"\x00", MalformedPacketError, "unknown opcode 0x00"),
        (b"\x05", MalformedPacketError, "unknown opcode 0x05"),
        (b"\x01\x00", MalformedPacketError, "START_STREAM is 1 bytes, got 2"),
        (bytes.fromhex("03 33 04 69"), PacketTooShortError, "TIME_SYNC is 9 bytes, got 4"),
        (bytes.fromhex("04 E8 03 00"), MalformedPacketError, "SET_EMG_RATE is 3 bytes, got 4"),
        (bytes.fromhex("04 DC 05"), MalformedPacketError, "SET_EMG_RATE 1500 Hz"),
    ],
)
def test_malformed_control(blob: bytes, error: type[ProtocolError], fragment: str) -> None:
    with pytest.raises(error, match=fragment):
        pr.decode_control(blob)


@given(st.binary(max_size=12))
def test_control_random_bytes_raise_only_protocol_errors(blob: bytes) -> None:
    try:
        msg = pr.decode_control(blob)
    except ProtocolError:
        return
    assert pr.encode_control(msg.command, unix_ms=msg.unix_ms, emg_fs=msg.emg_fs) == blob


def test_control_encoder_rejects_misplaced_parameters() -> None:
    with pytest.raises(ValueError, match="takes no unix_ms"):
        pr.encode_control(ControlCommand.START_STREAM, unix_ms=5)
    with pytest.raises(ValueError, match="takes no emg_fs"):
        pr.encode_control(ControlCommand.TIME_SYNC, emg_fs=1000)
    with pytest.raises(ValueError, match="not one of"):
        pr.encode_control(ControlCommand.SET_EMG_RATE, emg_fs=1500)
