"""Leaf metrics (``scores``, ``perturb``: training imports them, below the model) and the
experiments over model, LLM and routing (``assessment``, ``linking``, the offline ``calibration``
sweep); the floors are in scripts/import_graph.py."""
