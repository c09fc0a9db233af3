#!/usr/bin/env bash
# Fill the wheel folder that benchmarks/gpu_check.sh installs from on a GPU machine without
# network. Run it beforehand, on any machine with network:
#
#     bash benchmarks/gpu_wheels.sh [FOLDER]        # default: benchmarks/wheels
#
# The GPU machines this project borrows have Python 3.12 with CuPy, numba, numba-cuda,
# scikit-learn, scipy, h5py, matplotlib and tqdm; what `pytest -m gpu` and an editable install
# of gpu4d need beyond that is pure Python: pytest (and its dependencies), setuptools and
# wheel. They are downloaded as wheels for Python 3.12 / manylinux x86-64, whatever Python
# runs this script. HyperSpy, RosettaSciIO, zarr and dask are not needed for numpy input and
# are left out, as is cuML (gpu4d then runs KMeans on CuPy). Total: about 5 MB (limit ~60 MB).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FOLDER="${1:-$ROOT/benchmarks/wheels}"
PY="${PYTHON:-$(command -v python3 || command -v python)}"
PACKAGES=(pytest setuptools wheel)

mkdir -p "$FOLDER"
"$PY" -m pip download --quiet --dest "$FOLDER" --only-binary=:all: \
    --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 \
    "${PACKAGES[@]}"
size_kb=$(du -sk "$FOLDER" | cut -f1)
echo "gpu_wheels: $(ls "$FOLDER"/*.whl | wc -l) wheels, $((size_kb / 1024)) MB in $FOLDER"
if [ "$size_kb" -gt $((60 * 1024)) ]; then
    echo "gpu_wheels: over the ~60 MB that can be brought to the GPU machine" >&2
    exit 1
fi
