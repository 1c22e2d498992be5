"""Recovering EDF+/BDF+ recordings whose writer never closed them (power cut, kill -9).

pyedflib (EDFlib) writes each data record to the file as it is completed, but the
header keeps "number of data records = -1" until ``close``, which also writes the
annotations (gaps, end of signal).  Readers refuse such a file.  Repair patches the
header to the number of whole data records present and cuts a partly written last
record: every second that reached the disk is kept.  Then the gaps and annotations
the writer journaled next to the file (``<file>.journal``) are put back
(:func:`sensor_gateway.recordings.restore_journal`).  Only the exact end within the
last second is lost.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sensor_gateway.errors import RecordingError
from sensor_gateway.recordings import edf_geometry, restore_journal

__all__ = ["EdfRepair", "find_unclosed", "is_unclosed", "repair_unclosed"]

log = logging.getLogger(__name__)

#: Offset and width of the "number of data records" header field.
_N_RECORDS_FIELD = (236, 8)
#: Suffixes of the files a gateway writes.
_SUFFIXES = (".edf", ".bdf")


@dataclass(frozen=True)
class EdfRepair:
    """What :func:`repair_unclosed` did.

    Attributes
    ----------
    path
        The repaired file.
    records
        Whole data records kept (each one second of signal for crampwatch files).
    cut_bytes
        Bytes of a partly written last record that were removed.
    journaled
        Gaps and annotations put back from the writer's journal.
    torn_lines
        Journal lines that could not be read (a line cut off by the crash).
    """

    path: Path
    records: int
    cut_bytes: int
    journaled: int = 0
    torn_lines: int = 0

    def describe(self) -> str:
        """One line for the log and the terminal."""
        cut = f", cut {self.cut_bytes} bytes of an incomplete record" if self.cut_bytes else ""
        notes = f", restored {self.journaled} gaps/annotations" if self.journaled else ""
        torn = f" ({self.torn_lines} unreadable journal lines)" if self.torn_lines else ""
        return f"{self.path}: recovered {self.records} data records{cut}{notes}{torn}"


def is_unclosed(path: Path) -> bool:
    """``True`` if ``path`` is an EDF/BDF file whose header still says -1 data records."""
    try:
        return edf_geometry(path).n_records < 0
    except (OSError, RecordingError):
        return False


def repair_unclosed(path: Path) -> EdfRepair:
    """Make an unclosed EDF/BDF file readable, in place, keeping every whole data record.

    The header is patched first (the file is then readable, without gaps); then the
    writer's journal, if any, is applied, which rewrites the file.

    Raises
    ------
    RecordingError
        The file is not an unclosed EDF/BDF file (a closed one needs no repair), its
        header is corrupt, or it cannot be written.
    """
    path = Path(path)
    try:
        g = edf_geometry(path)
    except OSError as exc:
        raise RecordingError(f"{path}: cannot read ({exc.strerror})") from None
    if g.n_records >= 0:
        raise RecordingError(f"{path}: closed properly ({g.n_records} data records), no repair")
    if g.record_bytes <= 0:
        raise RecordingError(f"{path}: corrupt header (data records of {g.record_bytes} bytes)")
    n = g.complete_records
    keep = g.header_bytes + n * g.record_bytes
    offset, width = _N_RECORDS_FIELD
    try:
        with path.open("r+b") as f:
            f.seek(offset)
            f.write(f"{n:<{width}d}".encode("ascii"))
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise RecordingError(f"{path}: cannot repair ({exc.strerror})") from None
    journaled, torn = restore_journal(path)
    return EdfRepair(path, n, g.file_bytes - keep, journaled, torn)


def find_unclosed(folder: Path) -> Iterable[Path]:
    """Unclosed EDF/BDF files anywhere below ``folder`` (sorted)."""
    if not folder.is_dir():
        return []
    found = (p for p in folder.rglob("*") if p.suffix.lower() in _SUFFIXES and p.is_file())
    return sorted(p for p in found if is_unclosed(p))
