"""Names shown in tables: an adapter's method column (base / FLoRA / IA3 / LoRA) and a
language's display name. Data tables plus one pure function each."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from harness.records import BASE
from harness.runs import safe_name

# method (lower case, as a manifest, an adapter_config.json `peft_type` or a name says it) →
# column label. Order matters for name matching: "flora" contains "lora".
METHODS = (("flora", "FLoRA"), ("ia3", "IA3"), ("lora", "LoRA"))
COLUMN_ORDER = ("base", "FLoRA", "IA3", "LoRA")  # the paper's Table 1 columns

LANGUAGE_NAMES = {
    "d": "Dlang", "pl": "Perl", "rb": "Ruby", "rs": "Rust", "rkt": "Racket", "swift": "Swift",
    "py": "Python", "lua": "Lua", "js": "JavaScript", "ts": "TypeScript", "cpp": "C++",
    "java": "Java", "cs": "C#", "go": "Go", "scala": "Scala", "php": "PHP", "r": "R",
    "jl": "Julia", "sh": "Bash", "ml": "OCaml", "hs": "Haskell", "elixir": "Elixir",
    "clj": "Clojure", "dart": "Dart", "adb": "Ada",
}


def language_name(lang: str) -> str:
    return LANGUAGE_NAMES.get(lang, lang)


def benchmark_name(key: str) -> str:
    """A benchmark's display name from its definition (benchmarks/<key>.toml), else the key."""
    from harness.problems import benchmark_files, load_benchmark

    return load_benchmark(key).name if key in benchmark_files() else key


def method_label(adapter: str, method: str | None = None) -> str:
    """The Table 1 column of an adapter: its declared method when known, else its name."""
    if adapter == BASE:
        return "base"
    for text in (method, adapter):
        for key, label in METHODS:
            if text and key in text.lower():
                return label
    return adapter


def declared_methods(manifest: Mapping[str, Any]) -> dict[str, str]:
    """adapter folder name → method, from the manifest's config.adapters entries (`method`,
    or `peft_type`); entries without one are left to the name."""
    entries = (manifest.get("config") or {}).get("adapters") or []
    found = {}
    for entry in entries:
        if not isinstance(entry, Mapping) or not entry.get("name"):
            continue
        method = entry.get("method") or entry.get("peft_type")
        if method:
            found[safe_name(str(entry["name"]))] = str(method)
    return found


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
