"""Scans with known labels for gpu4d's quality benchmark (``benchmarks/bench_quality.py``).

Two independent physics models: ``gpu4d.synthetic`` (``synthetic_scans``) and diffsims kinematic
simulation of real crystal structures (``diffsims_scans``, built from ``crystals``, ``layouts``,
``fields`` and ``render``). ``catalogue`` lists the scans, their seeds and halves, and caches them.
"""
