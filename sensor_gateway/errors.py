"""The crampwatch exception tree.

Every error crampwatch raises on purpose derives from :class:`CrampwatchError`, so
callers (the CLI, the gateway's supervisors) can tell an expected, explained
failure from a bug.  The CLI prints ``crampwatch: <message>`` and exits with
:attr:`CrampwatchError.exit_code`; it never shows a traceback for these.

::

    CrampwatchError
    ├── ConfigError          bad or unreadable config file / environment value
    ├── ProtocolError        a band packet that does not follow docs/band-protocol.md
    │   ├── PacketTooShortError
    │   ├── UnsupportedVersionError
    │   └── MalformedPacketError
    ├── RecordingError       a recording that cannot be read or written (EDF+/BDF/CSV)
    ├── SimulationError      impossible simulator settings
    ├── LinkError            the BLE link (scan, connect, GATT) failed
    ├── SinkError            MQTT / InfluxDB / disk spool failures
    ├── LocalServerError     a private Mosquitto / influxd (demo, tests) failed to start
    └── TestbedError         the BlueZ emulation (firmware_sim.testbed) failed
        └── TestbedUnavailableError   dbus-daemon or bluezoo is not installed

The signal package (``cramp_signal``) stays free of I/O and of this package; its
own base is :class:`cramp_signal.errors.SignalError`, which the CLI treats the
same way.
"""

from __future__ import annotations


class CrampwatchError(Exception):
    """Base of every expected crampwatch failure."""

    exit_code: int = 1


class ConfigError(CrampwatchError):
    """The configuration file or an environment override is invalid."""

    exit_code = 2


class ProtocolError(CrampwatchError):
    """Bytes from the radio do not form a valid band message."""


class PacketTooShortError(ProtocolError):
    """Fewer bytes than the header or the announced payload needs."""


class UnsupportedVersionError(ProtocolError):
    """The packet carries a protocol version this codec does not speak."""


class MalformedPacketError(ProtocolError):
    """Counts, flags or lengths in the packet contradict each other or the spec."""


class RecordingError(CrampwatchError):
    """A recording file is missing, corrupt, truncated or has no usable channel."""


class SimulationError(CrampwatchError):
    """The simulator was asked for something it cannot produce."""


class LinkError(CrampwatchError):
    """The Bluetooth link to a band failed (scan, connect, GATT operation)."""


class SinkError(CrampwatchError):
    """Publishing or storing data failed (MQTT broker, InfluxDB, disk spool)."""


class LocalServerError(CrampwatchError):
    """A private server the demo starts (Mosquitto, influxd) is missing or failed to start."""
