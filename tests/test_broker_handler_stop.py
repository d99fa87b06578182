"""The embedded broker's connection handler (broker/embedded.py `_Handler`): a QoS 1
delivery that starts after its connection has gone must end, not wait for a PUBACK for
ever. Each such wait held one place in that client's delivery queue (`max_queued`), so a
device that reconnected often enough would have every message to it dropped.

In-process, with amqtt's real handler on a real socket pair."""

from __future__ import annotations

import asyncio
import socket

from amqtt.adapters import StreamReaderAdapter, StreamWriterAdapter
from amqtt.broker import BrokerContext
from amqtt.plugins.manager import PluginManager
from amqtt.session import Session

from tether.broker.embedded import _Handler


def test_a_delivery_after_the_connection_stopped_ends_and_stays_for_redelivery() -> None:
    async def scenario() -> tuple[str, int, int]:
        context = BrokerContext(broker=None)
        context.config = {"plugins": {}}  # as the embedded broker runs: no amqtt plugins
        near, far = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=near)
        handler = _Handler(PluginManager("amqtt.broker.plugins", context=context))
        session = Session()
        session.client_id = "device-1"
        session.clean_session = False  # persistent: kept messages go again on reconnect
        handler.attach(session, StreamReaderAdapter(reader), StreamWriterAdapter(writer))
        try:
            await handler.stop()  # the connection has gone
            try:
                await asyncio.wait_for(handler.mqtt_publish("t/1", b"reading", 1, False), 5)
                outcome = "acknowledged"
            except asyncio.CancelledError:
                outcome = "ended"
            except TimeoutError:
                outcome = "still waiting after 5 s"
            return outcome, len(handler._puback_waiters), len(session.inflight_out)
        finally:
            far.close()

    outcome, waiters, in_flight = asyncio.run(scenario())
    assert outcome == "ended"
    assert waiters == 0
    assert in_flight == 1  # kept for the persistent session's next connection
