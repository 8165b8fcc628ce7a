"""The run directory: where each stage's files live, the manifest, and resume bookkeeping.

    results/<run-id>/
      manifest.json
      <model>/<adapter|base>/<benchmark>-<lang>/<problem>.json.gz          completions
      <model>/<adapter|base>/<benchmark>-<lang>/<problem>.results.json.gz  execution results
      scores.csv · cells.csv · comparisons.csv · statuses.csv   tables (CSV)
      table.md · table1.csv · table1.tex · report.html           reports

Resuming is derived from what is on disk: a stage skips every file that already exists
(files are written atomically, so an existing file is a finished one) and whose recorded
provenance matches what is asked now. The manifest keeps every invocation (`invocations`)
and, at its top level, the latest config, dataset, model, images and telemetry.
"""

from __future__ import annotations

import functools
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.errors import UserError
from harness.files import read_json, write_json
from harness.records import BENCHMARK

MANIFEST = "manifest.json"
COMPLETIONS_SUFFIX = ".json.gz"
RESULTS_SUFFIX = ".results.json.gz"
VERSIONED_PACKAGES = ("flora-eval", "torch", "transformers", "datasets", "docker", "peft")


def safe_name(name: str) -> str:
    """A model or adapter name as one path component (`bigcode/starcoder` → `bigcode--starcoder`)."""
    name = name.rstrip("/").replace("/", "--")
    return re.sub(r"[^A-Za-z0-9._+-]", "_", name) or "_"


def new_run_id(model: str) -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + safe_name(Path(model).name)


@dataclass(frozen=True)
class RunDir:
    root: Path

    @classmethod
    def open(cls, root: str | Path) -> RunDir:
        path = Path(root)
        path.mkdir(parents=True, exist_ok=True)
        return cls(path)

    @staticmethod
    def is_run(path: str | Path) -> bool:
        """A folder holding a manifest or completions files in the run layout."""
        path = Path(path)
        return path.is_dir() and ((path / MANIFEST).is_file() or bool(RunDir(path).completion_files()))

    @classmethod
    def existing(cls, root: str | Path) -> RunDir:
        path = Path(root)
        if not path.is_dir():
            raise UserError(f"run directory not found: {path}")
        return cls(path)

    def cell(self, model: str, adapter: str, lang: str, benchmark: str = BENCHMARK) -> Path:
        """The folder of one (model, adapter, benchmark, language): `<benchmark>-<lang>` is
        MultiPL-E's own config name (`humaneval-rb`, `mbpp-rb`)."""
        return self.root / safe_name(model) / safe_name(adapter) / f"{benchmark}-{lang}"

    def completions_path(self, model: str, adapter: str, lang: str, problem: str,
                         benchmark: str = BENCHMARK) -> Path:
        return self.cell(model, adapter, lang, benchmark) / f"{problem}{COMPLETIONS_SUFFIX}"

    def results_path(self, model: str, adapter: str, lang: str, problem: str,
                     benchmark: str = BENCHMARK) -> Path:
        return self.cell(model, adapter, lang, benchmark) / f"{problem}{RESULTS_SUFFIX}"

    def completion_files(self) -> list[Path]:
        return sorted(
            p for p in self.root.glob(f"*/*/*/*{COMPLETIONS_SUFFIX}")
            if not p.name.endswith(RESULTS_SUFFIX)
        )

    def result_files(self) -> list[Path]:
        return sorted(self.root.glob(f"*/*/*/*{RESULTS_SUFFIX}"))

    # -- manifest -------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def read_manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {}
        return read_json(self.manifest_path)

    def update_manifest(self, **sections: Any) -> dict[str, Any]:
        """Merge `sections` into the manifest's latest state (dict sections merge one level
        deep); the history of invocations is kept apart (`begin`)."""
        manifest = self.read_manifest()
        _merge(manifest, sections)
        write_json(self.manifest_path, manifest)
        return manifest

    def begin(self, stage: str, **sections: Any) -> Invocation:
        """Record one invocation (the main command or a stage subcommand) in the manifest's
        `invocations` history, with its command line and environment; `sections` (config,
        dataset, model, ...) go into it and into the manifest's latest state."""
        manifest = self.read_manifest()
        history = manifest.setdefault("invocations", [])
        entry = {"stage": stage, **environment(), **sections}
        history.append(entry)
        _merge(manifest, {"environment": environment(), **sections})
        write_json(self.manifest_path, manifest)
        return Invocation(self, len(history) - 1)


@dataclass(frozen=True)
class Invocation:
    """One entry of a run's invocation history, updated as its stages finish."""

    run: RunDir
    index: int

    def update(self, finished: bool = False, **sections: Any) -> None:
        """Merge `sections` into this invocation and into the manifest's latest state."""
        manifest = self.run.read_manifest()
        history = manifest.get("invocations") or []
        if self.index < len(history):
            _merge(history[self.index], sections)
            if finished:
                history[self.index]["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        _merge(manifest, sections)
        write_json(self.run.manifest_path, manifest)


def _merge(target: dict[str, Any], sections: dict[str, Any]) -> None:
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            target[key] = {**target[key], **value}
        else:
            target[key] = value


def harness_version() -> str:
    """flora-eval's version, with `+g<commit>` (and `.dirty`) when run from a git checkout."""
    try:
        version = metadata.version("flora-eval")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return version + _git_suffix(Path(__file__).resolve().parent.parent)


@functools.cache
def _git_suffix(root: Path) -> str:
    if not (root / ".git").exists():
        return ""
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                                capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    if commit.returncode != 0:
        return ""
    return f"+g{commit.stdout.strip()}" + (".dirty" if dirty.stdout.strip() else "")


def environment() -> dict[str, Any]:
    """Versions and machine facts recorded in every manifest."""
    versions = {}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": versions,
        "command": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
