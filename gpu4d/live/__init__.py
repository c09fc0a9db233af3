"""Near-live clustering during acquisition.

* :mod:`gpu4d.live.sources`: frame sources (Merlin TCP, growing .mib, iterables);
* :mod:`gpu4d.live.clusterer`: incremental clustering (:class:`LiveClusterer`, fed frames) and
  the mini-batch KMeans update over numpy/cupy (:class:`MiniBatchKMeans`);
* :mod:`gpu4d.live.classifier`: classification against a saved model (:class:`LiveClassifier`);
* :mod:`gpu4d.live.runner`: the acquisition loop with snapshots, progress and clean stops
  (:class:`LiveRun`, :func:`run_live`; ``gpu4d live`` on the command line).
"""

from gpu4d.live.classifier import LiveClassifier
from gpu4d.live.clusterer import LiveClusterer, MiniBatchKMeans, match_centroids
from gpu4d.live.runner import (
    EXIT_ERROR,
    EXIT_INCOMPLETE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    LiveOutcome,
    LiveRun,
    run_live,
)
from gpu4d.live.sources import (
    FrameBatch,
    FrameSource,
    GrowingMibSource,
    IterableSource,
    MerlinTCPSource,
    StreamIncomplete,
    open_source,
)

__all__ = [
    "EXIT_ERROR",
    "EXIT_INCOMPLETE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "FrameBatch",
    "FrameSource",
    "GrowingMibSource",
    "IterableSource",
    "LiveClassifier",
    "LiveClusterer",
    "LiveOutcome",
    "LiveRun",
    "MerlinTCPSource",
    "MiniBatchKMeans",
    "StreamIncomplete",
    "match_centroids",
    "open_source",
    "run_live",
]
