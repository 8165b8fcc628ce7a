"""Definitions shipped as TOML data files inside the package — `languages/*.toml`
(`harness.languages`) and `benchmarks/*.toml` (`harness.benchmarks`): list them, and load one
by its file stem through its parser, with the checks every definition shares."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any, TypeVar

from harness.errors import UserError

T = TypeVar("T")


def definition_files(package: str) -> dict[str, Traversable]:
    """The package's TOML files, by file stem."""
    root = resources.files(package)
    return {p.name[: -len(".toml")]: p for p in root.iterdir() if p.name.endswith(".toml")}


def load_definition(package: str, folder: str, stem: str, parse: Callable[[dict[str, Any], str], T]) -> T:
    """Parse `<folder>/<stem>.toml`; a broken file, or one whose `key` is not its file name,
    is a one-line UserError naming the file."""
    where = f"{folder}/{stem}.toml"
    try:
        definition = parse(tomllib.loads(definition_files(package)[stem].read_text(encoding="utf-8")), where)
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        raise UserError(f"{where} is invalid: {exc}") from None
    key = getattr(definition, "key", stem)
    if key != stem:
        raise UserError(f"{where} declares key '{key}'; it must equal the file name")
    return definition
