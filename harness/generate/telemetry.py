"""What generation did and how fast: the `telemetry.generate` section of the manifest."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class GenerationTelemetry:
    """Counters summed over the run (and over ranks with `merge`)."""

    prompts: int = 0  # (problem, adapter) prompts prefilled
    samples: int = 0  # completions finished
    prefill_tokens: int = 0
    decode_tokens: int = 0
    decode_steps: int = 0
    slot_steps: int = 0  # slots × steps: occupancy = decode_tokens / slot_steps
    seconds: float = 0.0  # wall clock of the whole stage
    stages: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    extra: dict = field(default_factory=dict)

    def add(self, stage: str, seconds: float, tokens: int = 0, slots: int = 0, count: int = 1) -> None:
        """Account work: `prefill` (`count` prompts), `decode` (a step), or another stage."""
        self.stages[stage] += seconds
        if stage == "prefill":
            self.prompts += count
            self.prefill_tokens += tokens
        elif stage == "decode":
            self.decode_steps += count
            self.decode_tokens += tokens
            self.slot_steps += slots

    def merge(self, other: dict) -> None:
        """Add another rank's `as_dict()` counters (seconds: the slowest rank's wall clock)."""
        for name in ("prompts", "samples", "prefill_tokens", "decode_tokens", "decode_steps", "slot_steps"):
            setattr(self, name, getattr(self, name) + other.get(name, 0))
        for stage, seconds in other.get("stage_seconds", {}).items():
            self.stages[stage] += seconds
        self.seconds = max(self.seconds, other.get("seconds", 0.0))

    def as_dict(self) -> dict:
        def rate(tokens: int, seconds: float) -> float:
            return round(tokens / seconds, 1) if seconds > 0 else 0.0

        return {
            "prompts": self.prompts,
            "samples": self.samples,
            "prefill_tokens": self.prefill_tokens,
            "decode_tokens": self.decode_tokens,
            "decode_steps": self.decode_steps,
            "slot_steps": self.slot_steps,
            "seconds": round(self.seconds, 3),
            "prefill_tokens_per_s": rate(self.prefill_tokens, self.stages.get("prefill", 0.0)),
            "decode_tokens_per_s": rate(self.decode_tokens, self.stages.get("decode", 0.0)),
            "tokens_per_s": rate(self.decode_tokens, self.seconds),
            "batch_occupancy": round(self.decode_tokens / self.slot_steps, 3) if self.slot_steps else 0.0,
            "stage_seconds": {k: round(v, 3) for k, v in sorted(self.stages.items())},
            **self.extra,
        }
