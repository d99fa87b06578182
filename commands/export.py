"""`tether export SID`: a recorded session as asciicast v2 or as a text transcript."""

from __future__ import annotations

import argparse

from tether.commands.options import add_store_argument, open_store, store_dir


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Export a recorded session. asciicast: asciicast v2 for `asciinema play` and the "
        "asciinema web player, with output ('o'), input ('i'), resizes ('r') and markers ('m') "
        "for notices, recording gaps, hidden input and the exit status. Output is decoded as "
        "UTF-8 across event boundaries; bytes that are not UTF-8 become U+FFFD in the export "
        "only (the stored recording keeps them; `tether replay` plays them as they are). "
        "text: the transcript as it scrolled by, every line that scrolled off the screen and "
        "then the final screen, without what full-screen programs (vim, less, top) drew."
    )
    parser.add_argument("sid", help="the session id, or a unique prefix of it")
    parser.add_argument("--format", choices=("asciicast", "text"), default="asciicast",
                        help="asciicast (default) or text")
    parser.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    add_store_argument(parser)


def run(args: argparse.Namespace) -> int:
    import os
    import sys
    import tempfile
    from collections.abc import Iterable
    from pathlib import Path

    from tether.commands.main import UserError
    from tether.display import safe
    from tether.recorder.export import asciicast, transcript
    from tether.recorder.replay import Recording, ReplayError, resolve_sid

    store = store_dir(args)
    db = open_store(store)
    try:
        sid = resolve_sid(db, args.sid)
        rec = Recording.load(store, db, sid)
    except ReplayError as exc:
        raise UserError(str(exc)) from exc
    finally:
        db.close()
    chunks: Iterable[str]
    if args.format == "asciicast":
        chunks = asciicast(rec)
    elif not args.output and sys.stdout.isatty():
        # Recorded text on the reader's terminal is shown, never obeyed; a file keeps it as is.
        chunks = ["\n".join(safe(line) for line in transcript(rec).split("\n"))]
    else:
        chunks = [transcript(rec)]
    if not args.output:
        for chunk in chunks:
            sys.stdout.write(chunk)
        sys.stdout.flush()
        return 0
    target = Path(args.output).expanduser()
    # Write beside the target and rename, so a failed export leaves no half file.
    fd, tmp = tempfile.mkstemp(dir=target.parent if str(target.parent) else ".",
                               prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(chunks)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    print(f"wrote {target} ({args.format}, session {sid})", file=sys.stderr)
    return 0
