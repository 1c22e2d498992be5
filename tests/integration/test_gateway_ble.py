"""Gateway orchestration: queue → decode → BandStream → sinks, shutdown, config.

These run the gateway's processing path on one event loop with a stand-in codec
and no radio.  The end-to-end BLE tests (bluez_testbed + ``crampwatch band``)
join this file once ``sensor_gateway.protocol``, ``firmware_sim`` and the
``bluez_testbed`` fixture are in the tree.
"""

from __future__ import annotations

import asyncio
import json
import struct
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from sensor_gateway.ble import DATA, LINK_LOST, STATUS, BandProtocol, Notification
from sensor_gateway.errors import ConfigError, MalformedPacketError, PacketTooShortError
from sensor_gateway.gateway import BandCodec, Gateway, GatewayConfig
from sensor_gateway.recordings import SignalChunk
from sensor_gateway.sinks import JsonLinesSink, MemorySink

FS = 2000.0
TPS = 32768 / FS


@dataclass(frozen=True)
class Pkt:
    seq: int
    tick: int
    emg_fs: float
    emg: NDArray[np.int16]
    acc: NDArray[np.int16]


def encode(seq: int, tick: int, emg: NDArray[np.int16], acc: NDArray[np.int16]) -> bytes:
    """Stand-in wire format: seq u16, tick u32, 100 EMG + 15 ACC int16."""
    return struct.pack("<HI", seq, tick) + emg.tobytes() + acc.tobytes()


def decode(data: bytes) -> Pkt:
    if len(data) < 6:
        raise PacketTooShortError(f"{len(data)} bytes")
    if (len(data) - 6) != 230:
        raise MalformedPacketError("bad payload length")
    seq, tick = struct.unpack_from("<HI", data)
    v = np.frombuffer(data, dtype="<i2", offset=6)
    return Pkt(seq, tick, FS, v[:100], v[100:].reshape(5, 3))


def decode_status(data: bytes) -> dict[str, object]:
    return {"battery_pct": data[0], "lead_off": bool(data[1])}


CODEC = BandCodec(decode, decode_status, (PacketTooShortError, MalformedPacketError))
PROTO = BandProtocol("0000feed-0000-1000-8000-00805f9b34fb", "0000feee-0000-1000-8000-00805f9b34fb")


class Rec:
    def __init__(self, path: Path, start: datetime, emg_fs: float, acc_fs: float | None) -> None:
        self.chunks: list[SignalChunk] = []
        self.closed = False

    def write(self, chunk: SignalChunk) -> None:
        self.chunks.append(chunk)

    def annotate(self, onset_s: float, duration_s: float | None, text: str) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def test_four_bands_through_the_gateway_with_malformed_and_lost_packets(tmp_path: Path) -> None:
    recs: dict[str, Rec] = {}

    def factory(path: Path, start: datetime, emg_fs: float, acc_fs: float | None) -> Rec:
        r = Rec(path, start, emg_fs, acc_fs)
        recs[path.parent.name] = r
        return r

    events_file = tmp_path / "events.jsonl"
    cfg = GatewayConfig(data_dir=tmp_path, queue_size=50)
    mem = MemorySink()
    rng = np.random.default_rng(0)
    n = 200
    emg = rng.integers(-2000, 2000, (4, n * 100)).astype(np.int16)
    acc = rng.integers(-900, 900, (4, n * 5, 3)).astype(np.int16)

    async def scenario() -> Gateway:
        gw = Gateway(cfg, [mem, JsonLinesSink(events_file)], protocol=PROTO, codec=CODEC,
                     recorder_factory=factory)  # fmt: skip
        rts = [gw.add_band(f"band{b}", None) for b in range(4)]
        gw.start()
        for i in range(n):
            for b, rt in enumerate(rts):
                if b == 1 and 50 <= i < 53:  # band1 loses 3 packets
                    continue
                blob = encode(i, round(i * 100 * TPS), emg[b, i * 100 : (i + 1) * 100],
                              acc[b, i * 5 : (i + 1) * 5])  # fmt: skip
                await rt.queue.put(Notification(DATA, 1.7e9 + i * 0.05, blob))
            if i == 10:
                await rts[2].queue.put(Notification(DATA, 0.0, b"\x01"))
                await rts[2].queue.put(Notification(DATA, 0.0, b"\x01\x02"))
                await rts[2].queue.put(Notification(DATA, 0.0, b"x" * 20))
                await rts[0].queue.put(Notification(STATUS, 0.0, bytes([77, 1])))
            await asyncio.sleep(0)
        await rts[3].queue.put(Notification(LINK_LOST, 1.7e9 + 10.0, reason="test"))
        while any(not rt.queue.empty() for rt in rts):
            await asyncio.sleep(0.01)
        await gw.shutdown()
        return gw

    gw = asyncio.run(scenario())
    for b in range(4):
        rt = gw.bands[f"band{b}"]
        rec = recs[f"band{b}"]
        assert rec.closed
        got = np.concatenate([c.emg_uv for c in rec.chunks])
        want = emg[b] * 0.5
        if b == 1:
            want = want.copy()
            want[5000:5300] = np.nan
        np.testing.assert_array_equal(got, want)
        st = gw.band_status(rt)
        assert st["missing_packets"] == (3 if b == 1 else 0)
    assert dict(gw.bands["band2"].malformed) == {"PacketTooShortError": 2,
                                                 "MalformedPacketError": 1}  # fmt: skip
    assert gw.band_status(gw.bands["band0"])["battery_pct"] == 77.0
    assert mem.closed
    lines = [json.loads(x) for x in events_file.read_text().splitlines()]
    finals = {d["band_id"]: d for d in lines if d["record"] == "status"}
    assert set(finals) == {"band0", "band1", "band2", "band3"}
    assert finals["band1"]["missing_emg"] == 300
    assert finals["band2"]["malformed"] == 3


def test_gateway_config_from_toml_table_and_env(tmp_path: Path) -> None:
    doc = {"gateway": {"adapter": "hci1", "bands": ["AA:BB:CC:DD:EE:01"], "watchdog_s": 2}}
    cfg = GatewayConfig.load(doc, environ={"CRAMPWATCH_GATEWAY_QUEUE_SIZE": "64"})
    assert cfg.adapter == "hci1"
    assert cfg.bands == ("AA:BB:CC:DD:EE:01",)
    assert cfg.watchdog_s == 2.0
    assert cfg.queue_size == 64
    assert cfg.link_settings().adapter == "hci1"
    with pytest.raises(ConfigError):
        GatewayConfig.load({"gateway": {"watchdog": 2}}, environ={})
    with pytest.raises(ConfigError):
        GatewayConfig.load({"gateway": {"backoff_max_s": 0.1}}, environ={})
