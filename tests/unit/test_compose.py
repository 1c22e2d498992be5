"""The production stack checked without a Docker engine.

docker-compose.yml, the Dockerfile, .env.example and deploy/ are read as data and
checked for consistency: every service has an image or a build, every file it
mounts exists, volumes and secrets are declared, ``depends_on`` waits only for
services that can report it, every ``${VAR}`` is documented in .env.example, no
secret is written as a literal, each crampwatch service runs a real ``crampwatch``
command and its configuration (TOML file + the service's environment + its
secret files) loads, and the MQTT users, ACL and gateway settings agree.

Then the broker configuration is run for real: Debian's Mosquitto with a temp copy
of deploy/mosquitto/mosquitto.conf (container paths mapped through the compose
mounts into a temp dir, loopback port), a password file written by the very
script the mosquitto-init service runs, and the committed ACL; paho clients check
that anonymous and wrong passwords are refused and that each role can publish and
read exactly its topics. docs/deployment.md describes the stack.
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import secrets
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from sensor_gateway.cli import build_parser
from sensor_gateway.config import load_section
from sensor_gateway.gateway import GatewayConfig
from sensor_gateway.influx import InfluxConfig
from sensor_gateway.mqtt import MqttConfig
from tests.fixtures.servers import MOSQUITTO, MOSQUITTO_PASSWD, MosquittoServer, free_port

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
MOSQUITTO_CONF = ROOT / "deploy" / "mosquitto" / "mosquitto.conf"
ACL_FILE = ROOT / "deploy" / "mosquitto" / "acl"
MAKE_PASSWD = ROOT / "deploy" / "mosquitto" / "make-passwd.sh"
INFLUX_INITDB = ROOT / "deploy" / "influxdb" / "initdb"
CRAMPWATCH_TOML = ROOT / "deploy" / "crampwatch.toml"
DEPLOYMENT_DOC = ROOT / "docs" / "deployment.md"
GRAFANA_PROVISIONING = ROOT / "dashboards" / "grafana" / "provisioning"

COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
SERVICES: dict[str, dict[str, Any]] = COMPOSE.get("services") or {}
EXPECTED_SERVICES = {
    "mosquitto",
    "influxdb",
    "grafana",
    "crampwatch-gateway",
    "crampwatch-recorder",
    "crampwatch-alerts",
    "crampwatch-dashboard",
}
SECRETS_DIR = PurePosixPath("/run/secrets")
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|KEY", re.IGNORECASE)
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, ${VAR:+alt}; $$ escapes.
VAR_REF = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")
WHOLE_REF = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?:(:?[-?+])[^}]*)?\}")

# What each crampwatch command reads from the config file (see its module docstring).
# ``alerts`` is assumed to read like the other readers: [mqtt] and [influx].
SECTIONS_READ = {
    "gateway": ("mqtt", "gateway"),
    "record": ("mqtt", "influx"),
    "alerts": ("mqtt", "influx"),
    "dashboard": ("influx", "dashboard"),
}


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Mount:
    """One entry of a service's ``volumes``."""

    source: str
    target: str
    read_only: bool

    @property
    def is_bind(self) -> bool:
        """A host path (bind mount) rather than a named volume."""
        return self.source.startswith((".", "/", "~"))


def mounts(service: Mapping[str, Any]) -> list[Mount]:
    """The service's volumes, short (``SRC:DST[:ro]``) or long syntax."""
    out = []
    for entry in service.get("volumes", []):
        if isinstance(entry, str):
            parts = entry.split(":")
            assert len(parts) in (2, 3), f"volume {entry!r} needs SOURCE:TARGET[:MODE]"
            mode = parts[2].split(",") if len(parts) == 3 else []
            out.append(Mount(parts[0], parts[1], "ro" in mode))
        else:
            out.append(Mount(entry["source"], entry["target"], bool(entry.get("read_only"))))
    return out


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """The service's ``environment`` as a dict (mapping or ``KEY=VALUE`` list syntax)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def secret_targets(service: Mapping[str, Any]) -> dict[str, str]:
    """``{file name under /run/secrets: top-level secret name}`` of a service."""
    out = {}
    for entry in service.get("secrets", []):
        if isinstance(entry, str):
            out[entry] = entry
        else:
            out[entry.get("target", entry["source"])] = entry["source"]
    return out


def env_example() -> dict[str, str]:
    """``KEY=value`` lines of .env.example."""
    values = {}
    for raw in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: not KEY=VALUE: {line!r}"
            values[key.strip()] = value.strip()
    return values


def filled_env() -> dict[str, str]:
    """.env.example with every empty value filled with a fresh random one (as a user would)."""
    return {k: v or secrets.token_hex(16) for k, v in env_example().items()}


def interpolate(value: str, values: Mapping[str, str]) -> str:
    """Compose's variable interpolation (the forms docker-compose.yml uses)."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2) or "", m.group(3) or ""
        current = values.get(name)
        if op in ("", "?", ":?"):
            if current is None or (op == ":?" and not current):
                raise AssertionError(f"${{{name}}} is required but not set: {arg}")
            return current
        if op == ":-":
            return current or arg
        if op == "-":
            return arg if current is None else current
        return arg if current else ""  # ":+" / "+"

    return VAR_REF.sub(one, value).replace("$$", "$")


def crampwatch_services() -> dict[str, dict[str, Any]]:
    """Services running the crampwatch image (built from the Dockerfile)."""
    return {name: svc for name, svc in SERVICES.items() if "build" in svc}


def resolve(service: Mapping[str, Any], container_path: str, volume_root: Path) -> Path:
    """The host path behind ``container_path`` of a service (named volumes under ``volume_root``).

    Raises AssertionError if no mount covers the path.
    """
    path = PurePosixPath(container_path)
    best: Mount | None = None
    for m in mounts(service):
        target = PurePosixPath(m.target)
        if (path == target or target in path.parents) and (
            best is None or len(target.parts) > len(PurePosixPath(best.target).parts)
        ):
            best = m
    assert best is not None, f"{container_path} is not on any mount of the service"
    rel = path.relative_to(best.target)
    base = (ROOT / best.source).resolve() if best.is_bind else volume_root / best.source
    return base / rel if rel.parts else base


@dataclass
class Acl:
    """A Mosquitto ``acl_file``: per-user ``(access, topic)`` rules, patterns, anonymous rules."""

    users: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    patterns: list[tuple[str, str]] = field(default_factory=list)
    anonymous: list[tuple[str, str]] = field(default_factory=list)

    def can(self, user: str, access: str, topic: str) -> bool:
        """Whether ``user`` may ``access`` ("read"/"write") ``topic`` (patterns included)."""
        rules = list(self.users.get(user, []))
        rules += [(a, p.replace("%u", user)) for a, p in self.patterns]
        return any(
            a in (access, "readwrite") and mqtt.topic_matches_sub(t, topic) for a, t in rules
        )


def parse_acl(text: str) -> Acl:
    """Parse Mosquitto's ACL syntax; any other line is an error."""
    acl = Acl()
    current: list[tuple[str, str]] = acl.anonymous
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split(None, 2)
        if words[0] == "user" and len(words) == 2:
            assert words[1] not in acl.users, f"acl line {number}: user {words[1]} twice"
            current = acl.users.setdefault(words[1], [])
        elif words[0] in ("topic", "pattern") and len(words) >= 2:
            access, topic = (
                (words[1], words[2])
                if len(words) == 3 and words[1] in ("read", "write", "readwrite", "deny")
                else ("readwrite", " ".join(words[1:]))
            )
            assert access != "deny", f"acl line {number}: deny rules are not used here"
            (acl.patterns if words[0] == "pattern" else current).append((access, topic))
        else:
            raise AssertionError(f"acl line {number}: cannot parse {raw!r}")
    return acl


def conf_lines(path: Path) -> list[list[str]]:
    """Non-comment lines of a Mosquitto config file, split into words."""
    out = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            out.append(line.split())
    return out


def subcommands() -> dict[str, argparse.ArgumentParser]:
    """``crampwatch``'s subcommand parsers by name."""
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("crampwatch has no subcommands")


def mqtt_user_secret_sources() -> dict[str, str]:
    """``{MQTT user: secret name}`` from the mosquitto-init service's ``mqtt-user.<name>`` files."""
    init = SERVICES["mosquitto-init"]
    return {
        target.removeprefix("mqtt-user."): source
        for target, source in secret_targets(init).items()
        if target.startswith("mqtt-user.")
    }


def service_environ(name: str, secret_dir: Path) -> dict[str, str]:
    """A crampwatch service's environment as the container sees it, with its secret
    files written under ``secret_dir`` (one random value per top-level secret)."""
    svc = SERVICES[name]
    values = filled_env()
    env = {k: interpolate(v, values) for k, v in environment(svc).items()}
    targets = secret_targets(svc)
    for key, value in env.items():
        if key.endswith("_FILE"):
            path = PurePosixPath(value)
            assert path.parent == SECRETS_DIR, f"{name}: {key} must point into /run/secrets"
            assert path.name in targets, f"{name}: {key}={value} is not one of its secrets"
            source = targets[path.name]
            file = secret_dir / source
            if not file.exists():
                secret_env = COMPOSE["secrets"][source]["environment"]
                file.write_text(values[secret_env] + "\n")
            env[key] = str(file)
    env["CRAMPWATCH_CONFIG"] = str(CRAMPWATCH_TOML)
    return env


# --------------------------------------------------------------------------- structure


def test_compose_parses_and_has_every_service() -> None:
    assert isinstance(COMPOSE, dict)
    assert set(SERVICES) >= EXPECTED_SERVICES, EXPECTED_SERVICES - set(SERVICES)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_has_image_or_existing_build(name: str) -> None:
    svc = SERVICES[name]
    assert "image" in svc or "build" in svc
    if "build" in svc:
        build = svc["build"]
        context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
        assert context.is_dir()
        dockerfile = (
            "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        )
        assert (context / dockerfile).is_file()
    else:
        image = svc["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin a tag, got {image}"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_bind_mounts_exist_and_volumes_are_declared(name: str) -> None:
    declared = set(COMPOSE.get("volumes") or {})
    doc = DEPLOYMENT_DOC.read_text(encoding="utf-8")
    for m in mounts(SERVICES[name]):
        if not m.is_bind:
            assert m.source in declared, f"{name}: named volume {m.source} not declared"
        elif m.source.startswith("/"):
            # a path of the host system (not of this repository): must be documented
            assert m.source in doc, f"{name}: host path {m.source} not in docs/deployment.md"
        else:
            assert (ROOT / m.source).exists(), f"{name}: {m.source} does not exist"


def test_every_declared_volume_is_used() -> None:
    used = {m.source for svc in SERVICES.values() for m in mounts(svc) if not m.is_bind}
    assert set(COMPOSE.get("volumes") or {}) == used


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_depends_on_waits_for_something_that_can_report(name: str) -> None:
    deps = SERVICES[name].get("depends_on") or {}
    if isinstance(deps, list):
        deps = {d: {"condition": "service_started"} for d in deps}
    for target, spec in deps.items():
        assert target in SERVICES, f"{name} depends on unknown {target}"
        condition = spec.get("condition", "service_started")
        if condition == "service_healthy":
            assert "test" in (SERVICES[target].get("healthcheck") or {}), (
                f"{name} waits for {target} to be healthy, but it has no healthcheck"
            )
        elif condition == "service_completed_successfully":
            assert SERVICES[target].get("restart", "no") == "no", f"{target} is one-shot"
        else:
            raise AssertionError(f"{name} -> {target}: wait for health, not {condition}")


def one_shot_services() -> set[str]:
    """Services others wait to *complete* (init jobs)."""
    return {
        target
        for svc in SERVICES.values()
        if isinstance(svc.get("depends_on"), dict)
        for target, spec in svc["depends_on"].items()
        if spec.get("condition") == "service_completed_successfully"
    }


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_long_running_services_restart_and_report_health(name: str) -> None:
    svc = SERVICES[name]
    if name in one_shot_services():
        assert svc.get("restart") == "no"
        return
    assert svc.get("restart") == "unless-stopped"
    test = (svc.get("healthcheck") or {}).get("test")
    assert isinstance(test, list) and test[0] in ("CMD", "CMD-SHELL") and len(test) > 1


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_published_ports_default_to_loopback(name: str) -> None:
    for port in SERVICES[name].get("ports", []):
        host_ip = interpolate(str(port), {}).rsplit(":", 2)[0]
        assert host_ip == "127.0.0.1", f"{name}: {port} must default to 127.0.0.1"


# --------------------------------------------------------------------------- variables, secrets


def test_every_variable_is_in_env_example() -> None:
    documented = set(env_example())
    used = set(VAR_REF.findall(COMPOSE_FILE.read_text(encoding="utf-8")))
    used_names = {name for name, _op, _arg in used}
    used_names |= {s["environment"] for s in (COMPOSE.get("secrets") or {}).values()}
    assert used_names <= documented, sorted(used_names - documented)
    assert documented <= used_names, f"unused in compose: {sorted(documented - used_names)}"


def test_secret_variables_are_empty_in_example_and_required_in_compose() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    required = {m.group(1) for m in VAR_REF.finditer(text) if m.group(2) == ":?"}
    secret_vars = [k for k in env_example() if SECRET_NAME.search(k)]
    assert secret_vars
    for name in secret_vars:
        assert env_example()[name] == "", f".env.example must not ship a value for {name}"
        assert name in required, f"{name}: use ${{{name}:?...}} so compose fails without it"


def walk_environment_values() -> Iterator[tuple[str, str, str]]:
    """``(service, key, value)`` of every environment entry of every service."""
    for name, svc in SERVICES.items():
        for key, value in environment(svc).items():
            yield name, key, value


def test_no_secret_literals() -> None:
    for name, key, value in walk_environment_values():
        if not SECRET_NAME.search(key):
            continue
        if key.endswith("_FILE"):
            path = PurePosixPath(value)
            assert path.parent == SECRETS_DIR, f"{name}: {key}={value} is not a secret file"
            assert path.name in secret_targets(SERVICES[name]), f"{name}: {value} not mounted"
        else:
            assert WHOLE_REF.fullmatch(value), f"{name}: {key} must be a ${{...}} reference"
    for name, secret in (COMPOSE.get("secrets") or {}).items():
        assert set(secret) == {"environment"}, f"secret {name}: from .env only"


def test_service_secrets_are_declared() -> None:
    declared = set(COMPOSE.get("secrets") or {})
    used = {src for svc in SERVICES.values() for src in secret_targets(svc).values()}
    assert used == declared


# --------------------------------------------------------------------------- crampwatch services


def test_dockerfile_builds_the_project_as_non_root() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.MULTILINE)
    assert re.search(r"pip install [^\n]*\s\.(\s|$)", text)
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["crampwatch"\]', text, re.MULTILINE)
    ignored = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert ".env" in ignored, "secrets must not reach the build context"
    for sources in re.findall(r"^COPY\s+(?!--from)(.+)\s+\S+$", text, re.MULTILINE):
        for src in sources.split():
            assert (ROOT / src).exists(), f"COPY {src}: missing"
            assert src.rstrip("/") not in ignored, f"COPY {src}: excluded by .dockerignore"


CRAMPWATCH_SERVICES = sorted(crampwatch_services())


@pytest.mark.parametrize("name", CRAMPWATCH_SERVICES)
def test_service_runs_an_existing_crampwatch_command(name: str) -> None:
    argv = [str(a) for a in SERVICES[name]["command"]]
    commands = subcommands()
    assert argv[0] in commands, (
        f"service {name} runs `crampwatch {argv[0]}`, but crampwatch has no such command "
        f"(has: {', '.join(sorted(commands))})"
    )
    build_parser().parse_args(argv)  # exits (fails the test) on an unknown option


@pytest.mark.parametrize("name", CRAMPWATCH_SERVICES)
def test_service_config_loads(name: str, tmp_path: Path) -> None:
    """The TOML file + the service's environment + its secret files make a valid config."""
    command = str(SERVICES[name]["command"][0])
    env = service_environ(name, tmp_path)
    doc = tomllib.loads(CRAMPWATCH_TOML.read_text(encoding="utf-8"))
    mount = {m.target: m.source for m in mounts(SERVICES[name])}
    assert mount.get(environment(SERVICES[name])["CRAMPWATCH_CONFIG"]) == "./deploy/crampwatch.toml"
    sections = SECTIONS_READ[command]
    if "mqtt" in sections:
        cfg = load_section(MqttConfig, "mqtt", doc, env)
        assert cfg.username and cfg.password, f"{name}: MQTT needs a user and password"
        assert cfg.username in parse_acl(ACL_FILE.read_text()).users
        # same secret as the broker's password file entry for that user
        targets = secret_targets(SERVICES[name])
        own = targets[
            PurePosixPath(environment(SERVICES[name])["CRAMPWATCH_MQTT_PASSWORD_FILE"]).name
        ]
        assert mqtt_user_secret_sources()[cfg.username] == own
        # a stable client id: the container's host name changes on every re-creation
        assert cfg.client_id or cfg.gateway_id, f"{name}: set CRAMPWATCH_MQTT_CLIENT_ID"
        assert cfg.host in SERVICES
    if "influx" in sections:
        influx = load_section(InfluxConfig, "influx", doc, env)
        values = filled_env()
        assert influx.database == values["INFLUX_BUCKET"]
        if influx.version == 1:
            assert influx.username == values["INFLUX_READER_USER"] and influx.password
        else:
            assert (influx.org, influx.bucket) == (values["INFLUX_ORG"], values["INFLUX_BUCKET"])
        assert influx.url.split("//")[1].split(":")[0] in SERVICES
    if "gateway" in sections:
        gw = load_section(GatewayConfig, "gateway", doc, env)
        assert gw.bands, f"{name}: pin the bands (the ACL allows only their topics)"
    if "dashboard" in sections:
        from sensor_gateway.web.app import DashboardConfig  # noqa: PLC0415

        dash = load_section(DashboardConfig, "dashboard", doc, env)
        published = {str(p).rsplit(":", 1)[1] for p in SERVICES[name].get("ports", [])}
        assert str(dash.port) in published and dash.host == "0.0.0.0"


def test_every_config_section_is_read_by_a_service() -> None:
    doc = tomllib.loads(CRAMPWATCH_TOML.read_text(encoding="utf-8"))
    read = {s for svc in crampwatch_services().values() for s in SECTIONS_READ[svc["command"][0]]}
    assert set(doc) <= read


@pytest.mark.parametrize("name", CRAMPWATCH_SERVICES)
def test_service_state_lives_on_volumes(name: str, tmp_path: Path) -> None:
    """Outbox, spool and recordings must survive re-creating the container."""
    env = service_environ(name, tmp_path)
    doc = tomllib.loads(CRAMPWATCH_TOML.read_text(encoding="utf-8"))
    command = SERVICES[name]["command"][0]
    paths = []
    if command == "gateway":
        paths += [load_section(MqttConfig, "mqtt", doc, env).outbox_dir]
        paths += [load_section(GatewayConfig, "gateway", doc, env).data_dir]
    if command == "record":
        paths += [load_section(InfluxConfig, "influx", doc, env).spool_dir]
    volumes = [PurePosixPath(m.target) for m in mounts(SERVICES[name]) if not m.is_bind]
    for path in paths:
        p = PurePosixPath(path)
        assert any(v == p or v in p.parents for v in volumes), f"{name}: {p} not on a volume"


# --------------------------------------------------------------------------- MQTT: config, ACL


def test_mosquitto_conf_refuses_anonymous_and_uses_mounted_files() -> None:
    lines = conf_lines(MOSQUITTO_CONF)
    settings = {words[0]: words[1:] for words in lines}
    assert settings["allow_anonymous"] == ["false"]
    broker, init = SERVICES["mosquitto"], SERVICES["mosquitto-init"]
    acl = resolve(broker, settings["acl_file"][0], Path("/volumes"))
    assert acl == ACL_FILE.resolve()
    # the password file is where mosquitto-init's script writes it, on a shared volume
    passwd = resolve(broker, settings["password_file"][0], Path("/volumes"))
    default_out = re.search(r"\$\{MQTT_PASSWORD_FILE:-([^}]+)\}", MAKE_PASSWD.read_text())
    assert default_out is not None
    assert resolve(init, default_out.group(1), Path("/volumes")) == passwd
    script = next(m for m in mounts(init) if m.source == "./deploy/mosquitto/make-passwd.sh")
    assert init["entrypoint"][-1] == script.target
    assert ["listener", "1883"] in lines


def test_acl_gives_each_role_only_its_topics() -> None:
    acl = parse_acl(ACL_FILE.read_text(encoding="utf-8"))
    assert not acl.anonymous and not acl.patterns, "no rules for anonymous or for everybody"
    assert set(acl.users) == set(mqtt_user_secret_sources()), "ACL users = MQTT users"
    gateways = {
        name: environment(svc)
        for name, svc in crampwatch_services().items()
        if svc["command"][0] == "gateway"
    }
    assert gateways
    for name, env in gateways.items():
        user, gw_id = env["CRAMPWATCH_MQTT_USERNAME"], env["CRAMPWATCH_MQTT_GATEWAY_ID"]
        bands = [b.strip() for b in env["CRAMPWATCH_GATEWAY_BANDS"].split(",")]
        rules = acl.users[user]
        assert all(access == "write" for access, _ in rules), f"{user} must not read"
        assert acl.can(user, "write", f"crampwatch/gateway/{gw_id}/status"), name
        for band in bands:
            for kind in ("event", "status", "summary"):
                assert acl.can(user, "write", f"crampwatch/band/{band}/{kind}")
            assert acl.can(user, "write", f"homeassistant/sensor/crampwatch_{band}/battery/config")
        assert not acl.can(user, "write", "crampwatch/band/another-band/event")
        assert not acl.can(user, "write", "crampwatch/gateway/another-gateway/status")
        assert not acl.can(user, "write", "crampwatch/alert/x")
        assert not acl.can(user, "read", f"crampwatch/band/{bands[0]}/event")
    recorder = environment(SERVICES["crampwatch-recorder"])["CRAMPWATCH_MQTT_USERNAME"]
    assert acl.can(recorder, "read", "crampwatch/band/x/event")
    assert not acl.can(recorder, "write", "crampwatch/band/x/event")
    alerts = environment(SERVICES["crampwatch-alerts"])["CRAMPWATCH_MQTT_USERNAME"]
    assert acl.can(alerts, "write", "crampwatch/alert/x")
    assert not acl.can(alerts, "write", "crampwatch/band/x/event")
    assert acl.can("homeassistant", "read", "homeassistant/sensor/crampwatch_x/battery/config")
    assert not acl.can("homeassistant", "write", "crampwatch/band/x/event")


def test_make_passwd_refuses_missing_or_short_secrets(tmp_path: Path) -> None:
    if not os.access(MOSQUITTO_PASSWD, os.X_OK):
        pytest.skip("mosquitto_passwd is not installed")
    env = {
        **os.environ,
        "MQTT_SECRETS_DIR": str(tmp_path / "secrets"),
        "MQTT_PASSWORD_FILE": str(tmp_path / "auth" / "passwd"),
    }
    (tmp_path / "secrets").mkdir()
    none = subprocess.run(
        ["sh", str(MAKE_PASSWD)], env=env, capture_output=True, text=True, check=False
    )
    assert none.returncode != 0 and "no " in none.stderr
    (tmp_path / "secrets" / "mqtt-user.gw-x").write_text("short\n")
    short = subprocess.run(
        ["sh", str(MAKE_PASSWD)], env=env, capture_output=True, text=True, check=False
    )
    assert short.returncode != 0 and "openssl rand" in short.stderr
    assert not (tmp_path / "auth" / "passwd").exists()


# --------------------------------------------------------------------------- InfluxDB, Grafana


def test_influx_init_script_is_run_by_the_image_and_has_what_it_needs() -> None:
    influx = SERVICES["influxdb"]
    assert resolve(influx, "/docker-entrypoint-initdb.d", Path("/v")) == INFLUX_INITDB.resolve()
    scripts = sorted(INFLUX_INITDB.glob("*.sh"))
    assert scripts, "the image runs executable *.sh files only"
    env = environment(influx)
    provided_by_image = {"DOCKER_INFLUXDB_INIT_BUCKET_ID", "DOCKER_INFLUXDB_INIT_ORG_ID"}
    for script in scripts:
        assert os.access(script, os.X_OK), f"{script} must be executable"
        subprocess.run(["bash", "-n", str(script)], check=True)
        text = script.read_text(encoding="utf-8")
        assert "influx v1 dbrp create" in text
        for needed in re.findall(r"\$\{([A-Z_]+):\?\}", text):
            assert needed in env or needed in provided_by_image, f"{script.name}: {needed}"
        default_file = re.search(r"READER_PASSWORD_FILE:-([^}]+)\}", text)
        assert default_file is not None
        file = env.get("INFLUX_READER_PASSWORD_FILE", default_file.group(1))
        assert PurePosixPath(file).name in secret_targets(influx)


def test_grafana_provisioning_finds_its_variables_and_dashboards() -> None:
    grafana = SERVICES["grafana"]
    assert environment(grafana)["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    provisioning = resolve(grafana, "/etc/grafana/provisioning", Path("/v"))
    assert provisioning == GRAFANA_PROVISIONING.resolve()
    env = environment(grafana)
    for ds in sorted((GRAFANA_PROVISIONING / "datasources").glob("*.y*ml")):
        for var in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", ds.read_text(encoding="utf-8")):
            assert var in env, f"{ds.name} uses ${{{var}}}, not set for grafana"
    for provider_file in sorted((GRAFANA_PROVISIONING / "dashboards").glob("*.y*ml")):
        for provider in yaml.safe_load(provider_file.read_text(encoding="utf-8"))["providers"]:
            where = resolve(grafana, provider["options"]["path"], Path("/v"))
            assert where.is_dir() and any(where.glob("*.json")), f"{provider_file.name}: {where}"


# --------------------------------------------------------------------------- the broker, for real


@dataclass
class Client:
    """A paho MQTT 5 client with its callbacks turned into queues and events."""

    user: str | None
    paho: mqtt.Client
    connect_rc: queue.Queue[ReasonCode] = field(default_factory=queue.Queue)
    messages: queue.Queue[tuple[str, bytes]] = field(default_factory=queue.Queue)
    pubacks: dict[int, ReasonCode] = field(default_factory=dict)
    subacks: dict[int, list[ReasonCode]] = field(default_factory=dict)
    acked: threading.Condition = field(default_factory=threading.Condition)

    def publish(self, topic: str, payload: bytes) -> ReasonCode:
        """QoS 1 publish; the broker's PUBACK reason code."""
        info = self.paho.publish(topic, payload, qos=1)
        with self.acked:
            assert self.acked.wait_for(lambda: info.mid in self.pubacks, 5), "no PUBACK"
            return self.pubacks[info.mid]

    def subscribe(self, topic: str) -> list[ReasonCode]:
        """QoS 1 subscribe; the SUBACK reason codes."""
        _rc, mid = self.paho.subscribe(topic, qos=1)
        assert mid is not None
        with self.acked:
            assert self.acked.wait_for(lambda: mid in self.subacks, 5), "no SUBACK"
            return self.subacks[mid]

    def next_message(self, timeout_s: float = 5.0) -> tuple[str, bytes]:
        """The next message received (fails after ``timeout_s``)."""
        return self.messages.get(timeout=timeout_s)


Connect = Callable[[str | None, str | None], tuple[Client, ReasonCode]]


@pytest.fixture
def connect(broker: MosquittoServer) -> Iterator[Connect]:
    """``connect(user, password) -> (Client, CONNACK reason)``; disconnects at teardown."""
    opened: list[Client] = []

    def _connect(user: str | None, password: str | None) -> tuple[Client, ReasonCode]:
        paho = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"test-{user}-{secrets.token_hex(4)}",
            protocol=mqtt.MQTTv5,
        )
        client = Client(user, paho)

        def on_connect(
            _c: mqtt.Client, _u: object, _f: object, rc: ReasonCode, _p: Properties | None
        ) -> None:
            client.connect_rc.put(rc)

        def on_publish(
            _c: mqtt.Client, _u: object, mid: int, rc: ReasonCode, _p: Properties | None
        ) -> None:
            with client.acked:
                client.pubacks[mid] = rc
                client.acked.notify_all()

        def on_subscribe(
            _c: mqtt.Client, _u: object, mid: int, rcs: list[ReasonCode], _p: Properties | None
        ) -> None:
            with client.acked:
                client.subacks[mid] = rcs
                client.acked.notify_all()

        def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
            client.messages.put((msg.topic, bytes(msg.payload)))

        paho.on_connect, paho.on_publish = on_connect, on_publish
        paho.on_subscribe, paho.on_message = on_subscribe, on_message
        if user is not None:
            paho.username_pw_set(user, password)
        paho.connect("127.0.0.1", broker.port, keepalive=30)
        paho.loop_start()
        opened.append(client)
        return client, client.connect_rc.get(timeout=5)

    yield _connect
    for client in opened:
        client.paho.disconnect()
        client.paho.loop_stop()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoServer]:
    """Mosquitto running the committed config, ACL and password script (module docstring)."""
    if not (os.access(MOSQUITTO, os.X_OK) and os.access(MOSQUITTO_PASSWD, os.X_OK)):
        pytest.skip("mosquitto is not installed")
    tmp = tmp_path_factory.mktemp("compose-mosquitto")
    volumes = tmp / "volumes"
    broker_svc, init = SERVICES["mosquitto"], SERVICES["mosquitto-init"]
    for m in [*mounts(broker_svc), *mounts(init)]:
        if not m.is_bind:
            (volumes / m.source).mkdir(parents=True, exist_ok=True)

    # the password file, written by the init service's script from its secret files
    secret_dir = tmp / "run-secrets"
    secret_dir.mkdir()
    values = filled_env()
    passwords = {}
    for user, source in mqtt_user_secret_sources().items():
        passwords[user] = values[COMPOSE["secrets"][source]["environment"]]
        (secret_dir / f"mqtt-user.{user}").write_text(passwords[user] + "\n")
    out = re.search(r"\$\{MQTT_PASSWORD_FILE:-([^}]+)\}", MAKE_PASSWD.read_text())
    assert out is not None
    env = {
        **os.environ,
        "MQTT_SECRETS_DIR": str(secret_dir),
        "MQTT_PASSWORD_FILE": str(resolve(init, out.group(1), volumes)),
    }
    subprocess.run(["sh", str(MAKE_PASSWD)], env=env, check=True, capture_output=True)

    # the committed config with container paths mapped into the temp dir
    server = MosquittoServer(directory=tmp, port=free_port(), passwords=passwords)
    lines = []
    for words in conf_lines(MOSQUITTO_CONF):
        key, value = words[0], words[1:]
        if key == "listener":
            value = [str(server.port), "127.0.0.1"]
        elif key in ("password_file", "acl_file", "persistence_location"):
            host = resolve(broker_svc, value[0], volumes)
            value = [f"{host}/" if value[0].endswith("/") else str(host)]
        elif key == "log_dest":
            value = ["file", str(tmp / "mosquitto.log")]
        lines.append(" ".join([key, *value]))
    lines.append(f"user {os.environ.get('USER') or 'root'}")
    server.config_file.write_text("\n".join(lines) + "\n")
    server.start()
    try:
        yield server
    finally:
        server.kill()


def gateway_env() -> dict[str, str]:
    """Environment of the first gateway service."""
    name = next(n for n, s in crampwatch_services().items() if s["command"][0] == "gateway")
    return environment(SERVICES[name])


@pytest.mark.integration
def test_broker_refuses_anonymous_and_wrong_passwords(
    broker: MosquittoServer, connect: Connect
) -> None:
    _, anonymous = connect(None, None)
    assert anonymous.is_failure and anonymous.getName() == "Not authorized"
    _, wrong = connect("recorder", "not-the-password")
    assert wrong.is_failure
    for user, password in broker.passwords.items():
        _, ok = connect(user, password)
        assert not ok.is_failure, user


@pytest.mark.integration
def test_broker_healthchecks_pass(broker: MosquittoServer, tmp_path: Path) -> None:
    """The compose healthchecks, run against the real broker."""
    cmd = SERVICES["mosquitto"]["healthcheck"]["test"][1]
    assert "-p 1883" in cmd
    probe = subprocess.run(
        ["sh", "-c", cmd.replace("-p 1883", f"-p {broker.port}")], timeout=20, check=False
    )
    assert probe.returncode == 0, "the healthcheck must pass on a broker refusing anonymous"
    for name, svc in crampwatch_services().items():
        test = svc["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"]
        code = test[3]
        compile(code, f"{name} healthcheck", "exec")
        if "InfluxConfig" in code or "urlopen" in code:
            continue  # needs InfluxDB / the night view: compiled only
        env = {**os.environ, **service_environ(name, tmp_path)}
        env |= {"CRAMPWATCH_MQTT_HOST": "127.0.0.1", "CRAMPWATCH_MQTT_PORT": str(broker.port)}
        got = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
        )
        assert got.returncode == 0, f"{name}: {got.stderr}"


@pytest.mark.integration
def test_broker_acl_per_role(broker: MosquittoServer, connect: Connect) -> None:
    env = gateway_env()
    gw_user, gw_id = env["CRAMPWATCH_MQTT_USERNAME"], env["CRAMPWATCH_MQTT_GATEWAY_ID"]
    band = env["CRAMPWATCH_GATEWAY_BANDS"].split(",")[0].strip()
    pw = broker.passwords
    doc = tomllib.loads(CRAMPWATCH_TOML.read_text(encoding="utf-8"))
    group = doc["mqtt"]["share_group"]

    gateway, _ = connect(gw_user, pw[gw_user])
    recorder, _ = connect("recorder", pw["recorder"])
    alerts, _ = connect("alerts", pw["alerts"])
    home, _ = connect("homeassistant", pw["homeassistant"])
    granted = "Granted QoS 1"
    assert [rc.getName() for rc in recorder.subscribe(f"$share/{group}/crampwatch/#")] == [granted]
    assert [rc.getName() for rc in home.subscribe("crampwatch/#")] == [granted]
    gateway.subscribe("crampwatch/#")  # Mosquitto grants it, but delivers nothing (below)

    def refused(client: Client, topic: str) -> None:
        assert client.publish(topic, b"{}").getName() == "Not authorized", (client.user, topic)

    def delivered(client: Client, topic: str, *readers: Client) -> None:
        payload = secrets.token_bytes(8)
        assert not client.publish(topic, payload).is_failure, (client.user, topic)
        for reader in readers:
            assert reader.next_message() == (topic, payload), reader.user

    # the gateway: its band and its own status, nothing else; it reads nothing
    refused(gateway, "crampwatch/band/another-band/event")
    refused(gateway, "crampwatch/gateway/another-gateway/status")
    refused(gateway, "crampwatch/alert/x")
    delivered(gateway, f"crampwatch/band/{band}/event", recorder, home)
    delivered(gateway, f"crampwatch/gateway/{gw_id}/status", recorder, home)
    # readers write nothing
    refused(recorder, f"crampwatch/band/{band}/event")
    refused(home, f"crampwatch/band/{band}/event")
    # alerts: publishes alerts only
    refused(alerts, f"crampwatch/band/{band}/event")
    delivered(alerts, f"crampwatch/alert/{band}", recorder, home)
    # refused messages never arrived (they would have come before the next delivered
    # one), and the gateway received none of the above (a grace period for paho's thread)
    assert recorder.messages.empty() and home.messages.empty()
    time.sleep(0.5)
    assert gateway.messages.empty()


def test_make_passwd_script_parses() -> None:
    assert os.access(MAKE_PASSWD, os.X_OK)
    subprocess.run(["sh", "-n", str(MAKE_PASSWD)], check=True)
