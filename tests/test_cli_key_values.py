"""A base64url key may begin with "-"; the CLI still takes it as the option's value."""

from __future__ import annotations

import subprocess
import sys

from tether.commands.main import glue_key_values


def test_a_key_beginning_with_a_dash_is_the_options_value() -> None:
    assert glue_key_values(["add", "alice", "--key", "-Ab_c", "--group", "ops"]) == \
        ["add", "alice", "--key=-Ab_c", "--group", "ops"]
    assert glue_key_values(["sid", "--authority-key", "-x"]) == ["sid", "--authority-key=-x"]


def test_after_the_separator_nothing_is_touched() -> None:
    argv = ["local", "--", "prog", "--key", "-v"]
    assert glue_key_values(argv) == argv


def test_a_trailing_option_is_left_for_argparse_to_report() -> None:
    assert glue_key_values(["--key"]) == ["--key"]


def test_verify_takes_a_dash_key_from_the_command_line(tmp_path: object) -> None:
    # Parsed, not refused by argparse (exit 2): the key is checked by verify itself.
    r = subprocess.run([sys.executable, "-m", "tether.commands.main", "verify", "0" * 32,
                        "--store", str(tmp_path), "--authority-key", "-" + "A" * 42],
                       capture_output=True, timeout=60)
    assert r.returncode != 2, r.stderr
    assert b"expected one argument" not in r.stderr
