"""``crampwatch detect`` end to end on a small EDF+ file written here."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyedflib
import pytest

from sensor_gateway import recordings
from sensor_gateway.cli import main

pytestmark = pytest.mark.skipif(
    not hasattr(recordings, "open_recording"), reason="open_recording not implemented yet"
)

FS = 1000


@pytest.fixture
def night(tmp_path: Path) -> Path:
    """20 s of 5-uV noise with a 15-s 80-uV contraction from 3 s (a cramp)."""
    rng = np.random.default_rng(0)
    x = rng.normal(scale=5.0, size=20 * FS)
    x[3 * FS : 18 * FS] += rng.normal(scale=80.0, size=15 * FS)
    path = tmp_path / "night.edf"
    w = pyedflib.EdfWriter(str(path), 1, file_type=pyedflib.FILETYPE_EDFPLUS)
    w.setSignalHeaders(
        [
            {
                "label": "EMG Gastroc L",
                "dimension": "uV",
                "sample_frequency": FS,
                "physical_max": 2000.0,
                "physical_min": -2000.0,
                "digital_max": 32767,
                "digital_min": -32768,
            }
        ]
    )
    w.writeSamples([x])
    w.close()
    return path


def test_detect_prints_json_lines_in_emission_order(
    night: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["detect", str(night), "--chunk-seconds", "0.05"]) == 0
    lines = capsys.readouterr().out.splitlines()
    docs = [json.loads(line) for line in lines]
    assert [d["type"] for d in docs] == ["spasm_onset", "cramp_confirmed", "cramp_end"]
    assert {d["episode"] for d in docs} == {1}
    assert abs(docs[0]["t_s"] - 3.0) < 0.05
    assert abs(docs[2]["t_s"] - 18.0) < 0.15
    assert "severity" in docs[2]  # details are flattened
    emitted = [d["emitted_at_s"] for d in docs]
    assert emitted == sorted(emitted)


def test_detect_summaries_and_config(
    night: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "cw.toml"
    cfg.write_text("[detector]\nconfirm_s = 30.0\n", encoding="utf-8")
    assert main(["detect", str(night), "--summaries", "--config", str(cfg)]) == 0
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    kinds = [d["type"] for d in docs if d["type"] != "summary"]
    assert kinds == ["spasm_onset", "spasm_cleared"]  # 15 s < 30 s: not confirmed
    summaries = [d for d in docs if d["type"] == "summary"]
    assert [s["t_s"] for s in summaries] == pytest.approx(list(range(1, 21)))


def test_detect_bad_config_key_is_one_line_error(
    night: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "cw.toml"
    cfg.write_text("[detector]\nconfirm_seconds = 3\n", encoding="utf-8")
    assert main(["detect", str(night), "--config", str(cfg)]) != 0
    assert capsys.readouterr().err.startswith("crampwatch: ")


def test_detect_subprocess_stdout_is_only_json(night: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sensor_gateway", "detect", str(night)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    types = [json.loads(line)["type"] for line in proc.stdout.splitlines()]
    assert types == ["spasm_onset", "cramp_confirmed", "cramp_end"]


def test_readme_documents_every_field_detect_prints(
    night: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's contract table names every key of the records, and no other."""
    assert main(["detect", str(night)]) == 0
    docs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    table = readme.split("### `crampwatch detect`: the event contract", 1)[1].split("```", 1)[0]
    rows = {
        line.split("|")[1].strip(): set(re.findall(r"`([a-z_]+)`", line.split("|")[2]))
        for line in table.splitlines()
        if line.startswith("| ")
    }
    common = {"type", "episode", "t_s", "emitted_at_s"}
    assert {name.strip("`") for name in rows} >= common
    end = next(d for d in docs if d["type"] == "cramp_end")
    assert set(end) - common == rows["on `cramp_end`"]
    assert {d["type"] for d in docs} <= rows["`type`"]
