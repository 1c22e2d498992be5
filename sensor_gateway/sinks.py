"""Where the gateway sends what it learns: the :class:`EventSink` protocol and a JSON Lines sink.

Every sink implements four coroutines (the MQTT sink plugs in the same way)::

    await sink.publish_event(band_id, event)      # StampedEvent: a detector event + wall time
    await sink.publish_status(band_id, status)    # dict from BandStream.status()
    await sink.publish_summary(band_id, summary)  # StampedSummary: one second of envelope
    await sink.close()                            # flush and release

Sinks must not block the event loop for long; a sink that cannot deliver raises
:class:`~sensor_gateway.errors.SinkError`, which the gateway logs (once per kind)
without stopping the bands.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Protocol, TextIO, runtime_checkable

from sensor_gateway.band_stream import StampedEvent, StampedSummary
from sensor_gateway.errors import SinkError

__all__ = ["EventSink", "JsonLinesSink", "MemorySink"]


@runtime_checkable
class EventSink(Protocol):
    """The interface every gateway output implements."""

    async def publish_event(self, band_id: str, event: StampedEvent) -> None:
        """Deliver one detector event (already stamped with wall-clock time)."""

    async def publish_status(self, band_id: str, status: dict[str, object]) -> None:
        """Deliver a band status snapshot (link, battery, lead-off, drift, gaps)."""

    async def publish_summary(self, band_id: str, summary: StampedSummary) -> None:
        """Deliver a per-second envelope summary."""

    async def close(self) -> None:
        """Flush and release resources; called once at shutdown."""


class JsonLinesSink:
    """Writes one JSON object per line: ``{"record": "event"|"status"|"summary", ...}``.

    Parameters
    ----------
    target
        A path (appended to, line-buffered) or ``"-"`` for standard output.
    summaries
        Also write summary records (one per band per second); off by default.
    status
        Also write status records.
    """

    def __init__(self, target: str | Path, *, summaries: bool = False, status: bool = True) -> None:
        self._own = str(target) != "-"
        self.with_summaries = summaries
        self.with_status = status
        try:
            self._fh: TextIO = (
                Path(target).open("a", encoding="utf-8", buffering=1)  # noqa: SIM115
                if self._own
                else sys.stdout
            )
        except OSError as exc:
            raise SinkError(f"{target}: cannot open events file: {exc.strerror}") from None

    def _write(self, doc: dict[str, object]) -> None:
        try:
            self._fh.write(json.dumps(doc, allow_nan=False, separators=(",", ":")) + "\n")
        except (OSError, ValueError) as exc:
            raise SinkError(f"events file: {exc}") from None

    async def publish_event(self, band_id: str, event: StampedEvent) -> None:
        """Write ``{"record": "event", "band_id", "time", <DetectorEvent.to_json()>}``."""
        self._write({"record": "event", **event.to_json()})

    async def publish_status(self, band_id: str, status: dict[str, object]) -> None:
        """Write ``{"record": "status", ...}`` when status records are enabled."""
        if self.with_status:
            self._write({"record": "status", **status, "band_id": band_id})

    async def publish_summary(self, band_id: str, summary: StampedSummary) -> None:
        """Write ``{"record": "summary", ...}`` when summary records are enabled."""
        if self.with_summaries:
            self._write({"record": "summary", **summary.to_json()})

    async def close(self) -> None:
        """Flush; close the file unless it is stdout."""
        try:
            self._fh.flush()
            if self._own:
                self._fh.close()
        except OSError as exc:
            raise SinkError(f"events file: {exc}") from None


class MemorySink:
    """Keeps everything in lists (tests, benchmarks)."""

    def __init__(self) -> None:
        self.events: list[StampedEvent] = []
        self.statuses: list[dict[str, object]] = []
        self.summaries: list[StampedSummary] = []
        self.closed = False

    async def publish_event(self, band_id: str, event: StampedEvent) -> None:
        """Append the event."""
        self.events.append(event)

    async def publish_status(self, band_id: str, status: dict[str, object]) -> None:
        """Append the status."""
        self.statuses.append(status)

    async def publish_summary(self, band_id: str, summary: StampedSummary) -> None:
        """Append the summary."""
        self.summaries.append(summary)

    async def close(self) -> None:
        """Mark closed."""
        self.closed = True
