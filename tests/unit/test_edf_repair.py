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
from sensor_gateway.recordings import RecordingWriter, SignalChunk, open_recording

SECONDS = 12

_CRASHING_WRITER = """
import os, sys
from datetime import datetime
import numpy as np
from sensor_gateway.recordings import RecordingWriter, SignalChunk
w = RecordingWriter(sys.argv[1], emg_fs=2000, acc_fs=100, start=datetime(2026, 1, 1, 23),
                    file_format=sys.argv[2])
rng = np.random.default_rng(7)
for i in range({seconds}):
    w.write(SignalChunk(i * 2000, rng.normal(0, 5, 2000), np.zeros((100, 3))))
os._exit(0)  # the power goes: no close()
"""


def _crash(path: Path, file_format: str = "EDF+", *, partial_bytes: int = 0) -> None:
    """Write ``SECONDS`` s in a child that dies before closing; optionally half a record more."""
    code = _CRASHING_WRITER.format(seconds=SECONDS)
    subprocess.run([sys.executable, "-c", code, str(path), file_format], check=True)
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
    rng = np.random.default_rng(7)
    with RecordingWriter(reference, emg_fs=2000, acc_fs=100, start=datetime(2026, 1, 1, 23),
                         file_format=file_format) as w:  # fmt: skip
        for i in range(SECONDS):
            w.write(SignalChunk(i * 2000, rng.normal(0, 5, 2000), np.zeros((100, 3))))
    np.testing.assert_array_equal(_signal(path), _signal(reference))


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
    assert out.strip() == f"{crashed}: recovered {SECONDS} data records"
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
