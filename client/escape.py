"""ssh-style escape sequences typed at the start of a line: ~. disconnects, ~d detaches,
~~ sends ~."""

from __future__ import annotations

from dataclasses import dataclass

HELP = (
    "Supported escape sequences:\n"
    " ~.  - disconnect (the session ends)\n"
    " ~d  - detach: leave the session running; `tether attach` comes back to it\n"
    " ~k  - end the session (a moderator, in `tether watch`)\n"
    " ~?  - this message\n"
    " ~~  - send the escape character\n"
    "(Escapes are only recognised immediately after a newline.)"
)


@dataclass
class EscapeResult:
    data: bytes
    disconnect: bool = False
    detach: bool = False
    end: bool = False
    help: int = 0  # how many times ~? was typed


class EscapeFilter:
    def __init__(self, escape: str | None = "~") -> None:
        self.escape = escape.encode()[:1] if escape else None
        self._line_start = True
        self._pending = False

    def feed(self, data: bytes) -> EscapeResult:
        if self.escape is None:
            return EscapeResult(data)
        out = bytearray()
        show_help = 0
        for byte in data:
            ch = bytes((byte,))
            if self._pending:
                self._pending = False
                if ch == b".":
                    return EscapeResult(bytes(out), disconnect=True, help=show_help)
                if ch == b"d":
                    return EscapeResult(bytes(out), detach=True, help=show_help)
                if ch == b"k":
                    return EscapeResult(bytes(out), end=True, help=show_help)
                if ch == b"?":
                    show_help += 1
                    continue
                if ch != self.escape:
                    out += self.escape
                out += ch
            elif self._line_start and ch == self.escape:
                self._pending = True
                continue
            else:
                out += ch
            self._line_start = ch in (b"\r", b"\n")
        return EscapeResult(bytes(out), help=show_help)
