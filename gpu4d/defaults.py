"""The preprocessing defaults of cluster, sweep and live, in one place (imported by the CLI too).

Chosen on ``benchmarks/bench_quality.py``'s tune half (README, "Map quality"):

* ``sqrt``: counts are Poisson, so a pixel's noise grows with its intensity; the square root
  makes the noise the same everywhere, and a weak spot then weighs as much as its signal allows
  instead of as much as its raw intensity.
* ``"auto"`` alignment: the descan is measured and fitted on every scan and corrected when the
  fitted beam position wanders by half a pixel or more (``gpu4d.align.AUTO_ALIGN_THRESHOLD_PX``);
  the decision is recorded in summary.json.
* the principal axes of the patterns blurred over the scan (``BASIS_BLUR_PX``): the sketch finds
  the axes it projects on in ``S X``, S a Gaussian over the scan, since a region's patterns
  share it with their neighbours. At low dose a weak region (a twin lamella's faint extra spots)
  lies below the noise floor of the patterns' own principal axes (per-pattern separation from
  its host 1.2 in the leading 64 axes, 3.8 in the full space, on syn-lowdose-t) and above that
  of the blurred patterns' (3.4 with a blur of 1 px). The coordinates are still each pattern's
  own projection. On the tune half, 1 px and 0.7 px found the same number of right maps; 1 px
  suggested k right more often there but made the smooth thickness trend inside grains salient
  enough to split them on small scans (tests/test_sweep.py's twin lamellae: 1 of 5 against 4 of
  5 at 0.7 px), so 0.7 px.
"""

DEFAULT_TRANSFORM = "sqrt"
DEFAULT_ALIGN = "auto"
BASIS_BLUR_PX = 0.7
