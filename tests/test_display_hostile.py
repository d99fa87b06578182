"""Text from other principals never drives an administrator's terminal (issue #9, hole 4).

Agents write their presence (labels, platform, version), users write the reasons and
names that end up in the audit trail, and agents write the refusal that `tether run`
prints. Each test plants control sequences (ESC/CSI/OSC, BEL, CR, newlines, C1, bidi
overrides) there, runs the real command and checks that what reaches the terminal is
printable text that shows the sequences escaped. Malformed presence is skipped with one
warning instead of a traceback.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey
from stack import TETHER, Stack, policy, statement
from support.brokers import ProbeClient

from tether import presence
from tether.display import safe, safe_json
from tether.edge.keys import Identity
from tether.encoding import b64e
from tether.signed import BadDocument, sign_document
from tether.topics import Topics

# Clear the screen, set the title, write the clipboard, ring, overwrite the line, start a
# fake row, a C1 CSI, a right-to-left override, DEL.
HOSTILE = ("\x1b[2J\x1b[H", "\x1b]0;pwned\x07", "\x1b]52;c;cHduZWQ=\x07", "\x07",
           "ok\rFORGED", "x\nfake-row  online", "\x9b31m", "\u202eevil", "\x7f")
RAW = ("\x1b", "\x07", "\r", "\x9b", "\u202e", "\x7f")


def printable(text: str) -> bool:
    """Every line prints as itself: no control, format or separator characters."""
    return all(line.isprintable() for line in text.split("\n"))


# ----- the escaper (no broker) -----


@pytest.mark.parametrize("hostile", HOSTILE)
def test_safe_and_safe_json_leave_nothing_raw(hostile: str) -> None:
    shown = safe(hostile)
    assert shown.isprintable() and not any(c in shown for c in (*RAW, "\n"))
    line = safe_json({"label": hostile})
    assert all(" " <= c <= "~" for c in line)
    assert json.loads(line) == {"label": hostile}  # nothing lost for programs


def test_safe_keeps_printable_text() -> None:
    for text in ("web-1", "linux/x86_64 6.1.0", "prod east=ü 東京 ☃", ""):
        assert safe(text) == text


# ----- the presence document's bounds (no broker) -----

KEY = SigningKey(bytes(range(32)))


def doc(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "web1", "online": True, "seen": 1_700_000_000.0, "ed25519": b64e(bytes(KEY.verify_key)),
        "x25519": b64e(bytes(32)), "labels": {"env": "prod"}, "platform": "linux/x86_64 6.1.0",
        "version": "0.1.0", "capabilities": ["shell", "exec"],
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


MALFORMED: dict[str, dict[str, Any]] = {
    "seen-text": doc(seen="yesterday"),
    "seen-bool": doc(seen=True),
    "online-text": doc(online="yes"),
    "labels-list": doc(labels=["env=prod"]),
    "label-number": doc(labels={"env": 1}),
    "label-empty-key": doc(labels={"": "x"}),
    "too-many-labels": doc(labels={f"k{i}": "v" for i in range(presence.MAX_LABELS + 1)}),
    "label-too-long": doc(labels={"env": "x" * (presence.MAX_LABEL_VALUE + 1)}),
    "label-key-too-long": doc(labels={"k" * (presence.MAX_LABEL_KEY + 1): "x"}),
    "platform-list": doc(platform=["linux"]),
    "platform-too-long": doc(platform="p" * (presence.MAX_TEXT + 1)),
    "capabilities-text": doc(capabilities="shell"),
    "name-invalid": doc(name="web1/../x"),
    "name-missing": doc(name=None),
    "x25519-short": doc(x25519=b64e(bytes(16))),
}


def test_a_real_presence_document_parses() -> None:
    blob = presence.presence_document(KEY, "web1", bytes(32), {"env": "prod"}, True, 1.0, ["shell"])
    parsed = presence.parse_presence(blob)
    assert (parsed.name, parsed.online, parsed.labels, parsed.capabilities) == (
        "web1", True, {"env": "prod"}, ("shell",))
    assert presence.read_presence(blob)["name"] == "web1"
    at_limits = doc(labels={f"{i:0{presence.MAX_LABEL_KEY}d}": "v" * presence.MAX_LABEL_VALUE
                            for i in range(presence.MAX_LABELS)})
    assert len(presence.parse_presence(sign_document(KEY, presence.DOMAIN, at_limits)).labels) == 64


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_presence_is_refused(case: str) -> None:
    blob = sign_document(KEY, presence.DOMAIN, MALFORMED[case])
    with pytest.raises(BadDocument):
        presence.parse_presence(blob)
    with pytest.raises(BadDocument):
        presence.read_presence(blob)


def test_oversized_presence_and_status_are_refused_before_parsing() -> None:
    big = sign_document(KEY, presence.DOMAIN, doc(labels={f"k{i}": "\x1b" * 200 for i in range(60)}))
    with pytest.raises(BadDocument, match="bytes"):
        presence.parse_presence(big)
    status = sign_document(KEY, presence.STATUS_DOMAIN, {"online": True, "ts": 1.0, "pad": "x" * 2000})
    with pytest.raises(BadDocument, match="bytes"):
        presence.read_status(status, bytes(KEY.verify_key))
    for bad in ({"online": "yes", "ts": 1.0}, {"online": True, "ts": "now"}, {"online": True}):
        with pytest.raises(BadDocument):
            presence.read_status(sign_document(KEY, presence.STATUS_DOMAIN, bad), bytes(KEY.verify_key))


# ----- `tether ls` on a real broker -----


def _hostile_presence(name: str, hostile: str) -> bytes:
    key = SigningKey.generate()
    return sign_document(key, presence.DOMAIN, {
        "name": name, "online": True, "seen": time.time(), "ed25519": b64e(bytes(key.verify_key)),
        "x25519": b64e(bytes(32)), "labels": {"env": hostile, hostile[:8] or "k": "v"},
        "platform": f"linux{hostile}", "version": hostile, "capabilities": ["shell"],
    })


def _malformed_presence(name: str, case: str) -> bytes:
    if case == "not-json":
        return bytes(64) + b"{not json"
    key = SigningKey.generate()
    body = dict(MALFORMED[case], ed25519=b64e(bytes(key.verify_key)))
    if "name" in body and case != "name-invalid":
        body["name"] = name
    return sign_document(key, presence.DOMAIN, body)


@pytest.fixture
def planted(stack: Stack) -> Iterator[tuple[list[str], list[str]]]:
    """Retained presence from hostile and malformed 'agents', published by an admin (who
    may write any presence topic); cleared afterwards."""
    spy = Identity.load(stack.spy_identity)
    topics = Topics()
    tag = os.urandom(2).hex()
    hostile = [f"evil{tag}-{i}" for i in range(len(HOSTILE))]
    cases = ["not-json", "seen-text", "labels-list", "too-many-labels", "label-too-long",
             "platform-too-long", "online-text"]
    malformed = [f"bad{tag}-{i}" for i in range(len(cases))]
    messages = [(topics.presence(n), _hostile_presence(n, h)) for n, h in zip(hostile, HOSTILE, strict=True)]
    messages += [(topics.presence(n), _malformed_presence(n, c)) for n, c in zip(malformed, cases, strict=True)]
    # A genuine document under another agent's topic, and a status that no key signs.
    messages.append((topics.presence(f"copy{tag}"), _hostile_presence(hostile[0], "plain")))
    messages.append((topics.status(hostile[1]), b"\x1b]0;status\x07" * 10))
    with ProbeClient(("127.0.0.1", stack.port), spy.name, spy.broker["password"]) as admin:
        assert admin.connect()
        try:
            for topic, payload in messages:
                admin.publish(topic, payload, qos=1, retain=True)
            yield hostile, [*malformed, f"copy{tag}"]
        finally:
            for topic, _ in messages:
                admin.publish(topic, b"", qos=1, retain=True)


def test_ls_escapes_hostile_presence_and_skips_malformed_with_one_warning(
    stack: Stack, planted: tuple[list[str], list[str]]
) -> None:
    hostile, malformed = planted
    r = stack.tether("ls", timeout=30)
    out, err = r.stdout.decode(), r.stderr.decode()
    assert r.returncode == 0, err
    assert "Traceback" not in err
    assert printable(out) and printable(err), (out, err)
    rows = out.splitlines()
    listed = {line.split()[0] for line in rows[1:]}
    assert set(hostile) <= listed and "local" in listed
    assert not listed & set(malformed)
    assert len(rows) == 1 + len(listed)  # no forged rows
    for name, text in zip(hostile, HOSTILE, strict=True):
        row = next(line for line in rows if line.startswith(name + " "))
        assert f"linux{safe(text)}" in row and safe(text) in row
    assert "\\x1b]0;pwned\\x07" in out and "\\u202eevil" in out and "ok\\x0dFORGED" in out
    warnings = [line for line in err.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("tether ls: ignored"), err
    assert malformed[0] in warnings[0]


def test_ls_json_is_ascii_and_loses_nothing(stack: Stack, planted: tuple[list[str], list[str]]) -> None:
    hostile, _ = planted
    r = stack.tether("ls", "--json", timeout=30)
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode()
    assert all(" " <= c <= "~" for c in out.replace("\n", ""))
    rows = {row["name"]: row for row in map(json.loads, out.splitlines())}
    for name, text in zip(hostile, HOSTILE, strict=True):
        assert rows[name]["version"] == text
        assert rows[name]["platform"] == f"linux{text}"


# ----- `tether audit` -----


def test_audit_escapes_fields_written_by_other_principals(tmp_path: Path) -> None:
    """The entry as the audit log stores it: signed and chained by the authority, with
    the fields a user's request filled in."""
    from tether.authority.audit import AuditLog
    from tether.authority.provision import authority_identity, ensure_local_setup
    from tether.edge.home import Home

    home = Home(tmp_path / "home")
    ensure_local_setup(home, "127.0.0.1", 1883)
    log = AuditLog(home.root / "authority" / "audit.jsonl", authority_identity(home).signing_key)
    for i, text in enumerate(HOSTILE):
        log.append("grant-denied", user=f"mallory{text}", agent=f"web{i}{text}", mode=text,
                   run_as=text, reason=f"because{text}", why="denied", command=["echo", f"a b{text}"])
    env = dict(os.environ, TETHER_HOME=str(home.root))
    for args in ((), ("--json",)):
        r = subprocess.run([TETHER, "audit", *args], capture_output=True, env=env, timeout=60)
        out = r.stdout.decode()
        assert r.returncode == 0, r.stderr.decode()
        assert len(out.splitlines()) == len(HOSTILE)
        assert printable(out) and not any(c in out for c in RAW), out
    r = subprocess.run([TETHER, "audit"], capture_output=True, env=env, timeout=60)
    lines = r.stdout.decode().splitlines()
    for line, text in zip(lines, HOSTILE, strict=True):
        assert f"mode={safe(text)}" in line and "agent=web" in line and safe(text) in line
        assert f"command=[echo 'a b{safe(text)}']" in line, line  # what ran, shell-quoted


def test_denied_request_with_a_hostile_reason_shows_escaped(stack: Stack) -> None:
    """A real request: bob (in no statement) asks with a reason. The authority refuses
    control characters in reasons outright, but format characters (bidi overrides) are
    text it accepts, so they reach the audit trail; both answers and the audit line the
    administrator reads print as text."""
    def run_as_bob(reason: str) -> str:
        r = stack.tether("run", "--identity", str(stack.bob_identity), "--reason", reason,
                         "local", "--", "true", timeout=60)
        err = r.stderr.decode()
        assert r.returncode != 0 and printable(err) and not any(c in err for c in RAW), err
        return err

    assert "control characters" in run_as_bob("".join(HOSTILE))
    assert "denied" in run_as_bob("fix \u202eevil\u2066 now")
    audit = stack.tether("audit", "--user", "bob", timeout=60)
    out = audit.stdout.decode()
    denied = [line for line in out.splitlines() if "grant-denied" in line]
    assert denied and printable(out) and not any(c in out for c in RAW), out
    assert "reason='fix \\u202eevil\\u2066 now'" in denied[-1]


# ----- an agent's refusal, as `tether run` prints it -----


async def _refusing_agent(agent: Identity, reason: str, ready: asyncio.Event,
                          done: asyncio.Event) -> None:
    """A registered agent that answers every HELLO with a hostile refusal."""
    from tether.edge.mqtt import BrokerSettings, MqttConnection
    from tether.handshake import AgentHandshake
    from tether.topics import A2C

    topics = Topics()
    hs = AgentHandshake(agent.signing_key, agent.x25519_secret or b"", rand=os.urandom)
    conn: MqttConnection | None = None

    def on_message(topic: str, payload: bytes) -> None:
        parsed = topics.parse_handshake(topic)
        if parsed is None or conn is None:
            return
        hello = hs.open_hello(payload, time.time())
        conn.publish(topics.session(agent.name, parsed[1], hello.sid.hex(), A2C),
                     hello.refuse(reason), qos=1)

    conn = MqttConnection(BrokerSettings.from_identity(agent.name, agent.broker), on_message)
    await conn.connect()
    await conn.subscribe_confirmed(topics.handshake_inbox(agent.name), 1)
    ready.set()
    await done.wait()
    await conn.close()


def test_run_escapes_an_agents_refusal(stack: Stack) -> None:
    agent = stack.add_agent("refuser")
    name = agent.name
    reason = "no" + "".join(HOSTILE)
    body = statement().replace('agents = ["local"]', f'agents = ["local", "{name}"]')

    async def scenario() -> tuple[int, str]:
        ready, done = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(_refusing_agent(agent, reason, ready, done))
        await asyncio.wait_for(ready.wait(), 15)
        proc = await asyncio.create_subprocess_exec(
            TETHER, "run", name, "--", "true", env=stack.env, cwd=stack.root,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        done.set()
        await task
        return proc.returncode or 0, err.decode()

    with policy(stack, body):
        code, err = asyncio.run(scenario())
    assert code != 0 and "refused the session" in err, err
    assert printable(err) and not any(c in err for c in RAW), err
    assert "\\x1b]0;pwned\\x07" in err and "\\u202eevil" in err


# ----- an agent's NOTICE, as the client prints it beside the session -----


def test_agent_notice_is_printed_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    from tether.client.terminal import show_frame
    from tether.frames import Frame, FrameType

    for text in HOSTILE:
        show_frame(Frame(FrameType.NOTICE, 0, 1, 0, f"recording frozen{text}".encode()))
        err = capsys.readouterr().err
        assert err.startswith("tether: recording frozen") and safe(text) in err, err
        assert not any(c in err.rstrip("\n") for c in RAW), err
