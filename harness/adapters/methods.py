"""The one place that maps adapter kinds to their modules: method name or peft_type → bank
class. Adding a method = a new module with an `AdapterBank` subclass and one line here; what
the rest of flora-eval knows of a method (its label, default learning rate, whether it has a
rank) are that class's attributes, asked through the functions below.

This imports torch (the banks are modules); callers that must stay light (a parser, the
report) import it inside the function that needs it.
"""

from __future__ import annotations

from harness.adapters.bank import AdapterBank
from harness.adapters.flora import FLoRABank
from harness.adapters.ia3 import IA3Bank
from harness.adapters.lora import LoRABank
from harness.errors import UserError, did_you_mean
from harness.records import BASE

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


def method_names() -> tuple[str, ...]:
    """Every method's name, in the registry's order: flora, lora, ia3."""
    return tuple(BY_NAME)


def find_method(method: str) -> type[AdapterBank] | None:
    """The method a name (`flora`) or a peft_type (`FLORA`) means, in any case; else None."""
    key = method.lower()
    return next((bank for bank in METHODS.values() if key in (bank.method, bank.peft_type.lower())), None)


def method(name: str) -> type[AdapterBank]:
    """The method called `name`; a UserError naming the methods otherwise."""
    bank = find_method(name)
    if bank is None:
        raise UserError(f"unknown adapter method {name!r} (known: {', '.join(method_names())})"
                        + did_you_mean(name.lower(), method_names()))
    return bank


def method_label(method: str) -> str:
    """What tables call a method ("flora" → "FLoRA", "base" → "base"); an unknown method
    shows as given."""
    if method == BASE:
        return BASE
    bank = find_method(method)
    return bank.label if bank is not None else method


def default_lrs() -> dict[str, float]:
    """method → its default learning rate (the paper's)."""
    return {name: bank.default_lr for name, bank in BY_NAME.items()}
