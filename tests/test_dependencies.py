"""Declare what you import: every third-party package a module of `harness` imports is named in
pyproject.toml, as a dependency or in an extra (pydantic once was imported and not declared:
it came in through fastapi)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# imported only inside a guard that turns its absence into one line naming the fix
OPTIONAL = {"bitsandbytes"}  # --load-8bit: "needs bitsandbytes: pip install bitsandbytes"


def imported_modules() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "harness").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m != "harness"}


def declared_distributions() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"].values()
    specs = [*project["dependencies"], *(spec for extra in extras for spec in extra)]
    names: set[str] = set()
    for spec in specs:
        name, extras = re.match(r"\s*([A-Za-z0-9_.-]+)(?:\[([^\]]*)\])?", spec).groups()
        names.add(name)
        if name == "dask" and extras and "distributed" in extras:
            names.add("distributed")  # dask[distributed] is how the distributed package is asked for
    return {normalize(n) for n in names}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_package_is_declared():
    distributions = metadata.packages_distributions()
    declared = declared_distributions()
    undeclared = {}
    for module in sorted(imported_modules() - OPTIONAL):
        owners = {normalize(d) for d in distributions.get(module, [module])}
        if not owners & declared:
            undeclared[module] = sorted(owners)
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


EXTRAS_ONLY = ("fastapi", "uvicorn", "uvloop", "httptools", "openai", "dask", "distributed")
WITHOUT_EXTRAS = ("import sys\n"
                  f"for name in {EXTRAS_ONLY!r}: sys.modules[name] = None  # as if not installed\n"
                  "from harness.cli import main\n"
                  "sys.exit(main(sys.argv[1:]))\n")


def test_the_command_line_starts_without_the_extras():
    """A plain `pip install flora-eval` (no `serve`, no `dask`) runs; `serve` then says what
    to install in one line. (Building the parser once imported fastapi through `bench serve`.)"""
    ran = subprocess.run([sys.executable, "-c", WITHOUT_EXTRAS, "--help"], capture_output=True, text=True,
                         timeout=120)
    assert ran.returncode == 0, ran.stderr
    ran = subprocess.run([sys.executable, "-c", WITHOUT_EXTRAS, "serve", "--model", "tiny"],
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 2 and ran.stderr.strip().splitlines() == [
        "flora-eval: error: flora-eval serve needs uvicorn: pip install 'flora-eval[serve]'"]
