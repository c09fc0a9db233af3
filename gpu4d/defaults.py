"""The preprocessing defaults of cluster, sweep and live, in one place (imported by the CLI too).

Chosen on ``benchmarks/bench_quality.py``'s tune half (README, "Map quality"):

* ``sqrt``: counts are Poisson, so a pixel's noise grows with its intensity; the square root
  makes the noise the same everywhere, and a weak spot then weighs as much as its signal allows
  instead of as much as its raw intensity.
* ``"auto"`` alignment: the descan is measured and fitted on every scan and corrected when the
  fitted beam position wanders by half a pixel or more (``gpu4d.align.AUTO_ALIGN_THRESHOLD_PX``);
  the decision is recorded in summary.json.
"""

DEFAULT_TRANSFORM = "sqrt"
DEFAULT_ALIGN = "auto"
