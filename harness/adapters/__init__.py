"""FLoRA, LoRA and IA3 with a different adapter for every row of a batch.

Public surface (the generation engine and the trainer code against it):

    from harness.adapters import (AdapterFile, load_adapter, save_adapter, attach, AdapterHandle,
                                  FLoRAConfig, LoRAConfig, IA3Config, init_adapter)

    spec = load_adapter("ruby-r1", base_model="tiny")   # a path | a name under adapters/ | a hub id
    # AdapterFile: .name .method ("flora"|"lora"|"ia3") .config (FLoRAConfig|LoRAConfig|IA3Config,
    # .rank is None for IA3) .tensors (PEFT key -> tensor) .metadata .content_hash ("sha256:...") .path
    handle = attach(model, [spec_a, spec_b, spec_c])     # wrap the targeted nn.Linear modules once
    handle.set_rows(torch.tensor([0, 2, -1, 1]))         # one adapter index per batch row, -1 = base
    logits = model(input_ids).logits                      # x: [batch, seq, in]; row i uses its adapter
    handle.merge(0); handle.unmerge()                     # one adapter folded in; unmerge is bit-exact
    handle.detach()                                       # the original modules are back

    # training: fresh adapters, trainable banks, mixed batches route each example to its adapter
    model.requires_grad_(False)                           # freeze the base BEFORE attach
    fresh = [init_adapter(model, LoRAConfig(r=1), name="ruby", seed=0), ...]
    handle = attach(model, fresh, trainable=True)
    optimizer = torch.optim.AdamW([{"params": handle.parameters(i), "lr": lr[i]} for i in ...])
    ...
    save_adapter(handle.export(i), out_dir, metadata={"language": "rb", "base_model": "tiny"})

`attach(..., lora_impl="gather"|"bmm")` picks LoRA's mixed-batch form (grouped by adapter, or
the paper's bmm baseline). Bad files raise `harness.errors.UserError` with one line naming
the file and the problem. Modules: `bank` (stacked tensors, shared), `flora`/`lora`/`ia3`
(one per method; its bank carries the method's label, default_lr and has_rank), `methods`
(name or peft_type -> bank), `layer` (the Linear wrapper), `handle`
(attach/set_rows/merge/export), `files` (PEFT layout, names, hashes), `validate` (checks).
"""

from harness.adapters.files import (
    AdapterFile,
    adapter_languages,
    content_hash,
    load_adapter,
    resolve_adapter,
    save_adapter,
)
from harness.adapters.flora import FLoRAConfig
from harness.adapters.handle import AdapterHandle, attach, init_adapter
from harness.adapters.ia3 import IA3Config
from harness.adapters.lora import LoRAConfig

__all__ = [
    "AdapterFile",
    "AdapterHandle",
    "FLoRAConfig",
    "IA3Config",
    "LoRAConfig",
    "adapter_languages",
    "attach",
    "content_hash",
    "init_adapter",
    "load_adapter",
    "resolve_adapter",
    "save_adapter",
]
