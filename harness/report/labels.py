"""Names shown in tables: an adapter's method column (base / FLoRA / IA3 / LoRA) and a
language's display name. Both are asked of their one home: the method's class
(`harness.adapters.methods`) and the language's TOML file (`harness.execute.languages`).
A column's method is what the run declared, never guessed from the adapter's name."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from harness.execute.languages import display_name
from harness.records import BASE

COLUMN_ORDER = ("base", "FLoRA", "IA3", "LoRA")  # the paper's Table 1 columns


def language_name(lang: str) -> str:
    """A language's display name ("d" → "D"); an unknown one shows as given."""
    return display_name(lang)


def benchmark_name(key: str) -> str:
    """A benchmark's display name from its definition (benchmarks/<key>.toml), else the key."""
    from harness.problems import benchmark_files, load_benchmark

    return load_benchmark(key).name if key in benchmark_files() else key


def method_label(adapter: str, method: str | None = None) -> str:
    """The Table 1 column of an adapter: its declared method's label; without a declared
    method, the adapter's own name."""
    if adapter == BASE:
        return "base"
    if not method:
        return adapter
    from harness.adapters.methods import method_label as label_of  # torch: only when asked

    return label_of(method)


def column_labels(keys: Iterable[tuple[str, str]],
                  methods: Mapping[tuple[str, str], str]) -> dict[tuple[str, str], str]:
    """(run, adapter) → a unique column label: the method, with the adapter name and then the
    run added only where two columns would otherwise share a label."""
    keys = list(dict.fromkeys(keys))
    labels = {key: method_label(key[1], methods.get(key)) for key in keys}
    for part, widen in ((1, _with_adapter), (0, _with_run)):
        groups = _clashing(labels)
        labels = {k: widen(k, v) if len({g[part] for g in groups.get(v, [k])}) > 1 else v
                  for k, v in labels.items()}
    return labels


def column_sort_key(label: str) -> tuple[int, str]:
    """Table 1 order: base, FLoRA, IA3, LoRA, then anything else by name."""
    head = label.split(" ")[0]
    return (COLUMN_ORDER.index(head) if head in COLUMN_ORDER else len(COLUMN_ORDER), label)


def _with_adapter(key: tuple[str, str], label: str) -> str:
    return label if label == key[1] else f"{label} ({key[1]})"


def _with_run(key: tuple[str, str], label: str) -> str:
    return f"{label} [{key[0]}]"


def _clashing(labels: Mapping[Any, str]) -> dict[str, list]:
    """label → the keys sharing it, for labels held by more than one key."""
    seen: dict[str, list] = {}
    for key, value in labels.items():
        seen.setdefault(value, []).append(key)
    return {label: keys for label, keys in seen.items() if len(keys) > 1}
