"""Definitions shipped as TOML data files inside the package — `languages/*.toml`
(`harness.languages`) and `benchmarks/*.toml` (`harness.benchmarks`): list them, load one by
its file stem through its parser, with the checks every definition shares, and the pydantic
base (`Table`, `validate`) their schemas are written in."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from harness.errors import UserError

T = TypeVar("T")
M = TypeVar("M", bound="Table")
SHOWN_ERRORS = 3  # a file with more problems shows its first few, on one line


def _one_as_list(value: Any) -> Any:
    return [value] if isinstance(value, str | int) and not isinstance(value, bool) else value


def non_empty(message: str) -> AfterValidator:
    """A list that must hold something (checked after its items, so a bad item is one error,
    not also "too short")."""
    def check(value: Any) -> Any:
        if not value:
            raise ValueError(message)
        return value
    return AfterValidator(check)


# Field types the TOML schemas share: TOML has no null, and nothing is coerced (no "5" for 5).
Name = Annotated[StrictStr, Field(min_length=1)]
Strings = Annotated[tuple[StrictStr, ...], BeforeValidator(_one_as_list)]  # "a" or ["a", "b"]
Ints = Annotated[tuple[StrictInt, ...], BeforeValidator(_one_as_list)]  # 1 or [1, 2]


class Table(BaseModel):
    """A TOML table: every key known, nothing coerced. `kind` names it in the one line an
    unknown key gives, which also lists the keys it takes."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: ClassVar[str] = "table"

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and (unknown := set(data) - set(cls.model_fields)):
            known = ", ".join(cls.model_fields)
            raise ValueError(f"unknown {cls.kind} keys {sorted(unknown)} (known: {known})")
        return data


def validate(model: type[M], data: Any, where: str) -> M:
    """`data` as `model`, or a one-line ValueError naming the file and each bad field
    (`languages/py.toml.steps[0].timeout_s: Input should be greater than 0`)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(error, where) for error in exc.errors()]
        more = len(problems) - SHOWN_ERRORS
        raise ValueError("; ".join(problems[:SHOWN_ERRORS]) + (f"; and {more} more" if more > 0 else "")) \
            from None


def _describe(error: Any, where: str) -> str:
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"])
    if error["type"] == "value_error":
        message = str(error["ctx"]["error"])
    elif error["type"] == "missing":
        message = "is required"
    else:
        message = error["msg"]
    return f"{where}{path}: {message}"


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
