"""A private BlueZ test bed: one ``dbus-daemon`` plus ``bluezoo`` with virtual adapters.

No radio is needed: `bluezoo <https://github.com/Arkq/bluez-zoo>`_ emulates BlueZ's
D-Bus API (``org.bluez``) with any number of virtual adapters ``hci0``, ``hci1``, ...
that can see each other.  A GATT application and an LE advertisement registered on
one adapter (the band, :mod:`firmware_sim.peripheral`) are found, connected and
streamed by real ``bleak`` on another adapter (the gateway).

The test bed never touches the machine's real system bus: it starts its own
``dbus-daemon`` on a socket in a temporary directory and points
``DBUS_SYSTEM_BUS_ADDRESS`` at it (in :data:`os.environ`, so subprocesses inherit
it), which is where both ``bleak`` and ``dbus-fast``'s ``BusType.SYSTEM`` look.

Use it as a context manager (sync or async)::

    with BluezTestbed.start(n_adapters=5) as bed:
        print(bed.bus_address, bed.adapters)   # ('hci0', ..., 'hci4')

or from a running event loop (``crampwatch demo``)::

    bed = await BluezTestbed.astart(n_adapters=5)
    try:
        ...
    finally:
        bed.stop()

One adapter hosts at most one *visible* advertiser: bluezoo's scanner reports only
the first advertisement registered on an adapter (``bluezoo/bluezoo.py``,
``create_discovering_task``), so every simulated band needs its own adapter; the
gateway takes ``hci0``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from sensor_gateway.errors import CrampwatchError

__all__ = [
    "DEFAULT_ADAPTERS",
    "SYSTEM_BUS_ENV",
    "BluezTestbed",
    "TestbedError",
    "TestbedUnavailableError",
    "adapter_address",
    "find_tool",
]

log = logging.getLogger(__name__)

#: Environment variable bleak and dbus-fast read for the system bus.
SYSTEM_BUS_ENV = "DBUS_SYSTEM_BUS_ADDRESS"
#: Adapters started by default: hci0 for the gateway, hci1..hci4 for four bands.
DEFAULT_ADAPTERS = 5
#: Seconds between two bluezoo scan rounds (its default of 10 s makes discovery slow).
SCAN_INTERVAL_S = 1

_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


class TestbedError(CrampwatchError):
    """The BlueZ test bed could not be started (tool crashed, never became ready)."""

    __test__ = False  # not a pytest test class despite the name


class TestbedUnavailableError(TestbedError):
    """A required program is not installed; ``tool`` names it."""

    __test__ = False

    def __init__(self, tool: str, hint: str) -> None:
        super().__init__(f"{tool} not found on PATH ({hint})")
        self.tool = tool


def adapter_address(index: int) -> str:
    """Public address of virtual adapter ``hci<index>``: ``00:11:22:33:44:<index>`` in hex.

    Parameters
    ----------
    index
        Adapter number, 0 ... 255.

    Returns
    -------
    str
        ``hci0`` is ``00:11:22:33:44:00``, ``hci1`` is ``00:11:22:33:44:01`` and so on.
    """
    if not 0 <= index <= 0xFF:
        raise ValueError(f"adapter index {index} outside 0..255")
    return f"00:11:22:33:44:{index:02X}"


def find_tool(name: str) -> str | None:
    """Path of executable ``name``: next to the running interpreter (venv) first, then PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


@dataclass
class BluezTestbed:
    """A running private dbus-daemon + bluezoo.

    Attributes
    ----------
    bus_address
        D-Bus address of the private bus (``unix:path=...``), also exported as
        ``$DBUS_SYSTEM_BUS_ADDRESS`` while the test bed runs.
    adapters
        Adapter names, ``("hci0", "hci1", ...)``; ``hci0`` is meant for the gateway.
    addresses
        Public address of each adapter, same order.
    workdir
        Temporary directory (bus socket, bluezoo log); removed by :meth:`stop`.
    """

    bus_address: str
    adapters: tuple[str, ...]
    addresses: tuple[str, ...]
    workdir: Path
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)
    _old_env: str | None = field(default=None, repr=False)
    _stopped: bool = field(default=False, repr=False)

    # ------------------------------------------------------------------ start

    @classmethod
    def start(cls, n_adapters: int = DEFAULT_ADAPTERS, *, timeout_s: float = 15.0) -> BluezTestbed:
        """Start the test bed and wait until every adapter is powered (blocking).

        Must not be called from a running event loop; use :meth:`astart` there.

        Parameters
        ----------
        n_adapters
            Number of virtual adapters (at least 2: one gateway, one band).
        timeout_s
            How long to wait for the bus and for bluezoo to become ready.

        Raises
        ------
        TestbedUnavailableError
            ``dbus-daemon`` or ``bluezoo`` is not installed.
        TestbedError
            A process died or the adapters did not come up in time.
        """
        bed = cls._spawn(n_adapters, timeout_s)
        try:
            asyncio.run(bed._wait_ready(timeout_s))
        except BaseException:
            bed.stop()
            raise
        return bed

    @classmethod
    async def astart(
        cls, n_adapters: int = DEFAULT_ADAPTERS, *, timeout_s: float = 15.0
    ) -> BluezTestbed:
        """Like :meth:`start`, for callers already inside an event loop."""
        bed = cls._spawn(n_adapters, timeout_s)
        try:
            await bed._wait_ready(timeout_s)
        except BaseException:
            bed.stop()
            raise
        return bed

    @classmethod
    def _spawn(cls, n_adapters: int, timeout_s: float) -> BluezTestbed:
        if n_adapters < 2:
            raise ValueError(f"need at least 2 adapters (gateway + band), got {n_adapters}")
        daemon = find_tool("dbus-daemon")
        if daemon is None:
            raise TestbedUnavailableError("dbus-daemon", "install the Debian package 'dbus'")
        if importlib.util.find_spec("bluezoo") is None:
            raise TestbedUnavailableError("bluezoo", "pip install 'crampwatch[dev]'")
        workdir = Path(tempfile.mkdtemp(prefix="crampwatch-bluez-"))
        socket_path = workdir / "system_bus_socket"
        config = workdir / "bus.conf"
        config.write_text(_BUS_CONFIG.format(socket=socket_path), encoding="utf-8")
        address = f"unix:path={socket_path}"
        addresses = tuple(adapter_address(i) for i in range(n_adapters))
        bed = cls(
            bus_address=address,
            adapters=tuple(f"hci{i}" for i in range(n_adapters)),
            addresses=addresses,
            workdir=workdir,
            _old_env=os.environ.get(SYSTEM_BUS_ENV),
        )
        try:
            with (workdir / "dbus-daemon.log").open("wb") as dlog:
                bed._procs.append(
                    subprocess.Popen(
                        [daemon, f"--config-file={config}", "--nofork", "--nopidfile"],
                        stdin=subprocess.DEVNULL,
                        stdout=dlog,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
            deadline = time.monotonic() + timeout_s
            while not socket_path.exists():
                bed._check_alive()
                if time.monotonic() > deadline:
                    raise TestbedError(f"dbus-daemon did not create {socket_path}")
                time.sleep(0.02)
            os.environ[SYSTEM_BUS_ENV] = address
            env = dict(os.environ)
            root = str(Path(__file__).resolve().parents[1])
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
            cmd = [sys.executable, "-m", "firmware_sim.testbed", "--auto-enable",
                   f"--scan-interval={SCAN_INTERVAL_S}"]  # fmt: skip
            cmd.append("-v" if os.environ.get("CRAMPWATCH_BLUEZOO_DEBUG") else "-q")
            for a in addresses:
                cmd += ["-a", a]
            with (workdir / "bluezoo.log").open("wb") as blog:
                bed._procs.append(
                    subprocess.Popen(
                        cmd,
                        stdin=subprocess.DEVNULL,
                        stdout=blog,
                        stderr=subprocess.STDOUT,
                        env=env,
                        start_new_session=True,
                    )
                )
        except BaseException:
            bed.stop()
            raise
        log.info("BlueZ test bed: bus %s, adapters %s", address, ", ".join(bed.adapters))
        return bed

    def _check_alive(self) -> None:
        for p in self._procs:
            if p.poll() is not None:
                what = "dbus-daemon" if p is self._procs[0] else "bluezoo"
                raise TestbedError(
                    f"{what} exited with code {p.returncode}; "
                    f"logs in {self.workdir}: {self.log_tail()}"
                )

    def log_tail(self, n_chars: int = 2000) -> str:
        """The end of bluezoo's log (for error messages)."""
        try:
            return (self.workdir / "bluezoo.log").read_text(errors="replace")[-n_chars:]
        except OSError:
            return ""

    async def _wait_ready(self, timeout_s: float) -> None:
        from dbus_fast import BusType, Message, MessageType  # noqa: PLC0415
        from dbus_fast.aio import MessageBus  # noqa: PLC0415

        deadline = time.monotonic() + timeout_s
        bus = await MessageBus(bus_address=self.bus_address, bus_type=BusType.SYSTEM).connect()
        try:
            while True:
                self._check_alive()
                reply = await bus.call(
                    Message(
                        destination="org.bluez",
                        path="/",
                        interface="org.freedesktop.DBus.ObjectManager",
                        member="GetManagedObjects",
                    )
                )
                if reply is not None and reply.message_type == MessageType.METHOD_RETURN:
                    objects: dict[str, dict[str, dict[str, Any]]] = reply.body[0]
                    powered = {
                        path.rsplit("/", 1)[-1]
                        for path, ifaces in objects.items()
                        if "org.bluez.Adapter1" in ifaces
                        and ifaces["org.bluez.Adapter1"]["Powered"].value
                    }
                    if powered >= set(self.adapters):
                        return
                if time.monotonic() > deadline:
                    raise TestbedError(
                        f"bluezoo did not power {', '.join(self.adapters)} within {timeout_s} s: "
                        f"{self.log_tail()}"
                    )
                await asyncio.sleep(0.05)
        finally:
            bus.disconnect()

    # ------------------------------------------------------------------ stop

    def stop(self) -> None:
        """Terminate bluezoo and dbus-daemon (whole process groups), restore the env, clean up.

        Idempotent.  Sends SIGTERM, waits up to 3 s, then SIGKILL.
        """
        if self._stopped:
            return
        self._stopped = True
        for p in reversed(self._procs):
            _kill_group(p)
        if os.environ.get(SYSTEM_BUS_ENV) == self.bus_address:
            if self._old_env is None:
                os.environ.pop(SYSTEM_BUS_ENV, None)
            else:
                os.environ[SYSTEM_BUS_ENV] = self._old_env
        shutil.rmtree(self.workdir, ignore_errors=True)
        log.info("BlueZ test bed stopped")

    @property
    def running(self) -> bool:
        """Whether every process of the test bed is still alive."""
        return not self._stopped and all(p.poll() is None for p in self._procs)

    @property
    def pids(self) -> tuple[int, ...]:
        """Process ids of dbus-daemon and bluezoo (each leads its own process group)."""
        return tuple(p.pid for p in self._procs)

    def __enter__(self) -> BluezTestbed:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> BluezTestbed:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _run_patched_bluezoo(argv: list[str]) -> None:
    """Run bluezoo's ``main`` with one bug fixed: GATT links are unexported on disconnect.

    bluezoo 1.0.2 exports the peripheral's services under the central's device object
    on ``Connect`` but never removes them on ``Disconnect``; the next ``Connect`` to the
    same band then fails with ``sd_bus_add_object_vtable ... error 17`` (EEXIST), so a
    band could never be reconnected.  The wrapper removes the links (InterfacesRemoved
    reaches bleak) and clears ``ServicesResolved`` after the original disconnect.
    """
    from bluezoo import bluezoo as bz  # noqa: PLC0415
    from bluezoo.device import Device  # noqa: PLC0415

    original = Device.disconnect

    async def disconnect(self: Any, uuid: str | None = None) -> None:
        await original(self, uuid)
        for link in list(self.services.values()):
            with contextlib.suppress(KeyError):
                self.peer_adapter.mock.remove_object(link)
        self.services.clear()
        if self.services_resolved:
            with contextlib.suppress(Exception):
                await self.ServicesResolved.set_async(False)

    Device.disconnect = disconnect
    sys.argv = ["bluezoo", *argv]
    bz.main()


def _kill_group(p: subprocess.Popen[bytes]) -> None:
    if p.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=3.0)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=3.0)
    else:
        # The leader is gone; children it may have left in its group still get a SIGKILL.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)


if __name__ == "__main__":
    _run_patched_bluezoo(sys.argv[1:])
