"""The one error type the CLI turns into a single line on stderr and exit code 2, and the
"did you mean" its messages end with when a name is not found."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping


class UserError(Exception):
    """Bad input or a missing prerequisite: the message says what is wrong and how to fix it."""


def did_you_mean(name: str, known: Iterable[str] | Mapping[str, Iterable[str]], n: int = 3) -> str:
    """`; did you mean a, b?` with the known names closest to `name`, or "" when none is close.
    `known` is the names, or maps each form compared with `name` to the names it stands for
    (`rb-r1` → `rb-r1-flora`, `rb-r1-lora`)."""
    shown = {form: list(names) for form, names in known.items()} if isinstance(known, Mapping) \
        else {form: [form] for form in known}
    close = difflib.get_close_matches(name, list(shown), n=n, cutoff=0.6)
    names = list(dict.fromkeys(full for form in close for full in shown[form]))[:n]
    return f"; did you mean {', '.join(names)}?" if names else ""
