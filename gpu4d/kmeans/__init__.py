"""KMeans, written once over an array module (numpy or cupy).

* :mod:`gpu4d.kmeans.core`: weighted k-means++, Lloyd with scikit-learn's stopping and
  empty-cluster rules, the nearest-centre assignment and per-cluster sums (the assignment half
  of Lloyd runs in the backend's numba CPU / CUDA assign-and-sum kernel when one is given);
  :func:`~gpu4d.kmeans.core.kmeans` fits the sweep's and regions' reduced coordinates and live's
  weighted sample.
* :mod:`gpu4d.kmeans.full`: the full-dimensional fit of exact mode (subsample trials, then one
  Lloyd run over all rows), on the core's Lloyd or on cuML's on a GPU where it is installed.
* :mod:`gpu4d.kmeans.minibatch`: scikit-learn's mini-batch update, for live clustering.
"""
