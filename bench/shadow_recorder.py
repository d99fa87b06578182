"""A stand-in for a one-stream recorder, for bench/compare_ssh.py --shadow-recorder.

Subscribes to the agent-to-client stream of the second user's sessions (what that
client reads), appends every message to a file and fsyncs in group commits (one in
flight at a time), with no acks, no pacing, no decryption and no index. The bench then
runs that user unrecorded: the agent sends each output byte once and the broker fans
it out to the client and to this process, as in issue 11's one-stream design. What it
measures is a lower bound on a real one-stream recorder's cost.

    python3 bench/shadow_recorder.py IDENTITY.json TOPIC_FILTER OUTFILE
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path


async def run(identity: Path, topic: str, outfile: Path) -> None:
    from tether.edge.keys import Identity
    from tether.edge.mqtt import BrokerSettings, MqttConnection

    ident = Identity.load(identity)
    out = os.open(outfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    loop = asyncio.get_running_loop()
    pending: list[bytes] = []
    busy = False

    def commit(data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(out, view):]
        os.fsync(out)

    def flush() -> None:
        nonlocal busy
        if busy or not pending:
            return
        data = b"".join(pending)
        pending.clear()
        busy = True

        def done(_fut: object) -> None:
            nonlocal busy
            busy = False
            flush()

        loop.run_in_executor(None, commit, data).add_done_callback(done)

    def on_message(_topic: str, payload: bytes) -> None:
        pending.append(payload)
        loop.call_soon(flush)

    conn = MqttConnection(BrokerSettings.from_identity(ident.name, ident.broker), on_message)
    conn.subscribe(topic, 0)
    await conn.connect()
    print("shadow recorder is up", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(run(Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])))
