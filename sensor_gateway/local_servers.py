"""Private Mosquitto and influxd servers on loopback ports, for the demo and the tests.

``crampwatch demo`` starts both as child processes it owns; the pytest fixtures in
``tests/fixtures/servers.py`` start the same classes in temporary directories.  Each
server gets its own config file, data directory and free ports on 127.0.0.1, and
runs in its own process group, so stopping it leaves nothing behind.

:class:`MosquittoServer`
    Debian's ``mosquitto`` with one loopback listener, ``allow_anonymous false``,
    a password file written with ``mosquitto_passwd -b`` (random passwords, never
    stored in code) and an ACL file, persistence in its directory so a restart keeps
    sessions and queued QoS 1 messages.
:class:`InfluxServer`
    ``influxd`` 1.x (Debian ships 1.6) with HTTP and the RPC bind address on free
    loopback ports, meta/data/WAL in its directory, reporting off.  HTTP auth is off:
    it listens on loopback only.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sensor_gateway.errors import LocalServerError

__all__ = [
    "INFLUXD",
    "MOSQUITTO",
    "MOSQUITTO_PASSWD",
    "InfluxServer",
    "MosquittoServer",
    "ServerTls",
    "crampwatch_acl",
    "free_port",
]

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
INFLUXD = shutil.which("influxd") or "/usr/bin/influxd"
_INSTALL_HINT = "install it with: bash scripts/setup.sh runtime"


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _require(binary: str) -> None:
    if not os.access(binary, os.X_OK):
        raise LocalServerError(f"{Path(binary).name} is not installed; {_INSTALL_HINT}")


def _log_tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-2000:]
    except OSError:
        return ""


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LocalServerError(f"server exited with {proc.returncode}: {_log_tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise LocalServerError(f"port {port} not open after {timeout_s} s: {_log_tail(log)}")


def _kill_group(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def crampwatch_acl(readers: Sequence[str] = ("recorder",), alerters: Sequence[str] = ()) -> str:
    """The ACL crampwatch's roles need (Mosquitto ``acl_file`` syntax).

    ``gateway`` publishes everything under ``crampwatch/`` plus Home Assistant
    discovery; each *reader* may only subscribe; each *alerter* reads and publishes
    alerts; a band user (user name = band id) may publish only under its own
    ``crampwatch/band/<id>/``.
    """
    lines = [
        "# gateway: publishes everything crampwatch, plus Home Assistant discovery",
        "user gateway",
        "topic write crampwatch/#",
        "topic write homeassistant/#",
    ]
    for user in readers:
        lines += ["", f"# {user}: read-only", f"user {user}", "topic read crampwatch/#"]
    for user in alerters:
        lines += [
            "",
            f"# {user}: reads events and status, publishes alerts",
            f"user {user}",
            "topic read crampwatch/#",
            "topic write crampwatch/alert/#",
        ]
    lines += ["", "# band users: only their own band's topics"]
    lines += ["pattern write crampwatch/band/%u/#"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ServerTls:
    """The TLS side of a broker's listener.

    Attributes
    ----------
    ca
        CA certificate that signed ``cert`` (and, with ``require_certificate``, the
        clients' certificates).
    cert, key
        The broker's certificate and private key.
    require_certificate
        Demand a client certificate on top of user name and password.
    """

    ca: Path
    cert: Path
    key: Path
    require_certificate: bool = False

    def config(self) -> str:
        """The listener's ``mosquitto.conf`` lines."""
        return (
            f"cafile {self.ca}\ncertfile {self.cert}\nkeyfile {self.key}\n"
            f"require_certificate {'true' if self.require_certificate else 'false'}\n"
        )


@dataclass
class MosquittoServer:
    """A private Mosquitto broker (see the module docstring)."""

    directory: Path
    port: int
    passwords: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None

    @property
    def config_file(self) -> Path:
        """The broker's config file."""
        return self.directory / "mosquitto.conf"

    @property
    def log_file(self) -> Path:
        """The broker's log file."""
        return self.directory / "mosquitto.log"

    @classmethod
    def create(
        cls,
        directory: Path,
        users: Sequence[str],
        acl: str,
        *,
        port: int | None = None,
        tls: ServerTls | None = None,
    ) -> MosquittoServer:
        """Write config, password and ACL files with a random password per user (no start).

        With ``tls`` the one listener speaks TLS only.

        Raises
        ------
        LocalServerError
            If Mosquitto is not installed.
        """
        _require(MOSQUITTO)
        _require(MOSQUITTO_PASSWD)
        directory.mkdir(parents=True, exist_ok=True)
        passwords = {u: secrets.token_urlsafe(16) for u in users}
        pwfile = directory / "passwd"
        pwfile.unlink(missing_ok=True)
        pwfile.touch(0o600)
        for user, password in passwords.items():
            subprocess.run([MOSQUITTO_PASSWD, "-b", str(pwfile), user, password], check=True,
                           capture_output=True)  # fmt: skip
        (directory / "acl").write_text(acl)
        server = cls(directory=directory, port=port or free_port(), passwords=passwords)
        (directory / "data").mkdir(exist_ok=True)
        server.config_file.write_text(
            f"listener {server.port} 127.0.0.1\n"
            f"{tls.config() if tls is not None else ''}"
            "allow_anonymous false\n"
            f"password_file {pwfile}\n"
            f"acl_file {directory / 'acl'}\n"
            f"user {os.environ.get('USER') or 'root'}\n"
            "persistence true\n"
            f"persistence_location {directory / 'data'}/\n"
            "autosave_interval 1\n"
            "autosave_on_changes true\n"
            "max_queued_messages 100000\n"
            "max_inflight_messages 1000\n"
            "persistent_client_expiration 1d\n"
            f"log_dest file {server.log_file}\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
        )
        return server

    def start(self) -> None:
        """Start the broker and wait for its port.

        Raises
        ------
        LocalServerError
            If it exits or does not open its port within 10 s.
        """
        if self.proc is not None and self.proc.poll() is None:
            return
        self.log_file.touch()
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config_file)],
            stdout=subprocess.DEVNULL,
            stderr=(self.directory / "stderr.log").open("ab"),
            start_new_session=True,
        )
        _wait_port(self.port, self.proc, 10.0, self.log_file)

    def stop(self) -> None:
        """Stop gracefully (SIGTERM: sessions and queues are saved)."""
        _kill_group(self.proc, signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL: like a crash (only what autosave wrote survives)."""
        _kill_group(self.proc, signal.SIGKILL)

    def log_text(self) -> str:
        """The broker's log so far."""
        return self.log_file.read_text(errors="replace")


@dataclass
class InfluxServer:
    """A private influxd 1.x (see the module docstring)."""

    directory: Path
    port: int
    rpc_port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base HTTP URL."""
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def create(cls, directory: Path, *, port: int | None = None) -> InfluxServer:
        """Write the config file (no start).

        Raises
        ------
        LocalServerError
            If influxd is not installed.
        """
        _require(INFLUXD)
        directory.mkdir(parents=True, exist_ok=True)
        server = cls(directory=directory, port=port or free_port(), rpc_port=free_port())
        d = directory
        (d / "influxdb.conf").write_text(
            "reporting-disabled = true\n"
            "reporting-enabled = false\n"  # the Debian build's spelling of the same
            f'bind-address = "127.0.0.1:{server.rpc_port}"\n'
            f'[meta]\n  dir = "{d / "meta"}"\n  logging-enabled = false\n'
            f'[data]\n  dir = "{d / "data"}"\n  wal-dir = "{d / "wal"}"\n'
            '  query-log-enabled = false\n  wal-fsync-delay = "0s"\n'
            "[monitor]\n  store-enabled = false\n"
            "[subscriber]\n  enabled = false\n"
            "[continuous_queries]\n  enabled = false\n"
            "[retention]\n  enabled = false\n"
            "[http]\n  enabled = true\n"
            f'  bind-address = "127.0.0.1:{server.port}"\n'
            "  auth-enabled = false\n  log-enabled = false\n  pprof-enabled = false\n"
            "  max-body-size = 0\n"
            "[ifql]\n  enabled = false\n"
            '[logging]\n  level = "warn"\n  suppress-logo = true\n'
        )
        return server

    def _ping(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=0.5) as resp:
                return int(resp.status) == 204
        except (OSError, urllib.error.URLError):
            return False

    def start(self, timeout_s: float = 30.0) -> None:
        """Start influxd and wait until ``/ping`` answers 204.

        Raises
        ------
        LocalServerError
            If it exits or does not answer within ``timeout_s``.
        """
        if self.proc is not None and self.proc.poll() is None:
            return
        log = self.directory / "influxd.log"
        self.proc = subprocess.Popen(
            [INFLUXD, "run", "-config", str(self.directory / "influxdb.conf")],
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while not self._ping():
            if self.proc.poll() is not None:
                raise LocalServerError(f"influxd exited: {_log_tail(log)}")
            if time.monotonic() > deadline:
                raise LocalServerError(f"influxd not answering /ping: {_log_tail(log)}")
            time.sleep(0.1)

    def version(self) -> str:
        """The server's version (``X-Influxdb-Version`` of ``/ping``)."""
        with urllib.request.urlopen(f"{self.url}/ping", timeout=2) as resp:
            return str(resp.headers.get("X-Influxdb-Version", "?"))

    def stop(self) -> None:
        """Stop influxd (SIGTERM)."""
        _kill_group(self.proc, signal.SIGTERM)

    def query(self, q: str, database: str = "") -> dict[str, object]:
        """Run InfluxQL synchronously (set-up and test helper; crampwatch has its own client)."""
        data = urllib.parse.urlencode({"q": q, "db": database, "epoch": "ms"}).encode()
        with urllib.request.urlopen(f"{self.url}/query", data=data, timeout=10) as resp:
            doc: dict[str, object] = json.loads(resp.read())
        return doc

    def create_database(self, name: str) -> None:
        """``CREATE DATABASE <name>`` (idempotent)."""
        self.query(f'CREATE DATABASE "{name}"')
