"""Adapter files: PEFT's layout (adapter_config.json + adapter_model.safetensors, PEFT key
names) for LoRA and IA3, and the same layout for FLoRA (`peft_type: "FLORA"`). Ours also
record name, method, language, base model, rank and a content hash in the safetensors
metadata (key `flora_eval`), where PEFT's readers ignore it.

An adapter name resolves, in order, as a local path, a directory under the adapters
directory (`adapters/` under the cwd, or $FLORA_EVAL_ADAPTERS), or a hub id (org/name).
Under the adapters directory the language part of a name may be any of the language's
names (`ruby-r1` finds `rb-r1`), and a short name finds the one trained method (`rb-r1`
finds `rb-r1-flora`). `adapter_languages` reads which languages an adapter was trained on.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from harness.adapters.methods import BY_NAME, METHODS
from harness.adapters.validate import check_file, linear_layout, module_tensors
from harness.errors import UserError, did_you_mean
from harness.execute.languages import language_key
from harness.hub import hub_state, quiet

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
LEGACY_WEIGHTS_FILE = "adapter_model.bin"
METADATA_KEY = "flora_eval"
ENV_DIR = "FLORA_EVAL_ADAPTERS"


@dataclass(frozen=True)
class AdapterFile:
    """One adapter as read from disk (or made by `init_adapter` / `AdapterHandle.export`)."""

    name: str
    method: str  # "flora" | "lora" | "ia3"
    config: Any  # FLoRAConfig | LoRAConfig | IA3Config
    tensors: Mapping[str, torch.Tensor] = field(repr=False)  # PEFT key -> tensor
    metadata: Mapping[str, Any]  # language, base_model, rank, ... (whatever was recorded)
    content_hash: str  # "sha256:..." of the config and tensors (not of the metadata)
    path: Path | None = None

    @property
    def peft_type(self) -> str:
        return BY_NAME[self.method].peft_type

    @property
    def rank(self) -> int | None:
        return self.config.rank

    @property
    def where(self) -> str:
        """How error messages name this adapter."""
        return str(self.path) if self.path else f"adapter {self.name!r}"


def content_hash(config: Any, tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the canonical config JSON and every tensor's name, dtype, shape and bytes."""
    digest = hashlib.sha256(json.dumps(config.to_json(), sort_keys=True).encode())
    for key in sorted(tensors):
        tensor = tensors[key].detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + digest.hexdigest()


def adapters_root(adapters_dir: Path | None = None) -> Path:
    return Path(adapters_dir or os.environ.get(ENV_DIR) or "adapters")


def resolve_adapter(name: str, adapters_dir: Path | None = None) -> tuple[Path, str]:
    """(directory, display name) for a path, a name under the adapters directory or a hub id."""
    local = Path(name).expanduser()
    if local.is_file():
        local = local.parent
    if local.is_dir():
        return local.resolve(), local.resolve().name
    root = adapters_root(adapters_dir)
    for candidate in _spellings(name):
        if (root / candidate).is_dir():
            return (root / candidate).resolve(), candidate
        short = _by_short_name(root, candidate)
        if short is not None:
            return short.resolve(), short.name
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return _from_hub(name), name
    raise UserError(
        f"adapter {name!r} not found: not a directory and not under {root}; pass a path, a name "
        f"under the adapters directory (--adapters-dir or ${ENV_DIR}), or a hub id org/name"
        + did_you_mean(_spellings(name)[-1], _forms(adapter_names(root)))
    )


def _spellings(name: str) -> list[str]:
    """`name`, then with its language part as the language's key: `ruby-r1` → `rb-r1`."""
    lang, sep, rest = name.partition("-")
    key = language_key(lang) if sep and lang else None
    return [name, f"{key}-{rest}"] if key and key != lang else [name]


def _forms(names: list[str]) -> dict[str, list[str]]:
    """Each adapter's name, and its name without the method (`rb-r1`), → the adapters it names."""
    forms: dict[str, list[str]] = {name: [name] for name in names}
    for name in names:
        forms.setdefault(name.rpartition("-")[0] or name, []).append(name)
    return forms


def adapter_names(root: Path) -> list[str]:
    """The adapters under `root`: its folders that hold an adapter_config.json."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / CONFIG_FILE).is_file())


def _by_short_name(root: Path, name: str) -> Path | None:
    """`rb-r1` finds the one trained adapter `rb-r1-<method>` (the trainer's naming);
    several methods under that name are ambiguous and must be named in full."""
    if not root.is_dir() or "/" in name:
        return None
    matches = sorted(p for p in root.glob(f"{name}-*") if (p / CONFIG_FILE).is_file())
    if len(matches) > 1:
        full = ", ".join(p.name for p in matches)
        raise UserError(f"adapter {name!r} is ambiguous under {root}: name one of {full}")
    return matches[0] if matches else None


def _from_hub(repo_id: str) -> Path:
    """The adapter's files from the hub, or — when the hub is switched off or cannot be reached
    (asked once, `harness.hub`) — from the hub's local cache only, quietly."""
    hub = hub_state()
    try:
        from huggingface_hub import snapshot_download

        with quiet():
            path = snapshot_download(repo_id, allow_patterns=[CONFIG_FILE, WEIGHTS_FILE, LEGACY_WEIGHTS_FILE],
                                     local_files_only=not hub.usable)
    except Exception as exc:  # offline, unknown repo, gated: all one line
        if not hub.usable:
            raise UserError(f"cannot fetch adapter {repo_id!r} from the Hugging Face hub: {hub.why} and "
                            "it is not in the hub's local cache; pass a local directory") from None
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise UserError(
            f"cannot fetch adapter {repo_id!r} from the Hugging Face hub ({type(exc).__name__}: "
            f"{first}); check the id and the network, or pass a local directory"
        ) from None
    return Path(path)


def adapter_languages(adapters: list[AdapterFile]) -> list[str]:
    """The languages the adapters were trained on (`train` records `language`), in order, as
    keys, each once; adapters that record none add nothing."""
    keys = []
    for adapter in adapters:
        recorded = adapter.metadata.get("language")
        if recorded:
            key = language_key(str(recorded))
            if key is None:
                raise UserError(f"{adapter.where} records language {recorded!r}, which has no "
                                "languages/<key>.toml; pass --lang")
            keys.append(key)
    return list(dict.fromkeys(keys))


def read_config(path: Path) -> tuple[type, Any]:
    """(bank class, config) from adapter_config.json; refuses unknown kinds and options."""
    config_path = path / CONFIG_FILE
    try:
        data = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no {CONFIG_FILE}; not a PEFT-style adapter directory") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{config_path}: corrupt or not JSON ({type(exc).__name__}: {exc})") from None
    peft_type = data.get("peft_type") if isinstance(data, dict) else None
    if peft_type not in METHODS:
        raise UserError(
            f"{config_path}: unknown peft_type {peft_type!r} (flora-eval reads {', '.join(sorted(METHODS))})"
        )
    bank = METHODS[peft_type]
    try:
        return bank, bank.config_cls.from_json(data)
    except (ValueError, TypeError) as exc:
        raise UserError(f"{config_path}: {exc}") from None


def read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], Path]:
    """(tensors, our metadata, the file) from the safetensors file (or PEFT's older .bin)."""
    from safetensors import SafetensorError, safe_open

    weights = path / WEIGHTS_FILE
    if weights.exists():
        try:
            with safe_open(str(weights), framework="pt") as f:
                tensors = {key: f.get_tensor(key) for key in f.keys()}
                raw = (f.metadata() or {}).get(METADATA_KEY)
        except (SafetensorError, OSError, ValueError) as exc:
            raise UserError(f"{weights}: corrupt safetensors file ({exc})") from None
        try:
            metadata = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            raise UserError(f"{weights}: corrupt {METADATA_KEY} metadata (not JSON)") from None
        return tensors, metadata, weights
    legacy = path / LEGACY_WEIGHTS_FILE
    if legacy.exists():
        try:
            return torch.load(legacy, map_location="cpu", weights_only=True), {}, legacy
        except Exception as exc:
            raise UserError(f"{legacy}: cannot read ({type(exc).__name__}: {exc})") from None
    raise UserError(f"{path}: no {WEIGHTS_FILE}; the adapter directory is incomplete")


def load_adapter(
    name: str | Path, base_model: str | torch.nn.Module | None = None, adapters_dir: Path | None = None
) -> AdapterFile:
    """Resolve, read and check an adapter. With `base_model` (a name or a model), also check
    that it fits that model's Linear shapes; `attach` checks again against the real model."""
    path, display = resolve_adapter(str(name), adapters_dir)
    bank, config = read_config(path)
    tensors, metadata, weights = read_tensors(path)
    check_file(str(weights), bank, config, tensors)
    digest = content_hash(config, tensors)
    recorded = metadata.get("content_hash")
    if recorded and recorded != digest:
        raise UserError(
            f"{weights}: records content hash {recorded} but its tensors hash to {digest}; "
            "the file was modified or is corrupt"
        )
    adapter = AdapterFile(
        name=metadata.get("name") or display,
        method=bank.method,
        config=config,
        tensors=tensors,
        metadata=metadata,
        content_hash=digest,
        path=path,
    )
    if base_model is not None:
        layout, desc = base_layout(base_model)
        if layout is not None:
            module_tensors(str(weights), bank, config, tensors, layout, desc)
    return adapter


def base_layout(base_model: str | torch.nn.Module) -> tuple[dict[str, tuple[int, int]] | None, str]:
    """Linear shapes of a base model without loading weights (None when its config is not
    available offline: then only `attach` can check shapes)."""
    if isinstance(base_model, torch.nn.Module):
        return linear_layout(base_model), "this base model"
    from harness.models import TINY, build_tiny, resolve

    if base_model == TINY:
        return linear_layout(build_tiny()[0]), f"base model {base_model!r}"
    try:
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(resolve(base_model), local_files_only=True)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
    except (OSError, ValueError, UserError):
        return None, base_model
    return linear_layout(model), f"base model {base_model!r}"


def save_adapter(
    adapter: AdapterFile, out_dir: Path, metadata: Mapping[str, Any] | None = None
) -> AdapterFile:
    """Write PEFT's layout to `out_dir`; returns the adapter as it now is on disk. `metadata`
    (language, base_model, ...) is merged over the adapter's own."""
    from safetensors.torch import save_file

    from harness.files import write_json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {
        key: t.detach().to("cpu").clone(memory_format=torch.contiguous_format)
        for key, t in adapter.tensors.items()
    }
    digest = content_hash(adapter.config, tensors)
    meta = {**adapter.metadata, **(metadata or {})}
    meta |= {
        "name": meta.get("name") or adapter.name,
        "method": adapter.method,
        "rank": adapter.rank,
        "content_hash": digest,
        "created_by": "flora-eval",
    }
    save_file(
        tensors,
        str(out_dir / WEIGHTS_FILE),
        metadata={"format": "pt", METADATA_KEY: json.dumps(meta, sort_keys=True)},
    )
    config = adapter.config.to_json() | {
        "task_type": "CAUSAL_LM",
        "inference_mode": True,
        "base_model_name_or_path": meta.get("base_model"),
    }
    write_json(out_dir / CONFIG_FILE, config)  # last: a directory with a config is complete
    return AdapterFile(
        name=meta["name"],
        method=adapter.method,
        config=adapter.config,
        tensors=tensors,
        metadata=meta,
        content_hash=digest,
        path=out_dir,
    )
