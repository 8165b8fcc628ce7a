"""The one error type the CLI turns into a single line on stderr and exit code 2, and the
"did you mean" its messages end with when a name is not found."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input or a missing prerequisite: the message says what is wrong and how to fix it."""


def did_you_mean(name: str, known: Iterable[str], n: int = 3) -> str:
    """`; did you mean a, b?` with the known names closest to `name`, or "" when none is close."""
    close = difflib.get_close_matches(name, list(dict.fromkeys(known)), n=n, cutoff=0.6)
    return f"; did you mean {', '.join(close)}?" if close else ""
