"""Inside the engine process: load the model, attach every adapter once (rows pick theirs by
index), build the engine and the scheduler, and say what the HTTP side needs to know (the
tokenizer, the served names with their model cards, the context length)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from harness.errors import UserError
from harness.generate.engine import BASE_ROW, Engine, EngineConfig
from harness.generate.telemetry import GenerationTelemetry
from harness.serve.scheduler import Scheduler
from harness.serve.spec import ServeSpec


def build_engine(spec: ServeSpec) -> tuple[Scheduler, dict]:
    from harness.adapters import attach, load_adapter
    from harness.models import load_model
    from harness.prompts import template_hash

    loaded = load_model(spec.model, device=spec.device)
    adapters_dir = Path(spec.adapters_dir) if spec.adapters_dir else None
    adapters = [(name, load_adapter(adapter, base_model=loaded.model, adapters_dir=adapters_dir))
                for name, adapter in spec.adapters]
    base_name = spec.base_name or spec.model
    names = [base_name] + [name for name, _ in adapters]
    if len(set(names)) != len(names):
        raise UserError(f"served names must differ: {', '.join(names)}; name adapters with NAME=ADAPTER")
    set_rows = attach(loaded.model, [a for _, a in adapters]).set_rows if adapters else None
    context = context_length(loaded.model)
    options = spec.options
    config = EngineConfig(temperature=1.0, top_p=1.0, max_new_tokens=min(options.max_tokens, context),
                          slots=options.max_rows, max_positions=context)
    engine = Engine(loaded.model, loaded.tokenizer, config, set_rows=set_rows,
                    telemetry=GenerationTelemetry())
    scheduler = Scheduler(engine, options.max_rows, options.max_rows + options.max_waiting,
                          options.max_batched_tokens)
    models = {base_name: (BASE_ROW, {"root": loaded.source, "parent": None, "flora_eval": {
        "revision": loaded.revision, "method": "base", "rank": None, "hash": "", "language": None,
        "chat_template": template_hash(loaded.tokenizer)}})}
    for index, (name, adapter) in enumerate(adapters):
        models[name] = (index, {"root": str(adapter.path), "parent": base_name, "flora_eval": {
            "revision": loaded.revision, "method": adapter.method, "rank": adapter.rank,
            "hash": adapter.content_hash, "language": adapter.metadata.get("language"),
            "chat_template": template_hash(loaded.tokenizer)}})
    return scheduler, {"tokenizer": loaded.tokenizer, "models": models, "context": context,
                       "max_tokens": options.max_tokens,
                       "fingerprint": fingerprint(models, str(loaded.model.dtype), loaded.device.type)}


def fingerprint(models: dict, dtype: str, device: str) -> str:
    """The responses' `system_fingerprint`: a hash of what decides the samples, the model's
    revision, each served name with its adapter's content hash and chat template, the dtype and
    the device type.
    Another model or adapter behind the same URL gives another fingerprint; a restart does not."""
    served = sorted((name, card["flora_eval"]["revision"], card["flora_eval"]["hash"],
                     card["flora_eval"]["chat_template"])
                    for name, (_, card) in models.items())
    text = json.dumps({"models": served, "dtype": dtype, "device": device}, sort_keys=True)
    return "fp_" + hashlib.sha256(text.encode()).hexdigest()[:16]


def context_length(model) -> int:
    config = model.config
    return int(getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", 1 << 30))
