"""pytest configuration. Reusable helpers (golden files, book assets) live in ``tests/helpers.py``."""

import torch

# Deterministic and quiet defaults for the whole suite; the suite is sized for 2 cores.
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
