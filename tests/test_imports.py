"""``import gpu4d`` loads neither HyperSpy nor dask, and numpy input works where they are absent
(the GPU machines this project borrows have neither): checked in a fresh interpreter."""

import json
import subprocess
import sys

ABSENT = ("hyperspy", "dask", "rsciio", "zarr", "distributed")

SCRIPT = f"""
import importlib.abc, json, sys

class Absent(importlib.abc.MetaPathFinder):
    # as if the packages were not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {ABSENT!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)")
        return None

sys.meta_path.insert(0, Absent())
import numpy as np
import gpu4d
after_import = sorted(m for m in sys.modules if m.split(".")[0] in {ABSENT!r})
from gpu4d.synthetic import make_scan
scan = make_scan(scan_shape=(8, 9), detector_shape=(32, 32), n_grains=2, defect=False, dtype="uint8", seed=0)
result = gpu4d.cluster(scan.data, 2, backend="cpu", mask="auto")
print(json.dumps({{"after_import": after_import, "labels": list(result.labels.shape)}}))
"""


def test_import_and_numpy_input_need_neither_hyperspy_nor_dask():
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["after_import"] == []
    assert report["labels"] == [8, 9]
