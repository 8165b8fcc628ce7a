"""Reading and writing MultiPL-E files (gzip JSON or plain JSON), atomically."""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.records import Completions, ProblemResults


def write_json(path: Path, data: Any) -> None:
    """Write JSON (gzipped when the name ends in .gz) atomically."""
    # ASCII escapes (as MultiPL-E's own json.dump) keep lone surrogates from model output valid.
    raw = json.dumps(data).encode("ascii")
    if path.suffix == ".gz":
        raw = gzip.compress(raw, mtime=0)
    write_bytes(path, raw)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_bytes(path: Path, raw: bytes) -> None:
    """Write via a temp file and rename, so a killed process (or a full disk) never leaves a
    half-written file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename is None:  # a failed write names no file: say which one it was
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    """Read a .json or .json.gz file; a corrupt one is a one-line UserError."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
        return json.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        raise UserError(f"file not found: {path}") from None
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: corrupt or not JSON ({type(exc).__name__}: {exc})") from None


def read_completions(path: Path) -> Completions:
    data = read_json(path)
    try:
        return Completions.from_json(data)
    except (KeyError, TypeError) as exc:
        raise UserError(
            f"{path}: not a MultiPL-E completions file (missing or bad field {exc})"
        ) from None


def write_completions(path: Path, completions: Completions) -> None:
    write_json(path, completions.to_json())


def read_results(path: Path) -> ProblemResults:
    data = read_json(path)
    try:
        return ProblemResults.from_json(data)
    except (KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a MultiPL-E results file (missing or bad field {exc})") from None


def write_results(path: Path, results: ProblemResults) -> None:
    write_json(path, results.to_json())


def results_path_for(completions_path: Path) -> Path:
    """`HumanEval_1_x.json.gz` → `HumanEval_1_x.results.json.gz` (MultiPL-E's naming)."""
    name = completions_path.name
    for suffix in (".json.gz", ".json"):
        if name.endswith(suffix):
            return completions_path.with_name(name[: -len(suffix)] + ".results.json.gz")
    return completions_path.with_name(name + ".results.json.gz")
