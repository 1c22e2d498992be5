"""The InfluxDB 2.x write path, checked at the HTTP level.

FAKE: no InfluxDB 2.x server can be installed here, so a tiny local HTTP server
(running in a thread, test-only) records the request influxdb-client sends and
answers like 2.x does (204, or an error status for fault injection).
"""

from __future__ import annotations

import asyncio
import gzip
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from sensor_gateway.influx import BufferedWriter, InfluxV2Writer, InfluxWriteError, line
from sensor_gateway.outbox import Outbox

TOKEN = "test-token-not-a-secret"


@dataclass
class Seen:
    """Requests received by the fake and the status it answers with."""

    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    status: int = 204


@pytest.fixture
def fake_v2() -> Iterator[tuple[str, Seen]]:
    seen = Seen()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            seen.requests.append((self.command, self.path, dict(self.headers.items()), body))
            self.send_response(seen.status)
            if seen.status == 204:
                self.end_headers()
                return
            payload = b'{"code":"invalid","message":"partial write: field type conflict"}'
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_v2_write_request_is_exactly_what_2x_expects(fake_v2: tuple[str, Seen]) -> None:
    url, seen = fake_v2
    lines = [
        line("cramp_event", {"band": "band a", "gateway": "gw1", "type": "cramp_end"},
             {"event_id": 'id "1"', "duration_s": 42.5, "episode": 3}, 1709260215250),
        line("envelope", {"band": "band-a", "gateway": "gw1"}, {"rms_uv": 3.25}, 1709260216000),
    ]  # fmt: skip

    async def main() -> None:
        writer = InfluxV2Writer(url, "my-org", "cramps", TOKEN, timeout_s=2.0)
        try:
            await writer.write(lines)
        finally:
            await writer.close()

    asyncio.run(main())
    assert len(seen.requests) == 1
    method, path, headers, body = seen.requests[0]
    parts = urlsplit(path)
    assert method == "POST"
    assert parts.path == "/api/v2/write"
    assert parse_qs(parts.query) == {"org": ["my-org"], "bucket": ["cramps"], "precision": ["ms"]}
    assert headers["Authorization"] == f"Token {TOKEN}"
    assert headers["Content-Type"].startswith("text/plain")
    text = body.decode("utf-8")
    assert text.split("\n") == [
        'cramp_event,band=band\\ a,gateway=gw1,type=cramp_end event_id="id \\"1\\"",'
        "duration_s=42.5,episode=3i 1709260215250",
        "envelope,band=band-a,gateway=gw1 rms_uv=3.25 1709260216000",
    ]


def test_v2_gzip_sends_the_same_body_compressed(fake_v2: tuple[str, Seen]) -> None:
    url, seen = fake_v2
    lines = [line("envelope", {"band": "band-a"}, {"rms_uv": 3.25 + i}, 1709260216000 + i)
             for i in range(200)]  # fmt: skip

    async def main() -> None:
        writer = InfluxV2Writer(url, "my-org", "cramps", TOKEN, timeout_s=2.0, gzip=True)
        try:
            await writer.write(lines)
        finally:
            await writer.close()

    asyncio.run(main())
    _method, _path, headers, body = seen.requests[0]
    assert headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body).decode().split("\n") == lines
    assert len(body) < len("\n".join(lines)) / 3


def test_v2_rejection_is_not_retried_and_down_server_is_spooled(
    fake_v2: tuple[str, Seen], tmp_path: Path
) -> None:
    url, seen = fake_v2
    seen.status = 400

    async def main() -> None:
        writer = InfluxV2Writer(url, "my-org", "cramps", TOKEN, timeout_s=2.0)
        with pytest.raises(InfluxWriteError) as info:
            await writer.write(["m x=1 1"])
        assert info.value.status == 400 and not info.value.retriable
        await writer.close()

        # nothing listening: retriable, so the buffered writer spools the batch
        dead = InfluxV2Writer("http://127.0.0.1:9", "my-org", "cramps", TOKEN, timeout_s=1.0)
        buf = BufferedWriter(dead, Outbox(tmp_path / "spool"), batch_size=10)
        acked: list[int] = []
        await buf.add(["m x=1 1", "m x=2 2"], lambda: acked.append(1))
        await buf.flush()
        assert acked == [1]  # durable on disk: the MQTT message may be acknowledged
        assert [e.body for e in buf.spool.pending()] == [b"m x=1 1\nm x=2 2"]
        await buf.close()

    asyncio.run(main())
    assert len(seen.requests) == 1
