"""The book's systems as training recipes on ``lib3d.runtime``: one module per system, each a class with
``init`` / ``train_step`` / ``evaluate`` that ``runtime.train`` runs (see ``lib3d/runtime/system.py``)."""
