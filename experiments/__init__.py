"""Experiments: the spec, pipeline loading, model families, cache methods and the generation engine.

Knows nothing of W&B, SQLite or figures (see ``repro`` and ``paper_figures``).
"""
