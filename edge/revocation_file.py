"""revocations.json: the authority's revocation list on disk (0600, refused when exposed:
tether.edge.keys). The list itself and its bulletin are tether.revocation."""

from __future__ import annotations

from pathlib import Path

from tether.edge.keys import read_private_file, write_private_file
from tether.encoding import dumps, loads
from tether.revocation import RevocationError, Revocations


def load(path: Path) -> Revocations:
    """The list in `path`; an empty one if there is no file yet."""
    if not path.exists():
        return Revocations()
    try:
        doc = loads(read_private_file(path))
    except ValueError as exc:
        raise RevocationError(f"{path} is not valid JSON") from exc
    if not isinstance(doc, dict):
        raise RevocationError(f"{path} is not a JSON object")
    return Revocations.from_doc(doc)


def save(path: Path, revocations: Revocations) -> None:
    write_private_file(path, dumps(revocations.to_doc()))
