"""`flora-eval train`: the CLI seam (light imports); the trainer lives in `harness.training`."""

from harness.training.cli import add_arguments, run

__all__ = ["add_arguments", "run"]
