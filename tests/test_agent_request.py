"""The agent's sans-IO checks of what a HELLO carries (tether.agent.request), of run-as
accounts (root_refusal), of its replay caches (remembered only on accept, kept on disk),
and of HELLO sizes: each bound tested at the limit and one past it."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from nacl.public import PrivateKey
from nacl.signing import SigningKey

from tether.agent.process import root_refusal
from tether.agent.replay_state import ReplayState, ReplayStateError, replay_state_file
from tether.agent.request import RequestError, parse_request
from tether.handshake import (
    MAX_SKEW,
    AgentHandshake,
    ClientHandshake,
    HandshakeError,
    HelloRejected,
)
from tether.limits import (
    MAX_COLS,
    MAX_COMMAND_ARGS,
    MAX_COMMAND_BYTES,
    MAX_ENV_NAME_BYTES,
    MAX_ENV_VALUE_BYTES,
    MAX_ENV_VARS,
    MAX_GRANT_BYTES,
    MAX_HELLO_BYTES,
    MAX_MODE_BYTES,
    MAX_REASON_BYTES,
    MAX_ROWS,
    MAX_RUN_AS_BYTES,
    MAX_TERM_BYTES,
)

NOW = 1_700_000_000.0
BASE: dict[str, Any] = {"grant": "v4.public.x", "mode": "exec", "command": ["true"]}


def parse(**fields: Any) -> Any:
    return parse_request(dict(BASE, **fields))


def refused(**fields: Any) -> str:
    with pytest.raises(RequestError) as info:
        parse(**fields)
    return str(info.value)


# ----- each field at its limit, and one past -----


def test_grant_size() -> None:
    assert parse(grant="g" * MAX_GRANT_BYTES).grant == "g" * MAX_GRANT_BYTES
    assert refused(grant="g" * (MAX_GRANT_BYTES + 1)) == \
        f"the grant is {MAX_GRANT_BYTES + 1} bytes; the limit is {MAX_GRANT_BYTES}"
    for missing in (None, "", 7, ["v4"]):
        assert "carries no grant" in refused(grant=missing)


def test_command_bounds_are_the_grants() -> None:
    assert parse(command=["x"] * MAX_COMMAND_ARGS).command == ["x"] * MAX_COMMAND_ARGS
    assert refused(command=["x"] * (MAX_COMMAND_ARGS + 1)) == \
        f"the command has {MAX_COMMAND_ARGS + 1} arguments; the limit is {MAX_COMMAND_ARGS}"
    at_limit = ["a" * (MAX_COMMAND_BYTES - 1)]  # and its NUL
    assert parse(command=at_limit).command == at_limit
    assert refused(command=["a" * MAX_COMMAND_BYTES]) == \
        f"the command is {MAX_COMMAND_BYTES + 1} bytes; the limit is {MAX_COMMAND_BYTES}"
    assert "contains a NUL character" in refused(command=["a\0b"])
    for bad in (None, [], "true", [1]):
        assert "names its command as a non-empty list of strings" in refused(command=bad)
    assert parse(mode="shell", command=None).command is None
    assert refused(mode="shell", command=["true"]) == "only exec sessions name a command"


@pytest.mark.parametrize(("key", "limit"), [("reason", MAX_REASON_BYTES),
                                            ("run_as", MAX_RUN_AS_BYTES),
                                            ("mode", MAX_MODE_BYTES)])
def test_text_fields(key: str, limit: int) -> None:
    # Counted in UTF-8 bytes: 2 each. (A mode other than exec names no command.)
    parse(**{key: "é" * (limit // 2), "command": ["true"] if key != "mode" else None})
    assert refused(**{key: "é" * (limit // 2) + "x"}) == \
        f"the HELLO's {key} is {limit + 1} bytes; the limit is {limit}"
    assert refused(**{key: 5}) == f"the HELLO's {key} must be a string"
    assert refused(**{key: "a\0b"}) == f"the HELLO's {key} contains a NUL character"
    assert refused(**{key: "\ud800"}) == f"the HELLO's {key} is not valid UTF-8"


def test_term() -> None:
    assert parse(term="t" * MAX_TERM_BYTES).term == "t" * MAX_TERM_BYTES
    assert parse().term is None
    for bad in ("t" * (MAX_TERM_BYTES + 1), "", "xterm\x1b[31m", "../../etc", "xterm 256", 1):
        assert "the terminal type must be a name such as xterm-256color" in refused(term=bad)


@pytest.mark.parametrize(("cols", "rows"), [(1, 1), (MAX_COLS, MAX_ROWS), (80, 24)])
def test_geometry_in_range(cols: int, rows: int) -> None:
    req = parse(cols=cols, rows=rows)
    assert (req.cols, req.rows) == (cols, rows)


@pytest.mark.parametrize("bad", ["80", 80.0, 0, -1, MAX_COLS + 1, 70000, 2**31, None, True, [80]])
def test_geometry_out_of_range(bad: Any) -> None:
    expected = (f"the terminal size must be whole numbers of columns from 1 to {MAX_COLS} "
                f"and rows from 1 to {MAX_ROWS}")
    assert refused(cols=bad) == expected
    assert refused(rows=bad) == expected


def test_geometry_defaults() -> None:
    req = parse()
    assert (req.cols, req.rows) == (80, 24)


def test_env_count() -> None:
    full = {f"V{i}": "x" for i in range(MAX_ENV_VARS)}
    assert parse(env=full).env == full
    assert refused(env=dict(full, EXTRA="x")) == \
        f"the HELLO's env has {MAX_ENV_VARS + 1} variables; the limit is {MAX_ENV_VARS}"


def test_env_name() -> None:
    name = "N" * MAX_ENV_NAME_BYTES
    assert parse(env={name: "x"}).env == {name: "x"}
    expected = (f"an env variable name must be letters, digits and _, at most "
                f"{MAX_ENV_NAME_BYTES} bytes")
    for bad in (name + "N", "", "1X", "A=B", "A B", "LANG\n"):
        assert refused(env={bad: "x"}) == expected


def test_env_value() -> None:
    assert parse(env={"LANG": "v" * MAX_ENV_VALUE_BYTES}).env["LANG"] == "v" * MAX_ENV_VALUE_BYTES
    assert refused(env={"LANG": "v" * (MAX_ENV_VALUE_BYTES + 1)}) == \
        f"env variable LANG is {MAX_ENV_VALUE_BYTES + 1} bytes; the limit is {MAX_ENV_VALUE_BYTES}"
    assert refused(env={"LANG": "C\0"}) == "env variable LANG contains a NUL character"
    assert refused(env={"LANG": 1}) == "env variable LANG must have a string value"
    assert refused(env=["LANG=C"]) == "the HELLO's env must be an object of names and values"


def test_window_and_frame_are_clamped_not_refused() -> None:
    req = parse(max_frame=1, window=1 << 40)
    assert req.max_frame == 1024 and req.window == 1 << 20


# ----- run-as: root only by its own name -----


@pytest.mark.parametrize(("name", "uid", "allowed"), [
    ("root", 0, True),
    ("toor", 0, False),
    ("app-admin", 0, False),
    ("nobody", 65534, True),
    ("app-1", 1000, True),
])
def test_root_refusal(name: str, uid: int, allowed: bool) -> None:
    refusal = root_refusal(name, uid)
    assert (refusal is None) == allowed
    if not allowed:
        assert refusal == (f"account {name!r} has uid 0 (it is root under another name); root "
                           "is given only to grants whose run-as is literally 'root'")


# ----- the HELLO replay cache: sized by accepted HELLOs only -----


def _pair() -> tuple[AgentHandshake, SigningKey, PrivateKey]:
    key, x = SigningKey.generate(), PrivateKey.generate()
    return AgentHandshake(key, bytes(x), rand=os.urandom), key, x


def _client(key: SigningKey, x: PrivateKey) -> ClientHandshake:
    return ClientHandshake(client_key=SigningKey.generate(), agent_signing_key=bytes(key.verify_key),
                           agent_x25519=bytes(x.public_key), sid=os.urandom(16),
                           request={"grant": "g", "mode": "shell"}, rand=os.urandom)


def test_a_refused_hello_costs_no_memory() -> None:
    seen: dict[bytes, float] = {}
    key, x = SigningKey.generate(), PrivateKey.generate()
    agent = AgentHandshake(key, bytes(x), seen=seen, rand=os.urandom)
    for _ in range(200):  # HELLOs anyone can make: without a valid grant they are not accepted
        agent.open_hello(_client(key, x).hello(NOW), NOW)
    assert seen == {}
    msg = _client(key, x).hello(NOW)
    agent.accept(agent.open_hello(msg, NOW), {})
    assert list(seen.values()) == [NOW + 2 * MAX_SKEW]
    with pytest.raises(HelloRejected, match="replayed"):
        agent.open_hello(msg, NOW + 1)


def test_an_accepted_hello_stays_refused_in_a_new_agent_sharing_the_cache() -> None:
    seen: dict[bytes, float] = {}
    key, x = SigningKey.generate(), PrivateKey.generate()
    msg = _client(key, x).hello(NOW)
    first = AgentHandshake(key, bytes(x), seen=seen, rand=os.urandom)
    first.accept(first.open_hello(msg, NOW), {})
    with pytest.raises(HelloRejected, match="replayed"):
        AgentHandshake(key, bytes(x), seen=seen, rand=os.urandom).open_hello(msg, NOW + 5)


def test_hello_size_limit() -> None:
    agent, key, x = _pair()
    msg = _client(key, x).hello(NOW)
    at_limit = msg + bytes(MAX_HELLO_BYTES - len(msg))
    with pytest.raises(HandshakeError, match="hello failed authentication"):
        agent.open_hello(at_limit, NOW)  # read and decrypted (padding breaks the tag)
    with pytest.raises(HandshakeError, match=f"over the limit of {MAX_HELLO_BYTES}"):
        agent.open_hello(at_limit + b"\0", NOW)


# ----- the replay state file -----


def test_replay_state_round_trip_drops_expired(tmp_path: Path) -> None:
    path = tmp_path / "agent.replay.json"
    state = ReplayState.load(path, NOW)
    state.grants.update({"live": NOW + 60, "dead": NOW - 1})
    state.hellos.update({b"\1" * 32: NOW + 240, b"\2" * 32: NOW})
    state.save(NOW)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = ReplayState.load(path, NOW + 30)
    assert again.grants == {"live": NOW + 60}
    assert again.hellos == {b"\1" * 32: NOW + 240}
    assert ReplayState.load(path, NOW + 300).grants == {}


def test_replay_state_file_sits_beside_the_identity() -> None:
    assert replay_state_file(Path("/etc/tether/agent.json")) == Path("/etc/tether/agent.replay.json")


@pytest.mark.parametrize("content", [b"not json", b"[]", b'{"version": 9}',
                                     b'{"version": 1, "grants": {"a": "soon"}, "hellos": {}}'])
def test_a_damaged_replay_state_file_stops_the_agent_with_advice(tmp_path: Path,
                                                                content: bytes) -> None:
    path = tmp_path / "agent.replay.json"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(ReplayStateError, match="move it aside to start with an empty one"):
        ReplayState.load(path, NOW)


def test_an_exposed_replay_state_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "agent.replay.json"
    ReplayState(path).save(NOW)
    path.chmod(0o644)
    with pytest.raises(ReplayStateError, match="chmod 600"):
        ReplayState.load(path, NOW)
