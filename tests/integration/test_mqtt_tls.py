"""MQTT over TLS against a real Mosquitto TLS listener.

The certificates are made in the test by the openssl CLI (a throwaway CA, a
server certificate for ``localhost``/``127.0.0.1``, a client certificate): see
:class:`tests.fixtures.servers.TlsFiles`.  Checked: the gateway sink and a
subscriber talk over TLS with the CA from ``ca_file``; a client that cannot
verify the broker (no CA given) or speaks plain MQTT to the TLS port gets no
connection; a broker with ``require_certificate`` admits only clients with a
certificate from ``cert_file``/``key_file``.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cramp_signal.events import DetectorEvent
from sensor_gateway.band_stream import StampedEvent
from sensor_gateway.messages import Topics
from sensor_gateway.mqtt import MqttAdapter, MqttConfig
from sensor_gateway.mqtt_sink import MqttSink
from tests.fixtures.servers import OPENSSL, MosquittoServer, TlsFiles, serve_broker

pytestmark = pytest.mark.integration

T0 = 1_709_254_800.0


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    if not os.access(OPENSSL, os.X_OK):
        pytest.skip("openssl is not installed")
    return TlsFiles.create(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_broker(
    tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles
) -> Iterator[MosquittoServer]:
    """Mosquitto with one TLS listener (server certificate only) plus password and ACL."""
    yield from serve_broker(tmp_path_factory.mktemp("mosq-tls"), tls=tls_files)


@pytest.fixture(scope="module")
def mtls_broker(
    tmp_path_factory: pytest.TempPathFactory, tls_files: TlsFiles
) -> Iterator[MosquittoServer]:
    """The same with ``require_certificate true``."""
    yield from serve_broker(
        tmp_path_factory.mktemp("mosq-mtls"), tls=tls_files, require_certificate=True
    )


def _cfg(broker: MosquittoServer, user: str, **kw: object) -> MqttConfig:
    args: dict[str, object] = {"host": "localhost", "port": broker.port, "username": user,
                               "password": broker.passwords[user], "gateway_id": "gw-tls",
                               "reconnect_min_s": 0.5, "reconnect_max_s": 1.0}  # fmt: skip
    return MqttConfig(**(args | kw))  # type: ignore[arg-type]


async def _connects(cfg: MqttConfig, name: str, timeout_s: float = 2.0) -> bool:
    client = MqttAdapter(cfg, f"test-{name}")
    client.start()
    try:
        return await client.wait_connected(timeout_s)
    finally:
        await client.stop()


async def _logged(broker: MosquittoServer, text: str) -> None:
    """The broker's log says why a connection failed (so it failed for that reason)."""
    for _ in range(50):
        if text in broker.log_text():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{text!r} not in the broker log: {broker.log_text()[-1500:]}")


def test_events_cross_a_tls_listener_and_unverified_clients_get_nothing(
    tls_broker: MosquittoServer, tls_files: TlsFiles, tmp_path: Path
) -> None:
    ca = str(tls_files.ca)

    async def main() -> None:
        sub = MqttAdapter(_cfg(tls_broker, "recorder", tls=True, ca_file=ca), "test-tls-sub")
        sub.start()
        assert await sub.wait_connected(5.0)
        sub.subscribe([(Topics().event("band-a"), 1)])
        await asyncio.sleep(0.2)
        sink = MqttSink(_cfg(tls_broker, "gateway", tls=True, ca_file=ca, host="127.0.0.1",
                             outbox_dir=tmp_path / "outbox"), close_timeout_s=1.0)  # fmt: skip
        assert await sink.wait_connected(5.0)
        onset = DetectorEvent("spasm_onset", 1, 10.0, 10.1, {"env_uv": 80.0})
        await sink.publish_event("band-a", StampedEvent("band-a", onset, T0 + 10.0))
        assert await sink.wait_drained(5.0)
        got = json.loads((await asyncio.wait_for(sub.messages.get(), 5.0)).payload)
        assert (got["type"], got["episode"], got["details"]) == ("spasm_onset", 1, {"env_uv": 80.0})
        await sink.close()
        await sub.stop()

        # the broker's certificate cannot be verified against the system CAs
        assert not await _connects(_cfg(tls_broker, "recorder", tls=True), "no-ca")
        await _logged(tls_broker, "alert unknown ca")  # the client refused the broker
        # plain MQTT to the TLS port
        assert not await _connects(_cfg(tls_broker, "recorder"), "plain")
        await _logged(tls_broker, "wrong version number")

    asyncio.run(main())


def test_broker_requiring_client_certificates_admits_only_them(
    mtls_broker: MosquittoServer, tls_files: TlsFiles
) -> None:
    ca = str(tls_files.ca)

    async def main() -> None:
        without = _cfg(mtls_broker, "recorder", tls=True, ca_file=ca)
        assert not await _connects(without, "no-cert")
        await _logged(mtls_broker, "peer did not return a certificate")
        with_cert = _cfg(mtls_broker, "recorder", tls=True, ca_file=ca,
                         cert_file=str(tls_files.client_cert),
                         key_file=str(tls_files.client_key))  # fmt: skip
        assert await _connects(with_cert, "cert", timeout_s=5.0)

    asyncio.run(main())
