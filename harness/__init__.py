"""flora-eval: evaluate FLoRA, LoRA and IA3 adapted code LLMs on MultiPL-E HumanEval.

The pipeline (see `harness.cli.run_pipeline`): problems → generate → execute → score → report.
"""

from importlib import metadata

try:
    __version__ = metadata.version("flora-eval")
except metadata.PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0+unknown"
