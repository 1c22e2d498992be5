"""Config loading: TOML tables, environment overrides, secret files, clear errors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from sensor_gateway.config import load_section, read_config_file
from sensor_gateway.errors import ConfigError


@dataclass(frozen=True)
class Example:
    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False
    password: str = ""
    bands: tuple[str, ...] = ()
    ratio: float | None = None


def test_defaults_when_nothing_given() -> None:
    assert load_section(Example, "example", {}, environ={}) == Example()


def test_toml_table_then_environment_wins(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[example]\nhost = "broker"\nport = 8883\nbands = ["a", "b"]\n')
    doc = read_config_file(cfg)
    got = load_section(Example, "example", doc, environ={"CRAMPWATCH_EXAMPLE_PORT": "1884"})
    assert got == Example(host="broker", port=1884, bands=("a", "b"))


def test_env_conversions() -> None:
    env = {
        "CRAMPWATCH_EXAMPLE_TLS": "yes",
        "CRAMPWATCH_EXAMPLE_BANDS": "x, y",
        "CRAMPWATCH_EXAMPLE_RATIO": "0.5",
    }
    got = load_section(Example, "example", {}, environ=env)
    assert (got.tls, got.bands, got.ratio) == (True, ("x", "y"), 0.5)


def test_secret_from_file_strips_newline(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    env = {"CRAMPWATCH_EXAMPLE_PASSWORD_FILE": str(secret)}
    assert load_section(Example, "example", {}, environ=env).password == "s3cret"


@pytest.mark.parametrize(
    ("doc", "env", "needle"),
    [
        ({"example": {"prot": 1}}, {}, "unknown key(s) prot"),
        ({"example": {"port": "many"}}, {}, "[example].port: expected a number"),
        ({}, {"CRAMPWATCH_EXAMPLE_TLS": "maybe"}, "$CRAMPWATCH_EXAMPLE_TLS: expected true/false"),
        ({}, {"CRAMPWATCH_EXAMPLE_PASSWORD_FILE": "/nonexistent/pw"}, "_FILE=/nonexistent/pw"),
    ],
)
def test_bad_values_name_the_place(
    doc: dict[str, object], env: dict[str, str], needle: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_section(Example, "example", doc, environ=env)
    assert needle in str(info.value)


def test_config_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[example\nport = 1")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        read_config_file(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        read_config_file(tmp_path / "missing.toml")


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[example]\nport = 2000\n")
    monkeypatch.setenv("CRAMPWATCH_CONFIG", str(cfg))
    assert read_config_file(None) == {"example": {"port": 2000}}
