"""The one place that maps adapter kinds to their modules: peft_type -> bank class.
Adding a method = a new module with an `AdapterBank` subclass and one line here."""

from __future__ import annotations

from harness.adapters.bank import AdapterBank
from harness.adapters.flora import FLoRABank
from harness.adapters.ia3 import IA3Bank
from harness.adapters.lora import LoRABank

METHODS: dict[str, type[AdapterBank]] = {bank.peft_type: bank for bank in (FLoRABank, LoRABank, IA3Bank)}
BY_CONFIG: dict[type, type[AdapterBank]] = {bank.config_cls: bank for bank in METHODS.values()}
BY_NAME: dict[str, type[AdapterBank]] = {bank.method: bank for bank in METHODS.values()}


def bank_class(peft_type: str, variants: dict[str, str] | None = None) -> type[AdapterBank]:
    """The bank for `peft_type`, or the variant chosen for its method (e.g. {"lora": "bmm"})."""
    bank = METHODS[peft_type]
    choice = (variants or {}).get(bank.method)
    if choice is None:
        return bank
    options = getattr(bank, "variants", {})
    if choice not in options:
        raise ValueError(f"{bank.method} has no implementation {choice!r} (choose from {', '.join(options)})")
    return options[choice]
