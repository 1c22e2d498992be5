"""Reading and writing recordings: EDF+/BDF+ (via pyedflib) and CSV, in bounded-memory chunks.

Conventions (docs/recordings.md): the EMG channel's label starts with ``EMG``
(at most 16 characters, e.g. ``EMG Gastroc L``), unit ``uV``; the accelerometer
channels are ``ACC X``, ``ACC Y``, ``ACC Z`` in ``g``.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple, TextIO

import numpy as np
from numpy.typing import NDArray

from sensor_gateway.errors import RecordingError


@dataclass(frozen=True)
class ChannelInfo:
    """One signal of a recording as stored in the file."""

    label: str
    unit: str
    fs_hz: float
    n_samples: int


@dataclass(frozen=True)
class Annotation:
    """An EDF+ annotation (TAL): seconds from recording start, optional duration, text."""

    onset_s: float
    duration_s: float | None
    text: str


@dataclass(frozen=True)
class RecordingInfo:
    """What ``crampwatch info`` prints: header facts, no samples."""

    path: Path
    file_format: str  # "EDF+", "EDF", "BDF+", "BDF" or "CSV"
    start: datetime
    duration_s: float
    channels: tuple[ChannelInfo, ...]
    annotations: tuple[Annotation, ...]
    emg: ChannelInfo
    acc: tuple[ChannelInfo, ...]  # () or the three ACC X/Y/Z channels
    emg_scale_to_uv: float | None  # 1.0 for uV, 1000.0 for mV, None for a.u. (no physical unit)


@dataclass(frozen=True)
class SignalChunk:
    """A contiguous piece of a recording.

    ``emg_uv`` holds EMG samples ``start_sample .. start_sample + len - 1`` (µV; NaN marks
    a missing sample, i.e. a gap).  ``acc_g`` holds the accelerometer samples (rows x, y, z
    in g) whose times fall in the same interval: sample ``k`` of the accelerometer is at
    ``k / acc_fs``; the chunk carries acc samples ``ceil(t0 * acc_fs) .. ceil(t1 * acc_fs) - 1``
    for the chunk's time span ``[t0, t1)``.  Shape ``(0, 3)`` when there is no accelerometer.
    """

    start_sample: int
    emg_uv: NDArray[np.float64]
    acc_g: NDArray[np.float64]


# --------------------------------------------------------------------------- constants

#: Annotation text marking samples that were missing when the file was written.
GAP_TEXT = "crampwatch:gap"
#: Annotation text marking accelerometer rows that were missing (EMG present).
ACC_GAP_TEXT = "crampwatch:acc-gap"
#: Annotation text whose onset is the true end of the recording (last record is padded).
END_TEXT = "crampwatch:end"
#: Formats :class:`RecordingWriter` can write.
WRITE_FORMATS = ("EDF+", "BDF+", "CSV")
#: First line of a crampwatch CSV recording.
CSV_MAGIC = "# crampwatch-csv 1"
#: Physical range of the EMG channel (µV) in every written format.
EMG_PHYS_RANGE = (-16384.0, 16383.5)
#: Physical range of the accelerometer channels (g) in every written format.
ACC_PHYS_RANGE = (-32.768, 32.767)
#: Highest EMG rate the writer accepts: EDF+ annotation times have 100 µs resolution,
#: which must stay below half a sample period for gaps and the end to be exact.
MAX_WRITE_FS = 5000
MAX_LABEL_LEN = 16

_EMG_UNITS: dict[str, float | None] = {
    "uV": 1.0,
    "µV": 1.0,  # micro sign U+00B5
    "μV": 1.0,  # greek mu U+03BC
    "mV": 1000.0,
    "V": 1e6,
    "a.u.": None,
    "": None,
}
_ACC_UNITS = {"g": 1.0, "mg": 1e-3}
_ACC_LABELS = ("ACC X", "ACC Y", "ACC Z")
# Digital ranges per format: (emg dmin, emg dmax, acc dmin, acc dmax).  EDF: 0.5 µV and
# 1 mg per LSB; BDF: 1/512 µV and 1/256 mg per LSB over the same physical ranges.
_DIGITAL = {
    "EDF+": (-32768, 32767, -32768, 32767),
    "BDF+": (-8388608, 8388352, -8388608, 8388352),
}
_CSV_BLOCK_BYTES = 1 << 20
_NO_ACC = np.zeros((0, 3), dtype=np.float64)

FloatArray = NDArray[np.float64]


def _fail(path: str | Path, problem: str) -> RecordingError:
    """A :class:`RecordingError` whose one-line message names the file."""
    return RecordingError(f"{path}: {' '.join(problem.split())}")


def _ceil_ratio(n: int, ratio: Fraction) -> int:
    """``ceil(n * ratio)`` exactly."""
    return -((-n * ratio.numerator) // ratio.denominator)


def _runs(mask: NDArray[np.bool_], offset: int) -> list[tuple[int, int]]:
    """Half-open index intervals ``[a, b)`` (shifted by ``offset``) where ``mask`` is true."""
    if not mask.any():
        return []
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.view(np.int8), [0]))))
    starts, ends = edges[0::2] + offset, edges[1::2] + offset
    return [(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


def _add_runs(target: list[tuple[int, int]], runs: list[tuple[int, int]]) -> None:
    """Append sorted runs to ``target``, merging a run that touches the last one."""
    for a, b in runs:
        if target and target[-1][1] == a:
            target[-1] = (target[-1][0], b)
        else:
            target.append((a, b))


def _subtract(
    intervals: list[tuple[int, int]], minus: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """Sorted disjoint ``intervals`` minus sorted disjoint ``minus``."""
    out: list[tuple[int, int]] = []
    j = 0
    for a, b in intervals:
        while j < len(minus) and minus[j][1] <= a:
            j += 1
        k, cur = j, a
        while k < len(minus) and minus[k][0] < b:
            if minus[k][0] > cur:
                out.append((cur, minus[k][0]))
            cur = max(cur, minus[k][1])
            k += 1
        if cur < b:
            out.append((cur, b))
    return out


def _apply_nan(
    x: NDArray[np.float64], lo: int, starts: NDArray[np.int64], ends: NDArray[np.int64]
) -> None:
    """Set ``x[i - lo] = NaN`` for every index ``i`` in the intervals ``[starts, ends)``."""
    hi = lo + x.shape[0]
    first = int(np.searchsorted(ends, lo, side="right"))
    last = int(np.searchsorted(starts, hi, side="left"))
    for a, b in zip(starts[first:last], ends[first:last], strict=True):
        x[max(int(a), lo) - lo : min(int(b), hi) - lo] = np.nan


def _intervals(pairs: list[tuple[int, int]]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Merge overlapping intervals; return sorted start and end arrays."""
    merged: list[tuple[int, int]] = []
    for a, b in sorted(p for p in pairs if p[1] > p[0]):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    arr = np.array(merged, dtype=np.int64).reshape(-1, 2)
    return arr[:, 0].copy(), arr[:, 1].copy()


def _chunk_samples(seconds: float, fs: float) -> int:
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"chunk length must be a positive number of seconds, got {seconds!r}")
    return max(1, round(seconds * fs))


def _integral_rate(value: float, name: str) -> int:
    if not (math.isfinite(value) and value > 0 and float(value).is_integer()):
        raise ValueError(f"{name} must be a positive whole number of Hz, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------- reading


class RecordingReader:
    """An open recording: header facts in :attr:`info`, samples via :meth:`chunks`.

    Returned by :func:`open_recording`.  No file handle is held between calls:
    each :meth:`chunks` iteration opens the file and closes it when the iterator is
    exhausted or closed, so using the reader as a context manager is optional.
    """

    info: RecordingInfo

    def chunks(self, seconds: float = 10.0) -> Iterator[SignalChunk]:
        """Stream the whole recording in order, ``seconds`` of EMG per chunk.

        Parameters
        ----------
        seconds
            Chunk length; every chunk but the last holds ``round(seconds * emg_fs)``
            EMG samples.  Accelerometer rows follow the :class:`SignalChunk` contract.

        Yields
        ------
        SignalChunk
            EMG scaled to µV (unscaled for ``a.u.``), NaN inside gaps; ACC in g.

        Raises
        ------
        RecordingError
            If the file turns out to be unreadable while streaming.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release resources (none are held between :meth:`chunks` calls)."""

    def __enter__(self) -> RecordingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_recording(path: str | Path) -> RecordingReader:
    """Open an EDF/EDF+/BDF/BDF+ or crampwatch CSV recording for reading.

    The format is recognised from the file's first bytes (``0`` for EDF,
    ``\\xffBIOSEMI`` for BDF, ``# crampwatch-csv`` for CSV).

    Parameters
    ----------
    path
        The recording.

    Returns
    -------
    RecordingReader
        With :attr:`RecordingReader.info` filled in.

    Raises
    ------
    RecordingError
        Missing, unreadable, truncated or corrupt file, no EMG channel, or a unit
        crampwatch does not understand; the message names the file.
    """
    p = Path(path)
    try:
        with p.open("rb") as f:
            head = f.read(32)
    except FileNotFoundError:
        raise _fail(p, "no such file") from None
    except OSError as exc:
        raise _fail(p, f"cannot open ({exc.strerror or exc})") from None
    if head.startswith(b"0       ") or head.startswith(b"\xffBIOSEMI"):
        return _EdfRecording(p)
    if head.startswith(b"#") or p.suffix.lower() == ".csv":
        return _CsvRecording(p)
    if not head:
        raise _fail(p, "empty file")
    raise _fail(p, "not an EDF/BDF file or a crampwatch CSV (unknown first bytes)")


@dataclass(frozen=True)
class EdfGeometry:
    """The size fields of an EDF/BDF header, and the file's actual size.

    Attributes
    ----------
    bdf, plus
        24-bit BDF rather than 16-bit EDF; EDF+/BDF+ rather than plain.
    header_bytes
        Bytes before the first data record.
    n_records
        Data records the header announces (-1: the writer was never closed).
    record_bytes
        Bytes per data record.
    file_bytes
        Size of the file.
    """

    bdf: bool
    plus: bool
    header_bytes: int
    n_records: int
    record_bytes: int
    file_bytes: int

    @property
    def complete_records(self) -> int:
        """Whole data records the file holds."""
        body = self.file_bytes - self.header_bytes
        return body // self.record_bytes if self.record_bytes and body > 0 else 0


def edf_geometry(path: Path) -> EdfGeometry:
    """Read the size fields of an EDF/BDF header (no check against the file size).

    Raises
    ------
    RecordingError
        Truncated or non-numeric header, discontinuous EDF+D/BDF+D.
    """
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(256)
        if len(head) < 256:
            raise _fail(path, f"truncated header ({len(head)} of 256 bytes)")
        bdf = head.startswith(b"\xffBIOSEMI")
        try:
            header_bytes = int(head[184:192].decode("ascii"))
            n_records = int(head[236:244].decode("ascii"))
            ns = int(head[252:256].decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise _fail(path, "corrupt header (non-numeric size fields)") from None
        if ns < 0 or header_bytes != 256 * (ns + 1):
            raise _fail(path, f"corrupt header ({ns} signals but {header_bytes} header bytes)")
        if size < header_bytes:
            raise _fail(path, f"truncated header ({size} of {header_bytes} bytes)")
        f.seek(256 + ns * 216)  # label 16, transducer 80, 5 x 8, prefilter 80
        raw = f.read(ns * 8)
        try:
            spr = [int(raw[i * 8 : i * 8 + 8].decode("ascii")) for i in range(ns)]
        except (UnicodeDecodeError, ValueError):
            raise _fail(path, "corrupt header (non-numeric samples per record)") from None
    reserved = head[192:236].decode("ascii", errors="replace")
    if reserved.startswith(("EDF+D", "BDF+D")):
        raise _fail(path, "discontinuous EDF+D/BDF+D files are not supported")
    return EdfGeometry(
        bdf=bdf,
        plus=reserved.startswith(("EDF+", "BDF+")),
        header_bytes=header_bytes,
        n_records=n_records,
        record_bytes=sum(spr) * (3 if bdf else 2),
        file_bytes=size,
    )


def _check_edf_header(path: Path) -> EdfGeometry:
    """:func:`edf_geometry`, verified: the file holds exactly the announced records."""
    g = edf_geometry(path)
    if g.n_records < 0:
        raise _fail(
            path,
            "number of data records is unknown (-1): the writer was not closed "
            f"(`crampwatch repair {path}` keeps the {g.complete_records} whole data records)",
        )
    expected = g.header_bytes + g.n_records * g.record_bytes
    if g.file_bytes < expected:
        raise _fail(
            path,
            f"truncated: the header announces {g.n_records} data records ({expected} bytes) "
            f"but the file has {g.file_bytes} bytes "
            f"(cut inside data record {g.complete_records + 1})",
        )
    if g.file_bytes > expected:
        raise _fail(
            path,
            f"corrupt: {g.file_bytes - expected} unexpected bytes after the last data record",
        )
    return g


def _pyedflib_problem(exc: Exception, path: Path) -> str:
    """pyedflib's error text without the path it repeats."""
    text = str(exc).replace(str(path), "").strip(" :")
    return text or type(exc).__name__


def _emg_scale(path: Path, label: str, unit: str) -> float | None:
    if unit not in _EMG_UNITS:
        raise _fail(
            path,
            f"EMG channel {label!r} has unit {unit!r}; expected uV, µV, mV, V or a.u.",
        )
    return _EMG_UNITS[unit]


class _EdfRecording(RecordingReader):
    """EDF/EDF+/BDF/BDF+ via pyedflib, read with ``readSignal(start, n)``."""

    def __init__(self, path: Path, extra: tuple[Annotation, ...] = ()) -> None:
        """Open ``path``; ``extra`` annotations count as if the file held them."""
        import pyedflib  # noqa: PLC0415 (keep import of the module light)

        self._path = path
        layout = _check_edf_header(path)
        try:
            reader = pyedflib.EdfReader(str(path))
        except (OSError, ValueError) as exc:
            raise _fail(
                path, f"not a readable EDF/BDF file ({_pyedflib_problem(exc, path)})"
            ) from None
        try:
            n = reader.signals_in_file
            labels = [str(x).strip() for x in reader.getSignalLabels()]
            units = [str(reader.getPhysicalDimension(i)).strip() for i in range(n)]
            rates = [float(reader.getSampleFrequency(i)) for i in range(n)]
            counts = [int(c) for c in reader.getNSamples()]
            start = reader.getStartdatetime()
            additional = str(reader.getRecordingAdditional())
            notes: tuple[Any, Any, Any] = reader.readAnnotations() if layout.plus else ([], [], [])
        except (OSError, ValueError) as exc:
            raise _fail(path, f"corrupt EDF/BDF file ({_pyedflib_problem(exc, path)})") from None
        finally:
            reader.close()
        if "crampwatch_tz=UTC" in additional.split():
            start = start.replace(tzinfo=UTC)

        emg_i = next((i for i, lab in enumerate(labels) if lab.startswith("EMG")), None)
        if emg_i is None:
            raise _fail(path, f"no EMG channel (labels: {', '.join(labels) or 'none'})")
        self._emg_scale = _emg_scale(path, labels[emg_i], units[emg_i])
        acc_idx = [labels.index(lab) for lab in _ACC_LABELS if lab in labels]
        if acc_idx and len(acc_idx) != 3:
            raise _fail(path, "ACC channels incomplete: need all of ACC X, ACC Y, ACC Z or none")
        acc_units = {units[i] for i in acc_idx}
        if len(acc_units) > 1:
            raise _fail(path, f"ACC channels have mixed units {sorted(acc_units)}")
        self._acc_factor = 1.0
        if acc_idx:
            (unit,) = acc_units
            if unit not in _ACC_UNITS:
                raise _fail(path, f"ACC channels have unit {unit!r}; expected g or mg")
            self._acc_factor = _ACC_UNITS[unit]
            if len({rates[i] for i in acc_idx}) != 1 or len({counts[i] for i in acc_idx}) != 1:
                raise _fail(path, "ACC X/Y/Z differ in rate or sample count")

        annotations = [
            Annotation(float(o), None if float(d) < 0 else float(d), str(t))
            for o, d, t in zip(*notes, strict=True)
        ] + list(extra)
        emg_fs = rates[emg_i]
        n_emg = counts[emg_i]
        ends = [a for a in annotations if a.text == END_TEXT]
        if ends:
            true_n = round(ends[-1].onset_s * emg_fs)
            if not 0 <= true_n <= n_emg:
                raise _fail(path, f"{END_TEXT} at {ends[-1].onset_s} s lies beyond the data")
            n_emg = true_n
        self._n_emg = n_emg
        self._emg_i = emg_i
        self._acc_idx = acc_idx
        self._emg_fs = emg_fs

        gaps = [
            (round(a.onset_s * emg_fs), round((a.onset_s + (a.duration_s or 0.0)) * emg_fs))
            for a in annotations
            if a.text == GAP_TEXT
        ]
        self._gap_starts, self._gap_ends = _intervals(gaps)
        channels = [
            ChannelInfo(lab, unit, fs, c)
            for lab, unit, fs, c in zip(labels, units, rates, counts, strict=True)
        ]
        channels[emg_i] = ChannelInfo(labels[emg_i], units[emg_i], emg_fs, n_emg)
        acc_infos: tuple[ChannelInfo, ...] = ()
        self._acc_fs: float | None = None
        self._n_acc_file = 0
        if acc_idx:
            acc_fs = rates[acc_idx[0]]
            self._acc_fs = acc_fs
            self._ratio = Fraction(acc_fs) / Fraction(emg_fs)
            self._n_acc_file = counts[acc_idx[0]]
            n_acc = _ceil_ratio(n_emg, self._ratio)
            for i in acc_idx:
                channels[i] = ChannelInfo(labels[i], units[i], acc_fs, n_acc)
            acc_infos = tuple(channels[i] for i in acc_idx)
            acc_gaps = [
                (_ceil_ratio(a, self._ratio), _ceil_ratio(b, self._ratio)) for a, b in gaps
            ] + [
                (round(a.onset_s * acc_fs), round((a.onset_s + (a.duration_s or 0.0)) * acc_fs))
                for a in annotations
                if a.text == ACC_GAP_TEXT
            ]
            self._acc_gap_starts, self._acc_gap_ends = _intervals(acc_gaps)
        kind = ("BDF" if layout.bdf else "EDF") + ("+" if layout.plus else "")
        self.info = RecordingInfo(
            path=path,
            file_format=kind,
            start=start,
            duration_s=n_emg / emg_fs,
            channels=tuple(channels),
            annotations=tuple(
                sorted((a for a in annotations if a.text != END_TEXT), key=lambda a: a.onset_s)
            ),
            emg=channels[emg_i],
            acc=acc_infos,
            emg_scale_to_uv=self._emg_scale,
        )

    def chunks(self, seconds: float = 10.0) -> Iterator[SignalChunk]:
        """Stream the recording; see :meth:`RecordingReader.chunks`."""
        import pyedflib  # noqa: PLC0415

        step = _chunk_samples(seconds, self._emg_fs)
        try:
            reader = pyedflib.EdfReader(str(self._path))
        except (OSError, ValueError) as exc:
            raise _fail(
                self._path, f"cannot reopen ({_pyedflib_problem(exc, self._path)})"
            ) from None
        try:
            for s0 in range(0, self._n_emg, step):
                s1 = min(s0 + step, self._n_emg)
                emg = np.asarray(reader.readSignal(self._emg_i, s0, s1 - s0), dtype=np.float64)
                if emg.shape[0] != s1 - s0:
                    raise _fail(self._path, f"short read at EMG sample {s0}")
                if self._emg_scale is not None and self._emg_scale != 1.0:
                    emg *= self._emg_scale
                _apply_nan(emg, s0, self._gap_starts, self._gap_ends)
                acc = _NO_ACC
                if self._acc_idx:
                    k0, k1 = _ceil_ratio(s0, self._ratio), _ceil_ratio(s1, self._ratio)
                    acc = np.full((k1 - k0, 3), np.nan)
                    avail = max(0, min(k1, self._n_acc_file) - k0)
                    if avail:
                        for col, ch in enumerate(self._acc_idx):
                            acc[:avail, col] = reader.readSignal(ch, k0, avail)
                        acc[:avail] *= self._acc_factor
                    _apply_nan(acc, k0, self._acc_gap_starts, self._acc_gap_ends)
                yield SignalChunk(s0, emg, acc)
        finally:
            reader.close()


class _CsvHeader(NamedTuple):
    start: datetime
    emg_fs: int
    acc_fs: int | None
    emg_label: str
    data_offset: int


def _parse_csv_header(path: Path) -> _CsvHeader:
    meta: dict[str, str] = {}
    offset = 0
    with path.open("rb") as f:
        first = f.readline(4096)
        offset += len(first)
        if first.decode("utf-8", errors="replace").strip() != CSV_MAGIC:
            raise _fail(path, f"not a crampwatch CSV (first line must be {CSV_MAGIC!r})")
        while True:
            raw = f.readline(4096)
            offset += len(raw)
            if not raw:
                raise _fail(path, "malformed CSV: no column header row")
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise _fail(path, "malformed CSV: header is not UTF-8") from None
            if not line.startswith("#"):
                break
            key, eq, value = line[1:].strip().partition("=")
            if eq:
                meta[key.strip()] = value.strip()
    try:
        start = datetime.fromisoformat(meta["start"])
        emg_fs = int(meta["emg_fs"])
        acc_fs = int(meta["acc_fs"]) if "acc_fs" in meta else None
    except KeyError as exc:
        raise _fail(path, f"malformed CSV header: missing '# {exc.args[0]}=...'") from None
    except ValueError as exc:
        raise _fail(path, f"malformed CSV header ({exc})") from None
    if emg_fs <= 0 or (acc_fs is not None and not 0 < acc_fs <= emg_fs):
        raise _fail(path, "malformed CSV header: need emg_fs > 0 and 0 < acc_fs <= emg_fs")
    columns = [c.strip() for c in line.split(",")]
    want = ["t_s", "emg_uv"] + (["acc_x_g", "acc_y_g", "acc_z_g"] if acc_fs else [])
    if columns != want:
        raise _fail(path, f"malformed CSV: column header {line!r}, expected {','.join(want)!r}")
    label = meta.get("emg_label", "EMG")
    return _CsvHeader(start, emg_fs, acc_fs, label, offset)


_CSV_TRAILER = re.compile(rb"(?m)^#[^\n]*")
_CSV_BLANK = re.compile(rb"(?m)^[ \t\r]*\n")
_CSV_EMPTY_CELL = re.compile(r"(?m)(?<=,)(?=,|\r?$)")


def _parse_annotation_line(path: Path, line: str) -> Annotation | None:
    body = line.lstrip("#").strip()
    if not body.startswith("annotation="):
        return None
    parts = body[len("annotation=") :].split(",", 2)
    try:
        onset = float(parts[0])
        duration = float(parts[1]) if parts[1].strip() else None
        text = parts[2]
    except (IndexError, ValueError):
        raise _fail(path, f"malformed CSV annotation line {line!r}") from None
    return Annotation(onset, duration, text)


class _CsvRecording(RecordingReader):
    """crampwatch CSV (docs/recordings.md), parsed in blocks of about 1 MiB."""

    def __init__(self, path: Path) -> None:
        self._path = path
        try:
            self._head = head = _parse_csv_header(path)
            n_lines, comments, blanks = self._scan(head.data_offset)
        except OSError as exc:
            raise _fail(path, f"cannot read ({exc.strerror or exc})") from None
        annotations = []
        for raw in comments:
            ann = _parse_annotation_line(path, raw.decode("utf-8", errors="replace"))
            if ann is not None:
                annotations.append(ann)
        self._n = n = n_lines - len(comments) - blanks
        emg = ChannelInfo(head.emg_label, "uV", float(head.emg_fs), n)
        acc: tuple[ChannelInfo, ...] = ()
        if head.acc_fs is not None:
            self._ratio = Fraction(head.acc_fs, head.emg_fs)
            n_acc = _ceil_ratio(n, self._ratio)
            acc = tuple(ChannelInfo(lab, "g", float(head.acc_fs), n_acc) for lab in _ACC_LABELS)
        self.info = RecordingInfo(
            path=path,
            file_format="CSV",
            start=head.start,
            duration_s=n / head.emg_fs,
            channels=(emg, *acc),
            annotations=tuple(sorted(annotations, key=lambda a: a.onset_s)),
            emg=emg,
            acc=acc,
            emg_scale_to_uv=1.0,
        )

    def _scan(self, offset: int) -> tuple[int, list[bytes], int]:
        """Count lines, trailer/comment lines and blank lines after the column header."""
        n_lines, blanks = 0, 0
        comments: list[bytes] = []
        carry = b""
        with self._path.open("rb") as f:
            f.seek(offset)
            while block := f.read(_CSV_BLOCK_BYTES):
                buf = carry + block
                cut = buf.rfind(b"\n") + 1
                whole, carry = buf[:cut], buf[cut:]
                n_lines += whole.count(b"\n")
                if b"#" in whole:
                    comments.extend(m.group() for m in _CSV_TRAILER.finditer(whole))
                blanks += len(_CSV_BLANK.findall(whole))
        if carry.strip():
            n_lines += 1
            if carry.startswith(b"#"):
                comments.append(carry)
        return n_lines, comments, blanks

    def _parse_block(
        self, text: str, row0: int
    ) -> tuple[FloatArray, FloatArray, NDArray[np.bool_]]:
        """Rows of one block → (emg, acc rows with NaN, has-acc mask); validates times."""
        head = self._head
        ncols = 2 if head.acc_fs is None else 5
        text = _CSV_EMPTY_CELL.sub("nan", text)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                data = np.loadtxt(io.StringIO(text), delimiter=",", ndmin=2, comments="#")
        except ValueError as exc:
            raise _fail(self._path, f"malformed CSV near data row {row0 + 1}: {exc}") from None
        if data.shape[0] == 0:
            return np.empty(0), np.empty((0, 3)), np.zeros(0, dtype=bool)
        if data.shape[1] != ncols:
            raise _fail(
                self._path,
                f"malformed CSV near data row {row0 + 1}: "
                f"{data.shape[1]} columns, expected {ncols}",
            )
        rows = np.arange(row0, row0 + data.shape[0], dtype=np.int64)
        bad = ~(np.abs(data[:, 0] - rows / head.emg_fs) <= 0.5 / head.emg_fs)
        if bad.any():
            i = int(np.argmax(bad))
            raise _fail(
                self._path,
                f"malformed CSV: data row {row0 + i + 1} has t_s={data[i, 0]!r}, "
                f"expected {(row0 + i) / head.emg_fs} (missing or extra rows?)",
            )
        if head.acc_fs is None:
            return data[:, 1].copy(), np.empty((0, 3)), np.zeros(rows.size, dtype=bool)
        num, den = self._ratio.numerator, self._ratio.denominator
        has_acc = (-((-(rows + 1) * num) // den)) > (-((-rows * num) // den))
        stray = ~has_acc & ~np.isnan(data[:, 2:5]).all(axis=1)
        if stray.any():
            i = int(np.argmax(stray))
            raise _fail(
                self._path,
                f"malformed CSV: data row {row0 + i + 1} has ACC values but no ACC sample "
                "falls on it",
            )
        acc = data[:, 2:5].copy()
        acc[np.isnan(data[:, 1])] = np.nan  # an ACC row inside an EMG gap is part of the gap
        return data[:, 1].copy(), acc, has_acc

    def chunks(self, seconds: float = 10.0) -> Iterator[SignalChunk]:
        """Stream the recording; see :meth:`RecordingReader.chunks`."""
        step = _chunk_samples(seconds, self._head.emg_fs)
        emg: FloatArray = np.empty(0)
        acc_rows: FloatArray = np.empty((0, 3))
        mask: NDArray[np.bool_] = np.zeros(0, dtype=bool)
        pos = parsed = emitted = 0
        try:
            f = self._path.open("rb")
        except OSError as exc:
            raise _fail(self._path, f"cannot read ({exc.strerror or exc})") from None
        with f:
            f.seek(self._head.data_offset)
            eof = False
            while True:
                if not eof and emg.size - pos < step:
                    lines = f.readlines(_CSV_BLOCK_BYTES)
                    if not lines:
                        eof = True
                        continue
                    try:
                        text = b"".join(lines).decode("utf-8")
                    except UnicodeDecodeError:
                        raise _fail(
                            self._path, f"malformed CSV near data row {parsed + 1}: not UTF-8"
                        ) from None
                    e, a, m = self._parse_block(text, parsed)
                    parsed += e.size
                    emg = np.concatenate((emg[pos:], e))
                    acc_rows = np.concatenate((acc_rows[pos:], a)) if self._head.acc_fs else a
                    mask = np.concatenate((mask[pos:], m))
                    pos = 0
                    continue
                take = min(step, emg.size - pos)
                if take == 0:
                    break
                part = slice(pos, pos + take)
                acc = acc_rows[part][mask[part]] if self._head.acc_fs else _NO_ACC
                yield SignalChunk(emitted, emg[part].copy(), np.ascontiguousarray(acc))
                emitted += take
                pos += take
        if emitted != self._n:
            raise _fail(
                self._path, f"CSV changed while reading: {emitted} data rows, expected {self._n}"
            )


# --------------------------------------------------------------------------- writing


class RecordingWriter:
    """Write a recording (EDF+, BDF+ or CSV) from :class:`SignalChunk` s of any size.

    Samples are buffered to whole 1-s data records.  On :meth:`close` the last,
    partial record is padded with zeros and an annotation ``crampwatch:end`` at the
    true end is written, so reading back gives exactly the samples written.  NaN EMG
    samples are written as 0 and covered by merged ``crampwatch:gap`` annotations
    (CSV: empty cells); NaN accelerometer rows outside EMG gaps get
    ``crampwatch:acc-gap`` annotations.  EDF+/BDF+ annotations are only written on
    close, so until then each gap and annotation is also appended to a journal next
    to the file (``<file>.journal``, removed on close), from which
    :func:`restore_journal` puts them back after a crash.  Values outside the
    physical ranges (EMG −16384…16383.5 µV, ACC −32.768…32.767 g) are clipped and
    counted in :attr:`clipped_emg` / :attr:`clipped_acc`.

    Parameters
    ----------
    path
        File to create (overwritten if it exists).
    emg_fs
        EMG rate, a whole number of Hz up to 5000 (a float such as ``2000.0`` is accepted).
    acc_fs
        Accelerometer rate (whole Hz, at most ``emg_fs``) or ``None`` for no accelerometer.
    start
        Wall-clock time of the first sample.  EDF/BDF store whole seconds; an aware
        time is stored as UTC and read back aware.
    emg_label
        Label of the EMG channel: starts with ``EMG``, at most 16 ASCII characters.
    file_format
        ``"EDF+"``, ``"BDF+"`` or ``"CSV"``.

    Raises
    ------
    ValueError
        Invalid rate, label or format.
    RecordingError
        The file cannot be created or written.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        emg_fs: float,
        acc_fs: float | None,
        start: datetime,
        emg_label: str = "EMG Gastroc L",
        file_format: str = "EDF+",
    ) -> None:
        if file_format not in WRITE_FORMATS:
            raise ValueError(f"file_format must be one of {WRITE_FORMATS}, got {file_format!r}")
        self.path = Path(path)
        self.file_format = file_format
        self.emg_fs = _integral_rate(emg_fs, "emg_fs")
        if self.emg_fs > MAX_WRITE_FS:
            raise ValueError(f"emg_fs must be at most {MAX_WRITE_FS} Hz, got {emg_fs!r}")
        self.acc_fs = None if acc_fs is None else _integral_rate(acc_fs, "acc_fs")
        if self.acc_fs is not None and self.acc_fs > self.emg_fs:
            raise ValueError(f"acc_fs ({acc_fs}) must not exceed emg_fs ({emg_fs})")
        if not (
            emg_label.startswith("EMG")
            and len(emg_label) <= MAX_LABEL_LEN
            and emg_label.isascii()
            and emg_label.isprintable()
            and emg_label == emg_label.strip()
        ):
            raise ValueError(
                f"emg_label must start with 'EMG' and be at most {MAX_LABEL_LEN} printable "
                f"ASCII characters, got {emg_label!r}"
            )
        self.emg_label = emg_label
        self.start = start
        self._ratio = Fraction(self.acc_fs or 0, self.emg_fs)
        self.clipped_emg = 0
        self.clipped_acc = 0
        self._n_emg = 0  # EMG samples received
        self._n_acc = 0  # ACC rows received (after dropping late ones)
        self._acc_debt = 0  # ACC rows filled with NaN because they came too late
        self._emg_buf: list[FloatArray] = []
        self._acc_buf: list[FloatArray] = []
        self._records = 0
        self._gaps: list[tuple[int, int]] = []
        self._acc_gaps: list[tuple[int, int]] = []
        self._annotations: list[Annotation] = []
        self._closed = False
        self._backend: _EdfBackend | _CsvBackend
        self._journal: TextIO | None = None
        self._journal_path: Path | None = None
        if file_format == "CSV":
            self._backend = _CsvBackend(self)
        else:
            self._backend = _EdfBackend(self)
            self._journal_path = journal_path(self.path)
            self._journal_path.unlink(missing_ok=True)  # a crashed run's, for a file now gone

    @property
    def clipped(self) -> int:
        """Number of values (EMG samples plus ACC values) clipped to the physical range."""
        return self.clipped_emg + self.clipped_acc

    @property
    def n_samples(self) -> int:
        """EMG samples written so far."""
        return self._n_emg

    def write(self, chunk: SignalChunk) -> None:
        """Append a chunk; its ``start_sample`` must continue the previous chunk.

        Parameters
        ----------
        chunk
            EMG in µV (NaN = missing) and the ACC rows of the chunk's span in g.

        Raises
        ------
        RecordingError
            Out-of-order chunk, writer closed, or a write failed.
        """
        if self._closed:
            raise _fail(self.path, "write after close")
        if chunk.start_sample != self._n_emg:
            raise _fail(
                self.path,
                f"chunk starts at sample {chunk.start_sample}, expected {self._n_emg}",
            )
        emg = np.asarray(chunk.emg_uv, dtype=np.float64).ravel()
        runs = _runs(np.isnan(emg), self._n_emg)
        _add_runs(self._gaps, runs)
        for a, b in runs:
            self._journal_note(Annotation(a / self.emg_fs, (b - a) / self.emg_fs, GAP_TEXT))
        lo, hi = EMG_PHYS_RANGE
        self.clipped_emg += int(np.count_nonzero((emg < lo) | (emg > hi)))
        self._emg_buf.append(np.clip(emg, lo, hi))  # NaN stays NaN
        self._n_emg += emg.size
        if self.acc_fs is not None:
            acc = np.asarray(chunk.acc_g, dtype=np.float64).reshape(-1, 3)
            drop = min(self._acc_debt, acc.shape[0])
            self._acc_debt -= drop
            self._push_acc(acc[drop:])
        self._flush(final=False)

    def _push_acc(self, acc: FloatArray) -> None:
        runs = _runs(np.asarray(np.isnan(acc).any(axis=1)), self._n_acc)
        _add_runs(self._acc_gaps, runs)
        afs = self.acc_fs or 1
        for a, b in runs:
            self._journal_note(Annotation(a / afs, (b - a) / afs, ACC_GAP_TEXT))
        lo, hi = ACC_PHYS_RANGE
        self.clipped_acc += int(np.count_nonzero((acc < lo) | (acc > hi)))
        self._acc_buf.append(np.clip(acc, lo, hi))
        self._n_acc += acc.shape[0]

    def annotate(self, onset_s: float, duration_s: float | None, text: str) -> None:
        """Add an annotation (seconds from the first sample; ``None`` = no duration)."""
        if self._closed:
            raise _fail(self.path, "annotate after close")
        note = Annotation(float(onset_s), duration_s, text)
        self._annotations.append(note)
        self._journal_note(note)

    def _journal_note(self, note: Annotation) -> None:
        """Append ``note`` to the journal (EDF+/BDF+), flushed: it survives the process."""
        if self._journal_path is None:
            return
        try:
            if self._journal is None:
                self._journal = self._journal_path.open("w", encoding="utf-8")
            self._journal.write(json.dumps([note.onset_s, note.duration_s, note.text]) + "\n")
            self._journal.flush()
        except OSError as exc:
            raise _fail(self.path, f"cannot write its journal ({exc.strerror or exc})") from None

    def _flush(self, *, final: bool) -> None:
        """Hand whole 1-s records (and, when ``final``, the rest) to the backend."""
        efs, afs = self.emg_fs, self.acc_fs or 0
        emg = np.concatenate(self._emg_buf) if self._emg_buf else np.empty(0)
        if self.acc_fs is not None and emg.size >= 2 * efs:
            have = sum(a.shape[0] for a in self._acc_buf)
            short = (emg.size // efs - 1) * afs - have
            if short > 0:  # ACC lags by more than a record: fill with NaN, drop late rows
                self._acc_debt += short
                self._push_acc(np.full((short, 3), np.nan))
        acc = np.concatenate(self._acc_buf) if self._acc_buf else np.empty((0, 3))
        e = a = 0
        while emg.size - e >= efs and acc.shape[0] - a >= afs:
            self._backend.write_record(emg[e : e + efs], acc[a : a + afs])
            self._records += 1
            e, a = e + efs, a + afs
        if final:
            want_acc = _ceil_ratio(self._n_emg, self._ratio) - self._records * afs
            have = acc.shape[0] - a
            if have < want_acc:
                self._push_acc(np.full((want_acc - have, 3), np.nan))
                acc = np.concatenate(self._acc_buf)
            if emg.size > e or self._records == 0:
                self._backend.write_last(emg[e:], acc[a : a + want_acc])
                self._records += 1
            e, a = emg.size, acc.shape[0]
        self._emg_buf, self._acc_buf = [emg[e:]], [acc[a:]]

    def close(self) -> None:
        """Flush the last partial record, write annotations and close the file.

        Raises
        ------
        RecordingError
            If the file cannot be completed.
        """
        if self._closed:
            return
        self._closed = True
        self._flush(final=True)
        acc_gaps: list[tuple[int, int]] = []
        if self.acc_fs is not None:
            limit = _ceil_ratio(self._n_emg, self._ratio)
            covered = [
                (_ceil_ratio(a, self._ratio), _ceil_ratio(b, self._ratio)) for a, b in self._gaps
            ]
            acc_gaps = [
                (a, min(b, limit)) for a, b in _subtract(self._acc_gaps, covered) if a < limit
            ]
        self._backend.finish(self._gaps, acc_gaps, self._annotations, self._records)
        if self._journal is not None:
            self._journal.close()
        if self._journal_path is not None:
            self._journal_path.unlink(missing_ok=True)

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _EdfBackend:
    """EDF+/BDF+ through pyedflib, digital samples written record by record."""

    def __init__(self, w: RecordingWriter) -> None:
        import pyedflib  # noqa: PLC0415

        self._w = w
        dmin_e, dmax_e, dmin_a, dmax_a = _DIGITAL[w.file_format]
        self._emg_lsb = (EMG_PHYS_RANGE[1] - EMG_PHYS_RANGE[0]) / (dmax_e - dmin_e)
        self._acc_lsb = (ACC_PHYS_RANGE[1] - ACC_PHYS_RANGE[0]) / (dmax_a - dmin_a)
        self._dig = (dmin_e, dmax_e, dmin_a, dmax_a)
        self._headers = [
            self._header(w.emg_label, "uV", w.emg_fs, EMG_PHYS_RANGE, dmin=dmin_e, dmax=dmax_e)
        ]
        if w.acc_fs is not None:
            self._headers += [
                self._header(lab, "g", w.acc_fs, ACC_PHYS_RANGE, dmin=dmin_a, dmax=dmax_a)
                for lab in _ACC_LABELS
            ]
        self._file_type = (
            pyedflib.FILETYPE_BDFPLUS if w.file_format == "BDF+" else pyedflib.FILETYPE_EDFPLUS
        )
        self._writer = self._open(w.path, n_annotation_signals=1)

    @staticmethod
    def _header(
        label: str, unit: str, fs: int, rng: tuple[float, float], *, dmin: int, dmax: int
    ) -> dict[str, str | int | float | None]:
        return {
            "label": label,
            "dimension": unit,
            "sample_frequency": fs,
            "physical_min": rng[0],
            "physical_max": rng[1],
            "digital_min": dmin,
            "digital_max": dmax,
            "prefilter": "",
            "transducer": "",
        }

    def _open(self, path: Path, *, n_annotation_signals: int) -> Any:
        import pyedflib  # noqa: PLC0415

        w = self._w
        start = w.start
        aware = start.tzinfo is not None and start.utcoffset() is not None
        if aware:
            start = start.astimezone(UTC).replace(tzinfo=None)
        try:
            writer = pyedflib.EdfWriter(str(path), len(self._headers), file_type=self._file_type)
            writer.setSignalHeaders(self._headers)
            writer.setStartdatetime(start.replace(microsecond=0))
            writer.setEquipment("crampwatch")
            if aware:
                writer.setRecordingAdditional("crampwatch_tz=UTC")
            writer.set_number_of_annotation_signals(n_annotation_signals)
        except (OSError, ValueError, TypeError) as exc:
            raise _fail(
                path, f"cannot create {w.file_format} file ({_pyedflib_problem(exc, path)})"
            ) from None
        return writer

    def _digital(self, emg: FloatArray, acc: FloatArray) -> NDArray[np.int32]:
        dmin_e, dmax_e, dmin_a, dmax_a = self._dig
        emg = np.nan_to_num(emg, nan=0.0)
        acc = np.nan_to_num(acc, nan=0.0)
        parts = [np.clip(np.rint(emg / self._emg_lsb), dmin_e, dmax_e)]
        if self._w.acc_fs is not None:
            d = np.clip(np.rint(acc / self._acc_lsb), dmin_a, dmax_a)
            parts += [d[:, 0], d[:, 1], d[:, 2]]
        return np.concatenate(parts).astype(np.int32)

    def _block(self, writer: Any, data: NDArray[np.int32], path: Path) -> None:
        if writer.blockWriteDigitalSamples(np.ascontiguousarray(data)) < 0:
            raise _fail(path, "writing a data record failed (disk full?)")

    def write_record(self, emg: FloatArray, acc: FloatArray) -> None:
        self._block(self._writer, self._digital(emg, acc), self._w.path)

    def write_last(self, emg: FloatArray, acc: FloatArray) -> None:
        w = self._w
        full_emg = np.zeros(w.emg_fs)
        full_emg[: emg.size] = emg
        full_acc = np.zeros((w.acc_fs or 0, 3))
        full_acc[: acc.shape[0]] = acc
        self.write_record(full_emg, full_acc)

    def finish(
        self,
        gaps: list[tuple[int, int]],
        acc_gaps: list[tuple[int, int]],
        annotations: list[Annotation],
        n_records: int,
    ) -> None:
        w = self._w
        notes = [Annotation(a / w.emg_fs, (b - a) / w.emg_fs, GAP_TEXT) for a, b in gaps]
        if w.acc_fs is not None:
            notes += [
                Annotation(a / w.acc_fs, (b - a) / w.acc_fs, ACC_GAP_TEXT) for a, b in acc_gaps
            ]
        notes = sorted(notes + annotations, key=lambda a: a.onset_s)
        notes.append(Annotation(w.n_samples / w.emg_fs, None, END_TEXT))
        needed = math.ceil(len(notes) / max(n_records, 1))
        if needed > 64:
            self._writer.close()
            raise _fail(
                w.path,
                f"{len(notes)} annotations do not fit in {n_records} data records",
            )
        if needed > 1:
            self._writer.close()
            self._rewrite(needed, n_records)
        for a in notes:
            d = -1.0 if a.duration_s is None else a.duration_s
            self._writer.writeAnnotation(a.onset_s, d, a.text)
        self._writer.close()

    def _rewrite(self, n_annotation_signals: int, n_records: int) -> None:
        """Copy the data records into a file with more annotation signals (rare: short files)."""
        import pyedflib  # noqa: PLC0415

        w = self._w
        tmp = w.path.with_name(w.path.name + ".tmp")
        w.path.replace(tmp)
        self._writer = self._open(w.path, n_annotation_signals=n_annotation_signals)
        reader = pyedflib.EdfReader(str(tmp))
        try:
            rates = [w.emg_fs] + [w.acc_fs or 0] * (len(self._headers) - 1)
            batch = 60
            for r0 in range(0, n_records, batch):
                r1 = min(r0 + batch, n_records)
                sigs = [
                    reader.readSignal(i, r0 * fs, (r1 - r0) * fs, digital=True).astype(np.int32)
                    for i, fs in enumerate(rates)
                ]
                for r in range(r1 - r0):
                    rec = np.concatenate(
                        [s[r * fs : (r + 1) * fs] for s, fs in zip(sigs, rates, strict=True)]
                    )
                    self._block(self._writer, rec, w.path)
        finally:
            reader.close()
            tmp.unlink()


def _fmt(values: FloatArray, spec: str) -> NDArray[np.str_]:
    """Format floats with ``spec``; NaN becomes an empty cell."""
    text = np.char.mod(spec, values)
    return np.where(np.isnan(values), "", text)


class _CsvBackend:
    """crampwatch CSV: one row per EMG sample, ACC on the row its time falls in."""

    def __init__(self, w: RecordingWriter) -> None:
        self._w = w
        lines = [
            CSV_MAGIC,
            f"# start={w.start.isoformat()}",
            f"# emg_fs={w.emg_fs}",
        ]
        if w.acc_fs is not None:
            lines.append(f"# acc_fs={w.acc_fs}")
        lines.append(f"# emg_label={w.emg_label}")
        cols = "t_s,emg_uv" + (",acc_x_g,acc_y_g,acc_z_g" if w.acc_fs is not None else "")
        lines.append(cols)
        try:
            self._f = w.path.open("w", encoding="utf-8", newline="\n")
            self._f.write("\n".join(lines) + "\n")
        except OSError as exc:
            raise _fail(w.path, f"cannot create CSV file ({exc.strerror or exc})") from None
        self._row = 0

    def _rows(self, emg: FloatArray, acc: FloatArray) -> None:
        w = self._w
        n = emg.size
        if n == 0:
            return
        rows = np.arange(self._row, self._row + n, dtype=np.int64)
        cells = np.char.add(
            np.char.add(np.char.mod("%.6f", rows / w.emg_fs), ","), _fmt(emg, "%.4f")
        )
        if w.acc_fs is not None:
            num, den = w._ratio.numerator, w._ratio.denominator
            k_lo = -((-rows * num) // den)
            k_hi = -((-(rows + 1) * num) // den)
            has = k_hi > k_lo
            full = np.full((n, 3), np.nan)
            full[has] = acc[: int(has.sum())]
            full[np.isnan(emg)] = np.nan  # ACC rows inside EMG gaps belong to the gap
            for col in range(3):
                cells = np.char.add(np.char.add(cells, ","), _fmt(full[:, col], "%.6f"))
        try:
            self._f.write("\n".join(cells.tolist()) + "\n")
        except OSError as exc:
            raise _fail(w.path, f"writing failed ({exc.strerror or exc})") from None
        self._row += n

    def write_record(self, emg: FloatArray, acc: FloatArray) -> None:
        self._rows(emg, acc)

    def write_last(self, emg: FloatArray, acc: FloatArray) -> None:
        self._rows(emg, acc)

    def finish(
        self,
        gaps: list[tuple[int, int]],
        acc_gaps: list[tuple[int, int]],
        annotations: list[Annotation],
        n_records: int,
    ) -> None:
        try:
            for a in annotations:
                dur = "" if a.duration_s is None else repr(float(a.duration_s))
                text = " ".join(a.text.splitlines())
                self._f.write(f"# annotation={a.onset_s!r},{dur},{text}\n")
            self._f.close()
        except OSError as exc:
            raise _fail(self._w.path, f"writing failed ({exc.strerror or exc})") from None


def journal_path(path: Path) -> Path:
    """Where :class:`RecordingWriter` journals the gaps and annotations of ``path``."""
    return path.with_name(path.name + ".journal")


def _read_journal(path: Path) -> tuple[tuple[Annotation, ...], int]:
    """The journal's annotations, and how many lines were unreadable (a torn last line)."""
    notes: list[Annotation] = []
    bad = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            onset, duration, text = json.loads(line)
            length = None if duration is None else float(duration)
            notes.append(Annotation(float(onset), length, str(text)))
        except (ValueError, TypeError):
            bad += 1
    return tuple(notes), bad


def restore_journal(path: Path) -> tuple[int, int]:
    """Put the journaled gaps and annotations back into a repaired EDF+/BDF+ file.

    ``path`` must be readable (after :func:`sensor_gateway.edf_repair.repair_unclosed`).
    The file is rewritten through :class:`RecordingWriter` with the journaled gaps
    as missing samples and the other journaled annotations, so it reads back as if
    its writer had closed it at the last whole second; the journal is then removed.

    Returns
    -------
    tuple of int
        Journal entries restored, and unreadable lines skipped (``(0, 0)`` without
        a journal).

    Raises
    ------
    RecordingError
        The file or the journal cannot be read, or the new file cannot be written
        (the original and its journal are then left as they are).
    """
    journal = journal_path(path)
    if not journal.exists():
        return 0, 0
    try:
        notes, bad = _read_journal(journal)
    except OSError as exc:
        raise _fail(journal, f"cannot read ({exc.strerror or exc})") from None
    rec = _EdfRecording(path, notes)
    info = rec.info
    if info.file_format not in WRITE_FORMATS:
        raise _fail(path, f"a journal for a {info.file_format} file: not written by crampwatch")
    tmp = path.with_name(f"{path.stem}.restoring{path.suffix}")
    try:
        with RecordingWriter(
            tmp,
            emg_fs=info.emg.fs_hz,
            acc_fs=info.acc[0].fs_hz if info.acc else None,
            start=info.start,
            emg_label=info.emg.label,
            file_format=info.file_format,
        ) as w:
            for chunk in rec.chunks(10.0):
                w.write(chunk)
            for a in info.annotations:  # the gaps come back as missing samples
                if a.text not in (GAP_TEXT, ACC_GAP_TEXT) and a.onset_s < info.duration_s:
                    w.annotate(a.onset_s, a.duration_s, a.text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    journal.unlink(missing_ok=True)
    return len(notes), bad
