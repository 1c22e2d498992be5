"""``crampwatch info``: in-process via ``cli.main`` and as a console script."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from sensor_gateway.cli import main
from sensor_gateway.recordings import RecordingWriter, SignalChunk
from sensor_gateway.truth import GroundTruth, TruthEvent, save_truth

SHARED = Path("/work/shared/data")
EMGGO = SHARED / "emggo_sample" / "emggo_sample_ta.edf"
needs_shared = pytest.mark.skipif(not EMGGO.exists(), reason="shared/data not available")
SCRIPT = Path(sys.executable).with_name("crampwatch")


@pytest.fixture
def night(tmp_path: Path) -> Path:
    """3 s at 2000 Hz with ACC at 100 Hz, a 0.1-s gap, 12 annotations and a truth sidecar."""
    path = tmp_path / "night.edf"
    emg = np.zeros(6000)
    emg[1000:1200] = np.nan
    with RecordingWriter(
        path, emg_fs=2000, acc_fs=100, start=datetime(2024, 5, 1, 22, tzinfo=UTC)
    ) as w:
        w.write(SignalChunk(0, emg, np.zeros((300, 3))))
        for k in range(11):
            w.annotate(0.2 * k, None, f"crampwatch:event {k}")
    save_truth(
        path,
        GroundTruth("cramp", (1.0,), (2.5,), (TruthEvent("cramp", 1.0, 2.5),)),
    )
    return path


def test_text_output_of_a_written_night(night: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(night), "--annotations", "4"]) == 0
    out = capsys.readouterr().out
    assert "EDF+" in out
    assert "2024-05-01T22:00:00+00:00" in out
    assert "3.000 s" in out
    assert "EMG Gastroc L" in out
    assert "ACC X, ACC Y, ACC Z (g, 100 Hz)" in out
    assert "annotations: 12 (first 4 shown)" in out  # 1 gap + 11 events
    assert "crampwatch:gap" in out
    assert "crampwatch:event 2" in out
    assert "crampwatch:event 3" not in out
    assert "cramp labels, 1 onsets, with offsets, 1 events (cramp)" in out


def test_json_output(night: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(night), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["format"] == "EDF+"
    assert doc["duration_s"] == 3.0
    assert doc["emg"]["label"] == "EMG Gastroc L"
    assert doc["emg"]["fs_hz"] == 2000
    assert doc["emg"]["n_samples"] == 6000
    assert doc["emg"]["scale_to_uv"] == 1.0
    assert [c["label"] for c in doc["acc"]] == ["ACC X", "ACC Y", "ACC Z"]
    assert doc["acc"][0]["n_samples"] == 300
    assert doc["n_annotations"] == 12
    assert len(doc["annotations"]) == 10
    assert doc["annotations"][0] == {
        "onset_s": 0.0,
        "duration_s": None,
        "text": "crampwatch:event 0",
    }
    assert doc["truth"]["label_kind"] == "cramp"
    assert doc["truth"]["n_onsets"] == 1


@needs_shared
def test_shared_recording_with_burst_truth(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(EMGGO), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["emg"]["label"] == "EMG Tibialis Ant"
    assert doc["emg"]["fs_hz"] == 250
    assert doc["emg"]["n_samples"] == 137420
    assert doc["duration_s"] == pytest.approx(549.68)
    assert doc["acc"] == []
    assert doc["truth"]["label_kind"] == "burst"
    assert doc["truth"]["burst_count"] == 56
    assert main(["info", str(EMGGO)]) == 0
    out = capsys.readouterr().out
    assert "burst_count 56" in out
    assert "ACC:         none" in out


def test_corrupt_file_is_one_line_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.edf"
    bad.write_bytes(b"\x00garbage" * 100)
    assert main(["info", str(bad)]) != 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"crampwatch: {bad}: ")
    assert len(captured.err.strip().splitlines()) == 1


@pytest.mark.skipif(not SCRIPT.exists(), reason="console script not installed (pip install -e .)")
def test_console_script_on_truncated_edf(night: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.edf"
    cut.write_bytes(night.read_bytes()[:-1000])
    proc = subprocess.run(
        [str(SCRIPT), "info", str(cut)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"crampwatch: {cut}: truncated")
    assert proc.stdout == ""


@pytest.mark.skipif(not SCRIPT.exists(), reason="console script not installed (pip install -e .)")
def test_console_script_json(night: Path) -> None:
    proc = subprocess.run(
        [str(SCRIPT), "info", "--json", str(night)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["emg"]["n_samples"] == 6000
