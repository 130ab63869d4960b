"""Predictors for the evaluation tests (module-level so Ray actors can import them)."""

import os
from pathlib import Path

import torch


class AffinePredictor:
    """Loads its 'model' once per actor; on the batch holding ``crash_on`` it kills its own process once
    (the marker file makes the retried task succeed)."""

    def __init__(self, scale: float, crash_on: int | None = None, marker: str | None = None):
        self.scale = scale
        self.crash_on = crash_on
        self.marker = marker
        self.pid = os.getpid()

    def __call__(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.crash_on is not None and bool((batch == self.crash_on).any()) and not Path(self.marker).exists():
            Path(self.marker).touch()
            os._exit(1)
        return {"y": batch * self.scale, "pid": torch.full((len(batch),), self.pid)}


def pid_loop(config) -> int:
    """A training loop that only reports which process ran it."""
    return os.getpid()
