"""InfluxDB output: line protocol, 1.x/2.x writers, InfluxQL queries, batching with a disk spool.

Pieces
------
:func:`line`
    One point in line protocol, escaped (measurement, tag keys/values, field keys,
    string fields), integer millisecond timestamp.
:class:`InfluxWriter`
    ``async write(lines)``.  :class:`InfluxV1Writer` POSTs to ``/write?db=&rp=&precision=ms``
    of InfluxDB 1.x over a small keep-alive HTTP/1.1 client on the event loop.
    :class:`InfluxV2Writer` uses influxdb-client's synchronous ``write_api``
    (``/api/v2/write``, ``Authorization: Token``); that call blocks the loop for at
    most ``timeout_s`` (influxdb-client's async client needs aiohttp, which is not a
    dependency).
:class:`InfluxQuery`
    InfluxQL over HTTP ``/query`` (1.x, or the 2.x v1-compatibility endpoint with a
    DBRP mapping and a token).
:class:`BufferedWriter`
    Batches points (size or timer), writes them, and when InfluxDB is down spools
    whole batches to an :class:`~sensor_gateway.outbox.Outbox` on disk, drained in
    order once InfluxDB is back.  Rejected batches (HTTP 4xx: bad line protocol,
    field type conflicts) are not retried: counted and logged once per kind.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import logging
import time
import zlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlencode, urlsplit

from sensor_gateway.config import load_section
from sensor_gateway.errors import ConfigError, SinkError
from sensor_gateway.outbox import Outbox

__all__ = [
    "BufferedWriter",
    "InfluxConfig",
    "InfluxQuery",
    "InfluxV1Writer",
    "InfluxV2Writer",
    "InfluxWriteError",
    "InfluxWriter",
    "field_set",
    "field_value",
    "line",
    "make_writer",
    "series",
]

log = logging.getLogger(__name__)

FieldValue = float | int | str | bool


# ------------------------------------------------------------------ line protocol

_MEAS_ESC = str.maketrans({",": r"\,", " ": r"\ ", "\\": "\\\\"})
_KEY_ESC = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\\": "\\\\"})
_STR_ESC = str.maketrans({'"': r"\"", "\\": "\\\\"})


@functools.lru_cache(maxsize=8192)
def _esc_key(text: str) -> str:
    # tag keys/values and field keys have bounded cardinality: cache their escaping
    return text.translate(_KEY_ESC)


@functools.lru_cache(maxsize=4096)
def series(measurement: str, tags: tuple[tuple[str, str], ...]) -> str:
    """Escaped measurement and sorted tags (empty values left out); cached: series are few."""
    head = measurement.translate(_MEAS_ESC)
    return head + "".join(f",{_esc_key(k)}={_esc_key(v)}" for k, v in sorted(tags) if v)


def field_value(value: FieldValue) -> str:
    """One field value in line protocol (``1.5``, ``42i``, ``true``, ``"text"``).

    Raises
    ------
    ValueError
        If a float is not finite.
    """
    kind = type(value)  # exact-type fast paths first; subclasses (numpy) below
    if kind is float:
        if value - value != 0.0:  # type: ignore[operator]  # NaN or inf
            raise ValueError("line protocol cannot carry NaN/inf")
        return repr(value)
    if kind is str:
        return '"' + value.translate(_STR_ESC).replace("\n", " ") + '"'  # type: ignore[union-attr]
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return field_value(float(value))
    return field_value(str(value))


def field_set(fields: Mapping[str, FieldValue | None]) -> str:
    """The escaped ``key=value,...`` part of a point; ``None`` values are left out.

    Raises
    ------
    ValueError
        If no field is left or a float is not finite.
    """
    part = ",".join([f"{_esc_key(k)}={field_value(v)}" for k, v in fields.items() if v is not None])
    if not part:
        raise ValueError("point without fields")
    return part


def line(
    measurement: str,
    tags: Mapping[str, str],
    fields: Mapping[str, FieldValue | None],
    time_ms: int,
) -> str:
    """One line-protocol point with millisecond timestamp.

    Tags are sorted (InfluxDB's preferred order); empty tag values and ``None``
    fields are left out.  Integers are written as InfluxDB integers (``42i``).

    Raises
    ------
    ValueError
        If no field is left or a float is not finite.
    """
    try:
        fields_part = field_set(fields)
    except ValueError as exc:
        raise ValueError(f"{measurement}: {exc}") from None
    return f"{series(measurement, tuple(tags.items()))} {fields_part} {time_ms}"


# ------------------------------------------------------------------ config


@dataclass(frozen=True)
class InfluxConfig:
    """``[influx]`` table (env ``CRAMPWATCH_INFLUX_<FIELD>``, secrets via ``..._FILE``).

    Attributes
    ----------
    version
        1 (InfluxDB 1.x, ``database``/``retention_policy``) or 2 (``org``/``bucket``/``token``).
    url
        Base URL, e.g. ``http://127.0.0.1:8086``.
    database, retention_policy
        1.x target (empty retention policy = the database default).
    username, password
        1.x credentials (HTTP basic); no default.
    org, bucket, token
        2.x target and API token; no default token.
    batch_size, flush_interval_s
        A batch is written when it holds ``batch_size`` points or is this old.
    timeout_s
        HTTP timeout per request.
    gzip
        Compress write bodies (level 1).  Off by default: on loopback it is slower
        (``benchmarks/recorder_throughput.py``); worth it over a slow link.
    spool_dir, spool_max_bytes
        Disk spool used while InfluxDB is unreachable (bounded).
    retry_interval_s
        How often a non-empty spool retries InfluxDB.
    status_interval_s
        How often ``crampwatch record`` writes its own ``recorder_status`` point (spool
        backlog, points written / rejected, invalid messages); 0 turns it off.
    """

    version: int = 1
    url: str = "http://127.0.0.1:8086"
    database: str = "crampwatch"
    retention_policy: str = ""
    username: str = ""
    password: str = ""
    org: str = ""
    bucket: str = ""
    token: str = ""
    batch_size: int = 5000
    flush_interval_s: float = 0.2
    timeout_s: float = 5.0
    gzip: bool = False
    spool_dir: Path = Path("~/.local/state/crampwatch/influx-spool")
    spool_max_bytes: int = 256 * 1024 * 1024
    retry_interval_s: float = 1.0
    status_interval_s: float = 10.0

    def __post_init__(self) -> None:
        if self.version not in (1, 2):
            raise ValueError(f"version must be 1 or 2, got {self.version}")
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must be http(s)://host[:port], got {self.url!r}")
        if self.version == 2 and not (self.org and self.bucket and self.token):
            raise ValueError("version 2 needs org, bucket and token")
        if self.version == 1 and not self.database:
            raise ValueError("version 1 needs a database")
        if self.batch_size < 1 or not self.flush_interval_s > 0 or not self.timeout_s > 0:
            raise ValueError("batch_size, flush_interval_s and timeout_s must be > 0")
        if self.spool_max_bytes < 4096 or not self.retry_interval_s > 0:
            raise ValueError("spool_max_bytes >= 4096 and retry_interval_s > 0 required")
        if not self.status_interval_s >= 0:
            raise ValueError("status_interval_s must be >= 0 (0: no recorder_status points)")

    @classmethod
    def load(cls, document: Mapping[str, Any] | None = None) -> InfluxConfig:
        """Load from the ``[influx]`` table and the environment."""
        return load_section(cls, "influx", document)


# ------------------------------------------------------------------ tiny HTTP client


class InfluxWriteError(SinkError):
    """A write failed; ``retriable`` is false when InfluxDB rejected the data itself (4xx)."""

    def __init__(self, message: str, *, retriable: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.retriable = retriable
        self.status = status


class _Http:
    """Minimal HTTP/1.1 keep-alive client on asyncio streams (one request at a time)."""

    def __init__(self, url: str, timeout_s: float, headers: Mapping[str, str]) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise ConfigError(f"{url}: only http:// is supported by the 1.x client")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 8086
        self.base = parts.path.rstrip("/")
        self.timeout_s = timeout_s
        self.headers = dict(headers)
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        if self._conn is not None:
            _, w = self._conn
            self._conn = None
            w.close()
            with contextlib.suppress(OSError, ConnectionError):
                await w.wait_closed()

    async def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str],
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """Send one request; return ``(status, body)``.  Raises OSError/TimeoutError."""
        async with self._lock:
            for attempt in (0, 1):
                fresh = self._conn is None
                try:
                    async with asyncio.timeout(self.timeout_s):  # no extra task, unlike wait_for
                        return await self._once(method, path, params, body, headers or {})
                except (ConnectionError, asyncio.IncompleteReadError, OSError):
                    await self.close()
                    if fresh or attempt:  # a reused idle connection may have been closed
                        raise
                except TimeoutError:
                    await self.close()
                    raise
        raise AssertionError("unreachable")

    async def _once(
        self,
        method: str,
        path: str,
        params: Mapping[str, str],
        body: bytes,
        headers: Mapping[str, str],
    ) -> tuple[int, bytes]:
        if self._conn is None:
            self._conn = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._conn
        target = f"{self.base}{path}?{urlencode(params, quote_via=quote)}"
        head = [f"{method} {target} HTTP/1.1", f"Host: {self.host}:{self.port}",
                f"Content-Length: {len(body)}"]  # fmt: skip
        head += [f"{k}: {v}" for k, v in (self.headers | dict(headers)).items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionError("connection closed")
        status = int(status_line.split()[1])
        length: int | None = None
        chunked = close = False
        while True:
            h = await reader.readline()
            if h in (b"\r\n", b"\n", b""):
                break
            name, _, value = h.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif name == "connection" and value.lower() == "close":
                close = True
        if status in (204, 304) or 100 <= status < 200 or method == "HEAD":
            data = b""
        elif chunked:
            parts = []
            while True:
                size = int((await reader.readline()).split(b";")[0], 16)
                if size == 0:
                    await reader.readline()
                    break
                parts.append(await reader.readexactly(size))
                await reader.readline()
            data = b"".join(parts)
        elif length is not None:
            data = await reader.readexactly(length)
        else:
            data = await reader.read()
            close = True
        if close:
            await self.close()
        return status, data


def _basic(username: str, password: str) -> dict[str, str]:
    if not username:
        return {}
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


# ------------------------------------------------------------------ writers


class InfluxWriter(Protocol):
    """Writes line-protocol points (millisecond timestamps)."""

    async def write(self, lines: Sequence[str]) -> None:
        """Write the points; raise :class:`InfluxWriteError` on failure."""

    async def close(self) -> None:
        """Release connections."""


class InfluxV1Writer:
    """``POST /write?db=<database>&rp=<rp>&precision=ms`` on InfluxDB 1.x.

    Parameters
    ----------
    url, database, retention_policy, username, password, timeout_s, gzip
        See :class:`InfluxConfig`.
    """

    def __init__(
        self,
        url: str,
        database: str,
        *,
        retention_policy: str = "",
        username: str = "",
        password: str = "",
        timeout_s: float = 5.0,
        gzip: bool = False,
    ) -> None:
        self._http = _Http(url, timeout_s, _basic(username, password))
        self._params = {"db": database, "precision": "ms"}
        if retention_policy:
            self._params["rp"] = retention_policy
        self.url = url
        self.gzip = gzip

    async def write(self, lines: Sequence[str]) -> None:
        """Write one batch (one request)."""
        await self.write_body("\n".join(lines).encode("utf-8"))

    async def write_body(self, body: bytes) -> None:
        """Write an already joined line-protocol body (compressed here if ``gzip``)."""
        headers = None
        if self.gzip:
            body = zlib.compress(body, 1, wbits=31)  # gzip container, fastest level
            headers = {"Content-Encoding": "gzip"}
        try:
            status, data = await self._http.request("POST", "/write", self._params, body,
                                                    headers)  # fmt: skip
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            raise InfluxWriteError(f"{self.url}: {type(exc).__name__}: {exc}",
                                   retriable=True) from None  # fmt: skip
        if status == 204:
            return
        text = data[:300].decode("utf-8", "replace")
        raise InfluxWriteError(f"{self.url}: HTTP {status}: {text}", retriable=status >= 500 or
                               status in (401, 403, 404, 408, 429), status=status)  # fmt: skip

    async def close(self) -> None:
        """Close the keep-alive connection."""
        await self._http.close()


class InfluxV2Writer:
    """InfluxDB 2.x via influxdb-client's synchronous write API (``/api/v2/write``).

    The HTTP request runs on the calling thread: it blocks the event loop for at
    most ``timeout_s``; batches keep that rare.
    """

    def __init__(
        self,
        url: str,
        org: str,
        bucket: str,
        token: str,
        *,
        timeout_s: float = 5.0,
        gzip: bool = False,
    ) -> None:
        from influxdb_client.client.influxdb_client import InfluxDBClient  # noqa: PLC0415
        from influxdb_client.client.write_api import SYNCHRONOUS  # noqa: PLC0415

        if not token:
            raise ConfigError("InfluxDB 2.x needs a token (CRAMPWATCH_INFLUX_TOKEN_FILE)")
        self.url, self.org, self.bucket = url, org, bucket
        self._client = InfluxDBClient(url=url, token=token, org=org, enable_gzip=gzip,
                                      timeout=int(timeout_s * 1000), retries=0)  # fmt: skip
        self._api = self._client.write_api(write_options=SYNCHRONOUS)

    async def write(self, lines: Sequence[str]) -> None:
        """Write one batch with ``precision=ms``."""
        from influxdb_client.domain.write_precision import WritePrecision  # noqa: PLC0415
        from influxdb_client.rest import ApiException  # noqa: PLC0415

        try:
            self._api.write(bucket=self.bucket, org=self.org, record="\n".join(lines),
                            write_precision=WritePrecision.MS)  # type: ignore[arg-type]  # fmt: skip
        except ApiException as exc:
            status = int(exc.status or 0)
            raise InfluxWriteError(f"{self.url}: HTTP {status}: {str(exc.body)[:300]}",
                                   retriable=status >= 500 or status in (401, 403, 404, 429),
                                   status=status) from None  # fmt: skip
        except Exception as exc:  # urllib3 connection errors and timeouts
            raise InfluxWriteError(f"{self.url}: {type(exc).__name__}: {exc}",
                                   retriable=True) from None  # fmt: skip

    async def close(self) -> None:
        """Close the client."""
        self._api.close()  # type: ignore[no-untyped-call]
        self._client.close()  # type: ignore[no-untyped-call]


def make_writer(cfg: InfluxConfig) -> InfluxV1Writer | InfluxV2Writer:
    """The writer ``cfg.version`` asks for."""
    if cfg.version == 2:
        return InfluxV2Writer(cfg.url, cfg.org, cfg.bucket, cfg.token, timeout_s=cfg.timeout_s,
                              gzip=cfg.gzip)  # fmt: skip
    return InfluxV1Writer(cfg.url, cfg.database, retention_policy=cfg.retention_policy,
                          username=cfg.username, password=cfg.password,
                          timeout_s=cfg.timeout_s, gzip=cfg.gzip)  # fmt: skip


class InfluxQuery:
    """Run InfluxQL over HTTP ``/query`` (1.x; 2.x through the v1-compat API with a token).

    Parameters
    ----------
    url, database
        Server and database (on 2.x: the DBRP-mapped database name).
    username, password
        1.x basic auth, optional.
    token
        2.x API token (``Authorization: Token ...``), optional.
    """

    def __init__(
        self,
        url: str,
        database: str,
        *,
        username: str = "",
        password: str = "",
        token: str = "",
        timeout_s: float = 10.0,
    ) -> None:
        headers = {"Authorization": f"Token {token}"} if token else _basic(username, password)
        self._http = _Http(url, timeout_s, headers)
        self.database = database

    async def raw(self, q: str, *, method: str = "GET") -> dict[str, Any]:
        """The decoded JSON response of one ``/query`` call (``epoch=ms``).

        Raises
        ------
        SinkError
            If the request fails or InfluxDB reports an error.
        """
        params = {"db": self.database, "q": q, "epoch": "ms"}
        try:
            status, data = await self._http.request(method, "/query", params)
        except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            raise SinkError(f"query failed: {type(exc).__name__}: {exc}") from None
        try:
            doc = json.loads(data)
        except ValueError:
            raise SinkError(f"query: HTTP {status}, not JSON: {data[:200]!r}") from None
        if status != 200 or "error" in doc:
            raise SinkError(f"query: HTTP {status}: {doc.get('error', doc)}")
        for result in doc.get("results", []):
            if "error" in result:
                raise SinkError(f"query: {result['error']}")
        return dict(doc)

    async def rows(self, q: str) -> list[dict[str, Any]]:
        """Rows of every series of the first statement, as dicts (``time`` in ms + group tags)."""
        doc = await self.raw(q)
        out: list[dict[str, Any]] = []
        results = doc.get("results") or [{}]
        for series in results[0].get("series", []):
            cols = series["columns"]
            tags = series.get("tags", {})
            for values in series["values"]:
                out.append({**tags, **dict(zip(cols, values, strict=True))})
        return out

    async def command(self, q: str) -> None:
        """Run a statement that changes state (``CREATE DATABASE ...``) with POST."""
        await self.raw(q, method="POST")

    async def close(self) -> None:
        """Close the connection."""
        await self._http.close()


# ------------------------------------------------------------------ batching + spool

Ack = Callable[[], None]


class BufferedWriter:
    """Batches points to an :class:`InfluxWriter`, spooling to disk while it fails.

    Parameters
    ----------
    writer
        Where batches go.
    spool
        Disk queue for batches that could not be written (one entry = one batch).
    batch_size, flush_interval_s, retry_interval_s
        See :class:`InfluxConfig`.

    Every :meth:`add` may carry an ``ack`` callback; it runs once the points are
    durable: written to InfluxDB, spooled to disk, or dropped as rejected by
    InfluxDB (4xx, counted).  The recorder acknowledges MQTT messages there.

    One batch is written in the background while the next one fills (InfluxDB
    parses on another core meanwhile); a full batch waits for the previous write,
    so at most two batches are held in memory.  Ordering is preserved: batches are
    written one at a time in order, and while the spool holds anything new
    batches are appended behind it.  When the spool is full *and* InfluxDB is
    down, the batch is held and retried (loudly); its acks do not run, so the MQTT
    broker keeps the messages and stops sending more (its in-flight window fills):
    back-pressure instead of loss.
    """

    def __init__(
        self,
        writer: InfluxWriter,
        spool: Outbox,
        *,
        batch_size: int = 5000,
        flush_interval_s: float = 0.2,
        retry_interval_s: float = 1.0,
    ) -> None:
        self.writer = writer
        self.spool = spool
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.retry_interval_s = retry_interval_s
        self._lines: list[str] = []
        self._acks: list[Ack] = []
        self._lock = asyncio.Lock()  # one InfluxDB write / spool drain at a time
        self._submit_lock = asyncio.Lock()
        self._inflight: asyncio.Task[None] | None = None
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()
        self.counts: Counter[str] = Counter()
        self._logged: set[str] = set()

    def _once(self, kind: str, msg: str, *args: object) -> None:
        self.counts[kind] += 1
        if kind not in self._logged:
            self._logged.add(kind)
            log.warning(msg + " (logged once; counted as %r)", *args, kind)
        else:
            log.debug(msg, *args)

    def start(self) -> None:
        """Start the flush timer and the spool drainer (needs a running loop)."""
        self._tasks = [asyncio.create_task(self._timer(), name="influx-flush"),
                       asyncio.create_task(self._drainer(), name="influx-spool")]  # fmt: skip
        if len(self.spool):
            log.warning("influx spool holds %d batches from a previous run; draining",
                        len(self.spool))  # fmt: skip
            self._wake.set()

    @property
    def buffered(self) -> int:
        """Points added but not yet handed to a write."""
        return len(self._lines)

    async def add(self, lines: Sequence[str], ack: Ack | None = None) -> None:
        """Queue points; a full batch starts a write (waiting for the previous one)."""
        self._lines.extend(lines)
        if ack is not None:
            self._acks.append(ack)
        if len(self._lines) >= self.batch_size:
            await self.submit()

    async def submit(self) -> None:
        """Start writing what is buffered now; wait only for the previous write to end."""
        async with self._submit_lock:
            if self._inflight is not None:
                await self._inflight  # never raises: _commit handles its errors
                self._inflight = None
            if not self._lines and not self._acks:
                return
            lines, acks = self._lines, self._acks
            self._lines, self._acks = [], []
            self._inflight = asyncio.create_task(self._commit(lines, acks), name="influx-write")
        await asyncio.sleep(0)  # the write sends its request now; InfluxDB parses meanwhile

    async def flush(self) -> None:
        """Write (or spool) everything buffered so far; its acks have run on return."""
        await self.submit()
        async with self._submit_lock:
            if self._inflight is not None:
                await self._inflight
                self._inflight = None

    async def _commit(self, lines: list[str], acks: list[Ack]) -> None:
        failures = 0
        while True:
            try:
                async with self._lock:
                    if lines:
                        await self._write_or_spool(lines)
                break
            except SinkError as exc:  # spool full (or disk failing) while InfluxDB is down
                failures += 1
                self.counts["store_failed"] += 1
                log.log(logging.ERROR if failures == 1 else logging.DEBUG,
                        "cannot store a batch of %d points: %s; holding it (retry every %.1f s),"
                        " its MQTT messages stay unacknowledged", len(lines), exc,
                        self.retry_interval_s)  # fmt: skip
                if self._closing:
                    return  # not acknowledged: the broker redelivers to the next run
                await asyncio.sleep(self.retry_interval_s)
                await self.drain_once()
        if failures:
            log.warning("held batch of %d points stored after %d attempts", len(lines), failures)
        for ack in acks:
            ack()

    async def _write_or_spool(self, lines: list[str]) -> None:
        if not len(self.spool):
            try:
                await self.writer.write(lines)
                self.counts["points_written"] += len(lines)
                self.counts["batches_written"] += 1
                return
            except InfluxWriteError as exc:
                if not exc.retriable:
                    self._once(f"rejected_{exc.status}", "InfluxDB rejected a batch of %d "
                               "points: %s", len(lines), exc)  # fmt: skip
                    self.counts["points_rejected"] += len(lines)
                    return
                self._once("unreachable", "InfluxDB write failed, spooling to disk: %s", exc)
        body = "\n".join(lines).encode("utf-8")
        self.spool.append(body)  # raises SinkError when full: see _commit
        self.counts["batches_spooled"] += 1
        self.counts["points_spooled"] += len(lines)
        self._wake.set()

    async def _timer(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            await self.submit()

    async def drain_once(self) -> bool:
        """Try to write spooled batches in order; return ``True`` when the spool is empty."""
        async with self._lock:
            if not len(self.spool):
                return True
            while (entry := self.spool.peek()) is not None:
                lines = entry.body.decode("utf-8").split("\n")
                try:
                    await self.writer.write(lines)
                    self.counts["points_written"] += len(lines)
                    self.counts["points_drained"] += len(lines)
                except InfluxWriteError as exc:
                    if exc.retriable:
                        return False
                    self._once(f"rejected_{exc.status}", "InfluxDB rejected a spooled batch: %s",
                               exc)  # fmt: skip
                    self.counts["points_rejected"] += len(lines)
                self.spool.ack(entry.seq)
            log.info("influx spool drained")
            return True

    async def _drainer(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            started = time.monotonic()
            while not await self.drain_once():
                await asyncio.sleep(self.retry_interval_s)
            if time.monotonic() - started > self.retry_interval_s:
                log.info("InfluxDB reachable again")

    def abort(self) -> None:
        """Stop at once: nothing more is written, acknowledged or flushed (tests: a kill)."""
        for task in [*self._tasks, self._inflight]:
            if task is not None:
                task.cancel()
        self.spool.close()

    async def close(self) -> None:
        """Flush, try once more to drain the spool, stop the tasks, close the writer.

        A batch that can be neither written nor spooled is given up (not acknowledged).
        """
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._closing = True
        try:
            await self.flush()
            if len(self.spool):
                await self.drain_once()
        finally:
            if len(self.spool):
                log.warning("influx spool keeps %d batches for the next run", len(self.spool))
            self.spool.close()
            await self.writer.close()
