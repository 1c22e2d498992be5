"""The CLI shell: --version, --help on every command, clean one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sensor_gateway import __version__
from sensor_gateway.cli import _command_modules, build_parser, main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"crampwatch {__version__}"


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    names = [name for name, _ in _command_modules()]
    assert names, "no subcommands were discovered"
    for name in names:
        with pytest.raises(SystemExit) as info:
            main([name, "--help"])
        assert info.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: crampwatch " + name)


def test_top_level_help_lists_commands() -> None:
    text = build_parser().format_help()
    for name, _ in _command_modules():
        assert name in text


def test_missing_command_is_a_usage_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sensor_gateway"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
