"""Agents enrol themselves with an activation code, on both brokers."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from stack import Stack, wait_for


def _activation(stack: Stack, *args: str) -> tuple[str, str]:
    r = stack.tether("authority", "activation", "create", *args)
    assert r.returncode == 0, r.stderr
    ident = re.search(rb"Activation ID:\s+(\S+)", r.stdout)
    code = re.search(rb"Activation code:\s+(\S+)", r.stdout)
    assert ident and code, r.stdout
    stack.broker.reload()  # the operator's step, as the command says
    return ident.group(1).decode(), code.group(1).decode()


def _enrol(stack: Stack, device: Path, act: str, code: str, name: str) -> tuple[int, bytes]:
    env = dict(stack.env, TETHER_HOME=str(device))
    r = stack.tether("agent", "enrol", "--activation", f"{act}:{code}", "--broker",
                     f"127.0.0.1:{stack.port}", "--name", name, "--out", str(device / f"{name}.json"),
                     env=env)
    return r.returncode, r.stdout + r.stderr


def test_enrol_run_and_list(fresh_stack: Stack, tmp_path: Path) -> None:
    act, code = _activation(fresh_stack, "--labels", "env=test,role=db", "--max", "1")
    rc, out = _enrol(fresh_stack, tmp_path, act, code, "dev1")
    assert rc == 0, out
    ident = tmp_path / "dev1.json"
    assert oct(ident.stat().st_mode & 0o777) == "0o600"
    assert code.encode() not in ident.read_bytes()
    fresh_stack.broker.reload()  # the new agent's credentials
    agent = fresh_stack.popen("agent", "--identity", str(ident))
    wait_for(lambda: fresh_stack.agent_status("dev1") == "online", what="enrolled agent online")
    # Rotate its keys: stop it, rotate (old key signs, new key agrees), start it again.
    from tether.edge.keys import Identity
    from tether.encoding import b64e

    old = Identity.load(ident)
    agent.terminate()
    agent.wait(15)
    rotated = fresh_stack.tether("agent", "--identity", str(ident), "rotate")
    assert rotated.returncode == 0, rotated.stderr
    new = Identity.load(ident)
    assert new.public_key != old.public_key and new.x25519_public != old.x25519_public
    registry = fresh_stack.home.registry.read_bytes()
    assert b64e(new.public_key).encode() in registry and b64e(old.public_key).encode() not in registry
    fresh_stack.popen("agent", "--identity", str(ident))
    wait_for(lambda: fresh_stack.agent_status("dev1") == "online", what="rotated agent online")
    listing = fresh_stack.tether("ls").stdout.decode()
    row = next(line for line in listing.splitlines() if line.startswith("dev1 "))
    assert "env=test,role=db" in row
    # Used up: a second device is refused, with the authority's reason.
    rc, out = _enrol(fresh_stack, tmp_path, act, code, "dev2")
    assert rc == 255 and b"used 1 of 1 times" in out, out
    audit = fresh_stack.tether("audit").stdout.decode()
    assert "enrolled" in audit and "enrol-refused" in audit


def test_wrong_code_and_expired_activation(fresh_stack: Stack, tmp_path: Path) -> None:
    act, code = _activation(fresh_stack, "--max", "5")
    wrong = ("X" if code[0] != "X" else "Y") + code[1:]
    rc, out = _enrol(fresh_stack, tmp_path, act, wrong, "dev3")
    assert rc == 255 and b"refused activation" in out, out
    assert not (tmp_path / "dev3.json").exists()
    short, short_code = _activation(fresh_stack, "--expires", "1s")
    deadline = time.time() + 1.0
    wait_for(lambda: time.time() > deadline, what="the activation to expire")
    rc, out = _enrol(fresh_stack, tmp_path, short, short_code, "dev4")
    assert rc == 255 and b"has expired" in out, out
    assert os.path.exists(tmp_path) and not (tmp_path / "dev4.json").exists()


def test_user_login_with_a_key_made_on_their_machine(fresh_stack: Stack, tmp_path: Path) -> None:
    from stack import OS_USER

    from tether.edge.keys import Identity, write_private_file

    laptop = dict(fresh_stack.env, TETHER_HOME=str(tmp_path / "laptop"))
    first = fresh_stack.tether("login", "--name", "dana", env=laptop)
    assert first.returncode == 0, first.stderr
    key = re.search(rb"--key (\S+)", first.stdout)
    assert key is not None
    added = fresh_stack.tether("user", "add", "dana", "--key", key.group(1).decode(), "--group", "ops")
    assert added.returncode == 0, added.stderr
    token = re.search(rb"tether login --token (\S+)", added.stdout)
    assert token is not None
    fresh_stack.broker.reload()
    policy = fresh_stack.home.policy
    write_private_file(policy, policy.read_bytes() + (
        '\n[[statement]]\nid = "ops"\neffect = "allow"\ngroups = ["ops"]\nagents = ["local"]\n'
        f'actions = ["exec"]\nrun_as = ["{OS_USER}"]\n').encode())
    done = fresh_stack.tether("login", "--token", token.group(1).decode(), env=laptop)
    assert done.returncode == 0, done.stderr
    r = fresh_stack.tether("run", "local", "--", "echo", "hello-dana", env=laptop)
    assert (r.returncode, r.stdout) == (0, b"hello-dana\n"), r.stderr
    # The private key exists only on the laptop.
    seed = Identity.load(tmp_path / "laptop" / "user.json").signing_seed
    from tether.encoding import b64e

    for f in fresh_stack.home.root.rglob("*"):
        if f.is_file():
            assert b64e(seed).encode() not in f.read_bytes(), f
    # Rotation: both keys sign the change; the registry then holds only the new key.
    before = Identity.load(tmp_path / "laptop" / "user.json").public_key
    rotated = fresh_stack.tether("login", "--rotate", env=laptop)
    assert rotated.returncode == 0, rotated.stderr
    after = Identity.load(tmp_path / "laptop" / "user.json").public_key
    assert after != before
    registry = fresh_stack.home.registry.read_bytes()
    assert b64e(after).encode() in registry and b64e(before).encode() not in registry
    again = fresh_stack.tether("run", "local", "--", "echo", "still-dana", env=laptop)
    assert (again.returncode, again.stdout) == (0, b"still-dana\n"), again.stderr


def test_enrolment_waits_for_fingerprint_approval(fresh_stack: Stack, tmp_path: Path) -> None:
    act, code = _activation(fresh_stack, "--approve", "--labels", "site=lab")
    env = dict(fresh_stack.env, TETHER_HOME=str(tmp_path))
    device = fresh_stack.popen(
        "agent", "enrol", "--activation", f"{act}:{code}", "--broker", f"127.0.0.1:{fresh_stack.port}",
        "--name", "dev5", "--out", str(tmp_path / "dev5.json"), "--wait", "60",
        env=env, stdout=-1, stderr=-1)
    listed = wait_for(lambda: re.search(rb"dev5\s+(SHA256:\S+)",
                                        fresh_stack.tether("authority", "agents", "pending").stdout),
                      what="the pending enrolment")
    assert not (tmp_path / "dev5.json").exists()
    approved = fresh_stack.tether("authority", "agents", "approve", "dev5")
    assert approved.returncode == 0, approved.stderr
    out, err = device.communicate(timeout=30)
    assert device.returncode == 0, err
    assert listed.group(1) in out, "the device and the administrator saw different fingerprints"
    fresh_stack.broker.reload()
    fresh_stack.popen("agent", "--identity", str(tmp_path / "dev5.json"))
    wait_for(lambda: fresh_stack.agent_status("dev5") == "online", what="approved agent online")
