"""Adapter training (`flora-eval train`): FLoRA, LoRA and IA3 on one language's code.

Modules, in the order a run uses them: `cli` (arguments → config and adapter plans),
`config` (plain values, the paper's defaults, names, LR schedule), `run` (one run top to
bottom), `session` (the only contact with `harness.adapters`), `loop` (mixed-batch training
and held-out loss), `checkpoint` (exact resume). Training data comes from `harness.corpus`.
"""
