"""Two recorders in one MQTT shared subscription group split the stream; nothing is lost.

Real Mosquitto 2.x (shared subscriptions for MQTT 5 *and* 3.1.1 clients) and real
influxd.  The two recorders subscribe as ``$share/<group>/crampwatch/...`` with
their own client ids and spools, one speaking MQTT 5 and one 3.1.1.  The broker
hands each message to one member of the group; InfluxDB must end up with every
event exactly once, also when one member is killed mid-stream and comes back.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.fixtures.servers import InfluxServer, MosquittoServer
from tests.integration.mqtt_rig import (
    Rig,
    check_exactly_once,
    names,
    night,
    publish,
    run_rig,
    until,
)

pytestmark = pytest.mark.integration


async def _test_two_recorders_split_the_stream_exactly_once(rig: Rig) -> None:
    group = f"recorders-{next(names)}"  # a fresh group: no old sessions of other tests in it
    rec_a = await rig.new_recorder(role=f"{rig.role}-a", share_group=group)
    rec_b = await rig.new_recorder(role=f"{rig.role}-b", share_group=group, protocol="3.1.1")
    assert rec_a.subscriptions()[0] == (f"$share/{group}/crampwatch/band/+/event", 1)
    sink = rig.new_sink()
    assert await sink.wait_connected()
    sent = night(200, "band-a") + night(200, "band-b")
    await publish(sink, sent[:300])
    assert await sink.wait_drained(10.0)
    rows = await rig.wait_stored(300)
    check_exactly_once(rows, sent[:300])
    got_a, got_b = rec_a.counts["stored_EventMessage"], rec_b.counts["stored_EventMessage"]
    print(f"shared subscription: sent=300 received a={got_a} b={got_b} stored={len(rows)}")
    assert got_a > 0 and got_b > 0, "both members get part of the stream"
    assert got_a + got_b == 300, "each message goes to one member only"

    # one member is killed mid-stream; its unacknowledged share comes back with it
    rec_b.crash()
    await publish(sink, sent[300:350])
    assert await sink.wait_drained(10.0)
    await until(lambda: rec_a.counts["stored_EventMessage"] >= got_a + 10, 5.0)
    await asyncio.sleep(0.5)
    a_alone = rec_a.counts["stored_EventMessage"] - got_a  # the rest waits in b's session
    rec_b = await rig.new_recorder(role=f"{rig.role}-b", share_group=group, protocol="3.1.1")
    await publish(sink, sent[350:])
    rows = await rig.wait_stored(len(sent))
    check_exactly_once(rows, sent)
    print(f"shared subscription, member b killed and restarted: sent={len(sent)} (50 while b "
          f"was away, {a_alone} of them went to a) received a={rec_a.counts['stored_EventMessage']}"
          f" b={got_b}+{rec_b.counts['stored_EventMessage']} stored={len(rows)}")  # fmt: skip
    assert rec_b.counts["stored_EventMessage"] > 0


def test_two_recorders_split_the_stream_exactly_once(
    mosquitto: MosquittoServer, influxdb: InfluxServer, tmp_path: Path
) -> None:
    """See :func:`_test_two_recorders_split_the_stream_exactly_once`."""
    run_rig(_test_two_recorders_split_the_stream_exactly_once, mosquitto, influxdb, tmp_path)
