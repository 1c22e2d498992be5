"""A bounded, ordered, fsync'd on-disk queue of records awaiting acknowledgement.

Used twice: the MQTT sink's outbox (events wait here until the broker PUBACKs
them) and the recorder's InfluxDB spool (batches wait here while InfluxDB is down).

Layout of the directory::

    seg-00000000000000000001.log   records with seq >= 1, append-only
    seg-00000000000000000517.log   the next segment (rolled at segment_bytes)
    acked                          16 bytes: low watermark (u64) + flags + crc32

A record is ``MAGIC(2) | seq(u64) | length(u32) | crc32(u32) | body``.  Every
:meth:`Outbox.append` is written and ``fsync``'d before it returns, so an entry
that was accepted survives a crash.  Acknowledgements may arrive out of order;
the *watermark* (every seq below it is acked) is persisted, and segments wholly
below it are deleted (compaction).  After a restart everything at or above the
watermark is pending again, in order; a few entries acked just before a crash
may come back, which the consumers tolerate (event ids and InfluxDB timestamps
are deterministic, so a re-sent entry overwrites itself).

A torn or corrupt tail (power loss mid-append) is cut off with a warning.  The
outbox is bounded by ``max_bytes``: above ``warn_fraction`` it logs a loud
warning (once, re-armed below half of that), and when full :meth:`append`
raises :class:`~sensor_gateway.errors.SinkError` instead of growing (logged as an
error once per full episode, counted in :attr:`Outbox.rejected`).
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from sensor_gateway.errors import SinkError

__all__ = ["Outbox", "OutboxEntry"]

log = logging.getLogger(__name__)

_MAGIC = b"\xc7\x01"
_HEADER = struct.Struct(">2sQII")
_ACK = struct.Struct(">QII")  # watermark, reserved, crc32 of the first 12 bytes
_MAX_RECORD = 64 * 1024 * 1024


@dataclass(frozen=True)
class OutboxEntry:
    """One pending record: its sequence number and its bytes."""

    seq: int
    body: bytes


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Outbox:
    """Append-only, fsync'd, ordered record queue in ``directory``.

    Parameters
    ----------
    directory
        Created if missing; one outbox per directory (not shared between processes).
    max_bytes
        Bound on the bytes of pending records on disk (headers included).
    segment_bytes
        Roll to a new segment file beyond this size.
    fsync
        ``fsync`` every append and watermark update (turn off only in benchmarks).
    warn_fraction
        Log a warning when this fraction of ``max_bytes`` is in use.
    name
        Used in log messages ("outbox", "influx spool").

    Raises
    ------
    SinkError
        If the directory cannot be created or read.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = 64 * 1024 * 1024,
        segment_bytes: int = 4 * 1024 * 1024,
        fsync: bool = True,
        warn_fraction: float = 0.8,
        name: str = "outbox",
    ) -> None:
        if max_bytes <= 0 or segment_bytes <= 0 or not 0 < warn_fraction <= 1:
            raise ValueError("max_bytes and segment_bytes must be > 0, warn_fraction in (0, 1]")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.warn_fraction = warn_fraction
        self.name = name
        self._pending: deque[OutboxEntry] = deque()
        self._acked_ahead: set[int] = set()  # acked seqs above the watermark
        self._segments: list[tuple[int, Path]] = []  # (first seq, path), ascending
        self._seg_sizes: dict[Path, int] = {}
        self._fh: int | None = None
        self._warned = False
        self._full = False
        self.rejected = 0  # appends refused because full
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._watermark = self._read_watermark()
            self._next_seq = self._recover()
        except OSError as exc:
            raise SinkError(f"{self.name} {self.directory}: {exc.strerror or exc}") from None
        if self._pending:
            log.info("%s %s: %d pending entries recovered", self.name, self.directory,
                     len(self._pending))  # fmt: skip

    # ------------------------------------------------------------ public API

    @property
    def watermark(self) -> int:
        """Every seq below this is acknowledged."""
        return self._watermark

    @property
    def bytes_used(self) -> int:
        """Bytes of segment files on disk (pending records plus not yet compacted ones)."""
        return sum(self._seg_sizes.values())

    def __len__(self) -> int:
        """Number of pending (unacknowledged) entries."""
        return len(self._pending)

    def pending(self) -> list[OutboxEntry]:
        """Unacknowledged entries, oldest first."""
        return list(self._pending)

    def peek(self) -> OutboxEntry | None:
        """The oldest pending entry, or ``None``."""
        return self._pending[0] if self._pending else None

    def append(self, body: bytes) -> int:
        """Write ``body`` durably and return its sequence number.

        Raises
        ------
        SinkError
            If the outbox is full or the disk write fails.
        """
        size = _HEADER.size + len(body)
        if len(body) > _MAX_RECORD:
            raise SinkError(f"{self.name}: record of {len(body)} bytes is too large")
        used = self.bytes_used
        if used + size > self.max_bytes:
            self._compact()
            used = self.bytes_used
        if used + size > self.max_bytes:
            self.rejected += 1
            log.log(logging.DEBUG if self._full else logging.ERROR,
                    "%s %s FULL (%d of %d bytes): entry refused (%d refused so far)",
                    self.name, self.directory, used, self.max_bytes, self.rejected)  # fmt: skip
            self._full = True  # logged once per episode: re-armed by the next append
            raise SinkError(f"{self.name} {self.directory} is full ({used} bytes)")
        seq = self._next_seq
        header = _HEADER.pack(_MAGIC, seq, len(body), zlib.crc32(body))
        try:
            fd, path = self._writable(size)
            os.write(fd, header + body)
            if self.fsync:
                os.fsync(fd)
        except OSError as exc:
            raise SinkError(f"{self.name} {self.directory}: {exc.strerror or exc}") from None
        self._seg_sizes[path] += size
        self._full = False
        self._next_seq += 1
        self._pending.append(OutboxEntry(seq, body))
        self._check_fill()
        return seq

    def ack(self, seq: int) -> None:
        """Mark ``seq`` delivered; advances and persists the watermark when contiguous.

        Unknown or already acknowledged sequence numbers are ignored.
        """
        if seq < self._watermark or seq >= self._next_seq:
            return
        self._acked_ahead.add(seq)
        advanced = False
        while self._pending and self._pending[0].seq in self._acked_ahead:
            self._acked_ahead.discard(self._pending.popleft().seq)
            advanced = True
        if not advanced:
            return
        self._watermark = self._pending[0].seq if self._pending else self._next_seq
        try:
            self._write_watermark()
            self._compact()
        except OSError as exc:
            raise SinkError(f"{self.name} {self.directory}: {exc.strerror or exc}") from None
        self._check_fill()

    def close(self) -> None:
        """Close the open segment (pending entries stay on disk for the next run)."""
        if self._fh is not None:
            os.close(self._fh)
            self._fh = None

    # ------------------------------------------------------------ internals

    def _check_fill(self) -> None:
        used = self.bytes_used
        if not self._warned and used >= self.warn_fraction * self.max_bytes:
            self._warned = True
            log.warning("%s %s is %.0f%% full (%d of %d bytes, %d pending): is the other side "
                        "down?", self.name, self.directory, 100.0 * used / self.max_bytes, used,
                        self.max_bytes, len(self._pending))  # fmt: skip
        elif self._warned and used < 0.5 * self.warn_fraction * self.max_bytes:
            self._warned = False
            log.info("%s %s back to %d bytes", self.name, self.directory, used)

    def _writable(self, size: int) -> tuple[int, Path]:
        if self._segments:
            _first, path = self._segments[-1]
            if self._fh is not None and self._seg_sizes[path] + size <= self.segment_bytes:
                return self._fh, path
            if self._fh is None and self._seg_sizes[path] + size <= self.segment_bytes:
                self._fh = os.open(path, os.O_WRONLY | os.O_APPEND)
                return self._fh, path
        self.close()
        path = self.directory / f"seg-{self._next_seq:020d}.log"
        self._fh = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        if self.fsync:
            _fsync_dir(self.directory)
        self._segments.append((self._next_seq, path))
        self._seg_sizes[path] = 0
        return self._fh, path

    def _compact(self) -> None:
        # A segment can go when the next one starts at or below the watermark
        # (all its records are acked); the newest segment goes only when empty of
        # pending entries and is not the one being written.
        removed = False
        while self._segments:
            _first, path = self._segments[0]
            if len(self._segments) > 1:
                done = self._segments[1][0] <= self._watermark
            else:
                done = (
                    not self._pending
                    and self._next_seq <= self._watermark
                    and (self._seg_sizes[path] >= self.segment_bytes // 2)
                )
                if done:
                    self.close()
            if not done:
                break
            path.unlink(missing_ok=True)
            del self._seg_sizes[path]
            self._segments.pop(0)
            removed = True
        if removed and self.fsync:
            _fsync_dir(self.directory)

    def _read_watermark(self) -> int:
        path = self.directory / "acked"
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return 1
        if len(raw) != _ACK.size:
            log.warning("%s %s: bad ack file, resending everything on disk", self.name,
                        self.directory)  # fmt: skip
            return 1
        mark, _reserved, crc = _ACK.unpack(raw)
        if zlib.crc32(raw[:12]) != crc:
            log.warning("%s %s: corrupt ack file, resending everything on disk", self.name,
                        self.directory)  # fmt: skip
            return 1
        return int(mark)

    def _write_watermark(self) -> None:
        head = struct.pack(">QI", self._watermark, 0)
        raw = head + struct.pack(">I", zlib.crc32(head))
        path = self.directory / "acked"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.pwrite(fd, raw, 0)  # 16 bytes in one sector: atomic in practice
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def _recover(self) -> int:
        segs = []
        for p in self.directory.glob("seg-*.log"):
            try:
                segs.append((int(p.stem[4:]), p))
            except ValueError:
                continue
        segs.sort()
        next_seq = max(self._watermark, 1)
        for first, path in segs:
            data = path.read_bytes()
            pos = 0
            while pos < len(data):
                if len(data) - pos < _HEADER.size:
                    break
                magic, seq, length, crc = _HEADER.unpack_from(data, pos)
                body = data[pos + _HEADER.size : pos + _HEADER.size + length]
                if magic != _MAGIC or len(body) != length or zlib.crc32(body) != crc:
                    break
                if seq >= self._watermark:
                    self._pending.append(OutboxEntry(seq, bytes(body)))
                next_seq = max(next_seq, seq + 1)
                pos += _HEADER.size + length
            if pos < len(data):
                log.warning("%s %s: %s has a torn/corrupt tail at byte %d of %d; cut off",
                            self.name, self.directory, path.name, pos, len(data))  # fmt: skip
                with path.open("r+b") as fh:
                    fh.truncate(pos)
                    os.fsync(fh.fileno())
            self._segments.append((first, path))
            self._seg_sizes[path] = pos
        # records must be strictly ordered; drop anything out of order (corruption)
        ordered: deque[OutboxEntry] = deque()
        for entry in self._pending:
            if not ordered or entry.seq > ordered[-1].seq:
                ordered.append(entry)
        self._pending = ordered
        if self._pending:
            self._watermark = max(self._watermark, self._pending[0].seq)
        else:
            self._watermark = next_seq
        self._next_seq = next_seq  # _compact() reads it
        self._compact()
        return next_seq
