"""A SMPLify predictor for the Ray tests (module-level so Ray actors can import it)."""

import os
from pathlib import Path

from lib3d.systems.smplify import SMPLifyPredictor


class CrashOncePredictor(SMPLifyPredictor):
    """``SMPLifyPredictor`` whose process dies on its first batch once (the marker file makes the retried
    batch succeed)."""

    def __init__(self, *args, marker: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.marker = marker

    def __call__(self, items):
        if not Path(self.marker).exists():
            Path(self.marker).touch()
            os._exit(1)
        return super().__call__(items)
