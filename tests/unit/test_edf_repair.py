"""Recovering recordings left unclosed by a crash: real writer, real crash (``os._exit``)."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from sensor_gateway.cli import main
from sensor_gateway.edf_repair import find_unclosed, is_unclosed, repair_unclosed
from sensor_gateway.errors import RecordingError
from sensor_gateway.gateway import Gateway, GatewayConfig
from sensor_gateway.recordings import (
    RecordingWriter,
    SignalChunk,
    journal_path,
    open_recording,
)
from tests.unit.crash_night import SECONDS, write_night

_CRASHING_WRITER = """
import os, sys
from tests.unit.crash_night import write_night
write_night(sys.argv[1], sys.argv[2], with_gaps=sys.argv[3] == "gaps")
os._exit(0)  # the power goes: no close()
"""


def _crash(
    path: Path, file_format: str = "EDF+", *, partial_bytes: int = 0, with_gaps: bool = False
) -> None:
    """Write ``SECONDS`` s in a child that dies before closing; optionally half a record more."""
    args = [str(path), file_format, "gaps" if with_gaps else "none"]
    subprocess.run([sys.executable, "-c", _CRASHING_WRITER, *args], check=True)
    with path.open("ab") as f:
        f.write(b"\x01" * partial_bytes)


def _signal(path: Path) -> np.ndarray:
    return np.concatenate([c.emg_uv for c in open_recording(path).chunks(5.0)])


@pytest.mark.parametrize(("file_format", "suffix"), [("EDF+", ".edf"), ("BDF+", ".bdf")])
def test_crashed_recording_is_refused_with_a_hint_then_repaired(
    tmp_path: Path, file_format: str, suffix: str
) -> None:
    path = tmp_path / f"night{suffix}"
    _crash(path, file_format, partial_bytes=1000)
    assert is_unclosed(path)
    with pytest.raises(RecordingError, match=f"crampwatch repair .*{SECONDS} whole data records"):
        open_recording(path)

    fix = repair_unclosed(path)

    assert (fix.records, fix.cut_bytes) == (SECONDS, 1000)
    assert not is_unclosed(path)
    info = open_recording(path).info
    assert info.duration_s == SECONDS
    # every second that reached the disk reads back as written (EDF LSB 0.5 µV)
    reference = tmp_path / f"closed{suffix}"
    write_night(reference, file_format).close()
    np.testing.assert_array_equal(_signal(path), _signal(reference))


@pytest.mark.parametrize(("file_format", "suffix"), [("EDF+", ".edf"), ("BDF+", ".bdf")])
def test_gaps_and_annotations_come_back_from_the_journal(
    tmp_path: Path, file_format: str, suffix: str
) -> None:
    path = tmp_path / f"night{suffix}"
    _crash(path, file_format, partial_bytes=700, with_gaps=True)
    with journal_path(path).open("a", encoding="utf-8") as f:
        f.write('[9.5, 0.25, "crampw')  # the crash cut the last line

    fix = repair_unclosed(path)

    # one EMG gap, one ACC gap inside it, one detector annotation; the torn line skipped
    assert (fix.records, fix.journaled, fix.torn_lines) == (SECONDS, 3, 1)
    assert "restored 3 gaps/annotations (1 unreadable journal lines)" in fix.describe()
    assert not journal_path(path).exists()
    reference = tmp_path / f"closed{suffix}"
    write_night(reference, file_format, with_gaps=True).close()
    assert not journal_path(reference).exists()  # a closed writer leaves no journal
    got, want = open_recording(path), open_recording(reference)
    assert got.info.annotations == want.info.annotations
    assert [a.text for a in got.info.annotations] == ["crampwatch:gap", "crampwatch:spasm_onset#1"]
    for a, b in zip(got.chunks(5.0), want.chunks(5.0), strict=True):
        np.testing.assert_array_equal(a.emg_uv, b.emg_uv)  # NaN where the gap was
        np.testing.assert_array_equal(a.acc_g, b.acc_g)
    assert np.isnan(_signal(path)).sum() == 1000


def test_a_closed_or_foreign_file_is_not_touched(tmp_path: Path) -> None:
    closed = tmp_path / "closed.edf"
    with RecordingWriter(closed, emg_fs=2000, acc_fs=None, start=datetime(2026, 1, 1),
                         file_format="EDF+") as w:  # fmt: skip
        w.write(SignalChunk(0, np.zeros(4000), np.zeros((0, 3))))
    before = closed.read_bytes()
    with pytest.raises(RecordingError, match="closed properly"):
        repair_unclosed(closed)
    text = tmp_path / "notes.edf"
    text.write_text("not an EDF file at all")
    with pytest.raises(RecordingError, match="truncated header"):
        repair_unclosed(text)
    assert closed.read_bytes() == before
    assert not is_unclosed(text)


def test_repair_command_reports_each_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    crashed = tmp_path / "a.edf"
    _crash(crashed)
    missing = tmp_path / "missing.edf"
    assert main(["repair", str(crashed), str(missing)]) == 1  # one failed, the other done
    out, err = capsys.readouterr()
    assert out.strip() == f"{crashed}: recovered {SECONDS} data records"  # no journal: no gaps
    assert err.startswith("crampwatch: ") and "missing.edf" in err
    assert not is_unclosed(crashed)


def test_gateway_repairs_what_a_previous_run_left_open(tmp_path: Path) -> None:
    band_dir = tmp_path / "0001"
    band_dir.mkdir()
    _crash(band_dir / "2026-01-01.edf")
    _crash(tmp_path / "elsewhere.edf", partial_bytes=10)
    assert [p.name for p in find_unclosed(tmp_path)] == ["2026-01-01.edf", "elsewhere.edf"]

    gw = Gateway(GatewayConfig(data_dir=tmp_path), [])
    fixed = gw.recover_recordings()

    assert sorted((f.path.name, f.records) for f in fixed) == [
        ("2026-01-01.edf", SECONDS),
        ("elsewhere.edf", SECONDS),
    ]
    assert find_unclosed(tmp_path) == []
    assert open_recording(band_dir / "2026-01-01.edf").info.duration_s == SECONDS
    # a gateway that does not record leaves the folder alone
    _crash(band_dir / "2026-01-02.edf")
    assert Gateway(GatewayConfig(data_dir=tmp_path, record=False), []).recover_recordings() == []
    assert is_unclosed(band_dir / "2026-01-02.edf")
