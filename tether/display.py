"""Text from other principals or the network, made safe to print on an operator's terminal.

Agent names, presence labels, reasons, argv and recorded text all come from someone else.
Printed raw, a control character in them (ESC, CSI, OSC, BEL, a backspace, a carriage
return) drives the reader's terminal: it can hide lines, forge table rows, set the window
title or, on some emulators, write files. Every such field is printed through `safe`.
"""

from __future__ import annotations

import json


def _escape(c: str) -> str:
    code = ord(c)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def safe(value: object) -> str:
    """`value` as text with every non-printable character (C0, DEL, C1, format characters
    such as bidi overrides, line and paragraph separators) shown as a visible escape."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def safe_json(value: object) -> str:
    """`value` as one line of canonical JSON (sorted keys, no spaces) that is also safe to
    print: every character outside printable ASCII is a JSON escape, so nothing is lost and
    a program reading the line gets the same strings back."""
    text = json.dumps(value, ensure_ascii=True, sort_keys=True, separators=(",", ":"))
    return text.replace("\x7f", "\\u007f")  # DEL: ASCII, so ensure_ascii keeps it raw


__all__ = ["safe", "safe_json"]
