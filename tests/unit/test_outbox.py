"""Disk outbox: order, durability across reopen, out-of-order acks, compaction, bound, torn tail."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sensor_gateway.errors import SinkError
from sensor_gateway.outbox import Outbox


def _bodies(box: Outbox) -> list[bytes]:
    return [e.body for e in box.pending()]


def test_entries_come_back_in_order_after_reopen(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    seqs = [box.append(f"m{i}".encode()) for i in range(10)]
    assert seqs == list(range(1, 11))
    box.close()
    again = Outbox(tmp_path)
    assert _bodies(again) == [f"m{i}".encode() for i in range(10)]
    assert again.append(b"next") == 11


def test_acked_entries_stay_gone_after_reopen(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    for i in range(6):
        box.append(bytes([i]))
    for seq in (1, 2, 3):
        box.ack(seq)
    box.close()
    assert _bodies(Outbox(tmp_path)) == [bytes([3]), bytes([4]), bytes([5])]


def test_out_of_order_acks_advance_only_the_contiguous_prefix(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    for i in range(5):
        box.append(bytes([i]))
    box.ack(2)
    box.ack(4)
    assert box.watermark == 1 and len(box) == 5
    box.ack(1)  # 1 and 2 done -> watermark 3
    assert box.watermark == 3
    assert [e.seq for e in box.pending()] == [3, 4, 5]
    box.ack(3)  # 3 and the earlier 4 -> watermark 5
    assert [e.seq for e in box.pending()] == [5]
    box.ack(99)  # unknown: ignored
    box.ack(1)  # already acked: ignored
    assert [e.seq for e in box.pending()] == [5]


def test_segments_are_compacted_once_acked(tmp_path: Path) -> None:
    box = Outbox(tmp_path, segment_bytes=200, max_bytes=10_000)
    seqs = [box.append(b"x" * 50) for _ in range(20)]
    assert len(list(tmp_path.glob("seg-*.log"))) > 5
    for seq in seqs:
        box.ack(seq)
    assert len(box) == 0
    assert len(list(tmp_path.glob("seg-*.log"))) <= 1
    assert box.bytes_used <= 200


def test_full_outbox_refuses_loudly_and_recovers_after_acks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    box = Outbox(tmp_path, max_bytes=1000, segment_bytes=300)
    record = 100  # body 82 + 18 header bytes
    with caplog.at_level(logging.WARNING):
        seqs = [box.append(b"y" * (record - 18)) for _ in range(10)]
        assert any("% full" in r.getMessage() for r in caplog.records)
        with pytest.raises(SinkError, match="full"):
            box.append(b"y" * (record - 18))
    assert box.rejected == 1
    for seq in seqs[:5]:
        box.ack(seq)
    box.append(b"after")  # room again once acked segments are compacted
    assert _bodies(box)[-1] == b"after"


def test_torn_tail_is_cut_and_earlier_entries_survive(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    for i in range(3):
        box.append(f"entry-{i}".encode())
    box.close()
    seg = next(tmp_path.glob("seg-*.log"))
    data = seg.read_bytes()
    seg.write_bytes(data[:-4])  # power loss in the middle of the last append
    again = Outbox(tmp_path)
    assert _bodies(again) == [b"entry-0", b"entry-1"]
    assert again.append(b"entry-3") == 3  # seq of the lost record is reused
    again.close()
    assert _bodies(Outbox(tmp_path)) == [b"entry-0", b"entry-1", b"entry-3"]


def test_corrupt_record_stops_recovery_at_that_point(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    for i in range(3):
        box.append(f"entry-{i}".encode())
    box.close()
    seg = next(tmp_path.glob("seg-*.log"))
    data = bytearray(seg.read_bytes())
    data[-2] ^= 0xFF  # flip a byte of the last body: crc mismatch
    seg.write_bytes(bytes(data))
    assert _bodies(Outbox(tmp_path)) == [b"entry-0", b"entry-1"]


def test_corrupt_ack_file_means_resend_not_loss(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    for i in range(3):
        box.append(bytes([i]))
    box.ack(1)
    box.close()
    (tmp_path / "acked").write_bytes(b"\x00" * 16)
    assert len(Outbox(tmp_path)) == 3  # everything on disk is pending again


def test_invalid_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Outbox(tmp_path, max_bytes=0)
    with pytest.raises(ValueError):
        Outbox(tmp_path, warn_fraction=1.5)
