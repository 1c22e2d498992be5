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


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--speed", "0"], "argument --speed: must be > 0.0: '0'"),
        (["demo", "--bands", "two"], "argument --bands: not an integer: 'two'"),
        (["demo", "--port", "70000"], "argument --port: must be > 0 and <= 65535: '70000'"),
        (["gateway", "--duration", "nan"], "argument --duration: must be > 0.0: 'nan'"),
        (["band", "--simulate", "--drop-rate", "-0.1"], "must be >= 0.0: '-0.1'"),
        (["record", "--duration", "inf"], "argument --duration: must be > 0.0: 'inf'"),
        (["evaluate", "--simulate", "-3"], "argument --simulate: must be >= 0: '-3'"),
        (["simulate", "--out", "x.edf", "--hours", "x"], "argument --hours: not a number: 'x'"),
        (["dashboard", "--port", "0"], "argument --port: must be > 0 and <= 65535: '0'"),
    ],
)
def test_out_of_range_options_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Numbers are checked when parsed: exit 2 with the option named, nothing started."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: crampwatch {argv[0]}")
    assert message in err
