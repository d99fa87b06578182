"""Agent labels are bounded where the administrator gives them, as where presence is read:
an agent enrolled with labels past the bounds would publish presence every reader skips."""

from __future__ import annotations

import pytest

from tether.commands.authority import _labels
from tether.commands.main import UserError
from tether.presence import MAX_LABEL_KEY, MAX_LABEL_VALUE, MAX_LABELS


def test_labels_at_their_bounds_are_taken() -> None:
    text = ",".join(f"k{i}=v" for i in range(MAX_LABELS))
    assert len(_labels(text)) == MAX_LABELS
    assert _labels(f"{'k' * MAX_LABEL_KEY}={'v' * MAX_LABEL_VALUE}") == {"k" * MAX_LABEL_KEY: "v" * MAX_LABEL_VALUE}


@pytest.mark.parametrize("text", [
    ",".join(f"k{i}=v" for i in range(MAX_LABELS + 1)),
    f"{'k' * (MAX_LABEL_KEY + 1)}=v",
    f"k={'v' * (MAX_LABEL_VALUE + 1)}",
    "=v",
])
def test_labels_past_their_bounds_are_refused_with_the_rule(text: str) -> None:
    with pytest.raises(UserError, match="label"):
        _labels(text)
