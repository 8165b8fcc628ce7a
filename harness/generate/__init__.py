"""Generate stage: sample n completions per (problem, adapter) and write MultiPL-E files.

    run.py        generate_run: the stage over a run directory (resume, adapters, ranks)
    remote.py     the same stage through an OpenAI-compatible server (--endpoint)
    endpoint.py   the server's address, served names, the client with retries, the n/seed probe
    engine.py     the sampler: prefill once per prompt, decode step, continuous batching
    kvcache.py    the decode batch's KV slots (preallocated, trimmed, reused)
    sampling.py   per-sample seeds and uniforms; temperature + top-p sampling
    stops.py      MultiPL-E's stop-token cut
    budget.py     rows per batch from a memory budget
    distributed.py  torchrun data parallel: work split and gather
    telemetry.py  counters and rates for the manifest
"""

from harness.generate.run import AdapterChoice, generate_run
from harness.generate.sampling import sample_seed
from harness.generate.telemetry import GenerationTelemetry

__all__ = ["AdapterChoice", "GenerationTelemetry", "generate_run", "sample_seed"]
