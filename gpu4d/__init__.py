"""gpu4d: cluster a 4D-STEM scan into a map of its regions, on the GPU or the CPU.

>>> import gpu4d
>>> result = gpu4d.cluster("scan.blo", n_clusters=6, mask="auto")   # doctest: +SKIP
>>> result.labels.shape, result.centroids.shape                      # doctest: +SKIP
((181, 172), (6, 144, 144))
"""

from .io.dataset import Dataset, open_dataset
from .errors import BackendUnavailable, Gpu4dError, InputError, OutputError
from .model import classify, load_result
from .pipeline import cluster
from .result import ClusterResult
from .sweep import SweepResult, sweep

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailable",
    "ClusterResult",
    "Dataset",
    "Gpu4dError",
    "InputError",
    "OutputError",
    "classify",
    "cluster",
    "load_result",
    "open_dataset",
    "sweep",
    "__version__",
]
