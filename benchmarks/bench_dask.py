"""gpu4d cluster and sweep inline against a Dask cluster of 2 worker processes, same scan, same run.

    python benchmarks/bench_dask.py                  # seed-sized .blo: 181x172 of 144x144 uint8
    python benchmarks/bench_dask.py --scan 90x86     # quicker

Starts a ``LocalCluster`` (2 worker processes, 1 thread each: this machine has 2 cores), then
times ``gpu4d.cluster(k=6)`` and ``gpu4d.sweep(2:12)`` inline and with ``scheduler=`` (each
``--repeats`` times, alternating), and checks that the labels are the inline ones. On one
machine Dask cannot be faster than inline (the same two cores, plus task and transfer costs):
the numbers say what distribution costs, and the labels that it changes nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cluster import make_blo  # noqa: E402  the same scan as the speed benchmark


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scan", default="181x172")
    parser.add_argument("--detector", type=int, default=144)
    parser.add_argument("-k", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", default="/tmp/gpu4d-bench")
    args = parser.parse_args(argv)
    blo, truth = make_blo(args)

    import gpu4d
    from distributed import Client, LocalCluster
    from sklearn.metrics import adjusted_rand_score

    labels_truth = np.load(truth).ravel()
    runs = {
        "cluster": lambda **kw: gpu4d.cluster(str(blo), args.k, **kw),
        "sweep": lambda **kw: gpu4d.sweep(str(blo), "2:12", **kw),
    }
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as local, Client(local) as client:
        runs["cluster"](batch_size=None)  # kernels compiled in this process
        times = {(name, where): [] for name in runs for where in ("inline", "dask")}
        results = {}
        for _ in range(args.repeats):
            for name, run in runs.items():
                for where, extra in (("inline", {}), ("dask", {"scheduler": client})):
                    start = time.perf_counter()
                    results[name, where] = run(**extra)
                    times[name, where].append(time.perf_counter() - start)
    print(f"scan {blo.name}: {args.repeats} runs each, alternating; 2 Dask workers x 1 thread on this machine")
    print(f"{'run':8} {'executor':8} {'median s':>9} {'range s':>14} {'dask/inline':>12} {'labels = inline':>16} {'ARI truth':>10}")
    for name in runs:
        inline_median = statistics.median(times[name, "inline"])
        for where in ("inline", "dask"):
            t = times[name, where]
            result = results[name, where]
            cluster_result = result if name == "cluster" else result[args.k]
            reference = results[name, "inline"] if name == "cluster" else results[name, "inline"][args.k]
            same = bool(np.array_equal(cluster_result.labels, reference.labels))
            ari = adjusted_rand_score(labels_truth, cluster_result.labels.ravel())
            print(
                f"{name:8} {where:8} {statistics.median(t):9.2f} {min(t):6.2f}-{max(t):<7.2f} "
                f"{statistics.median(t) / inline_median:12.2f} {str(same):>16} {ari:10.3f}"
            )
    execution = results["sweep", "dask"].parameters["execution"]
    print(f"dask sweep: {execution['workers']} workers, patterns read per worker {execution['patterns_per_worker']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
