#!/usr/bin/env bash
# The first run on a machine with a CUDA GPU, as one command (from the repository root):
#
#     bash benchmarks/gpu_check.sh
#
# 1. finds a Python with CuPy (any CUDA 12 or 13 build) and numba-cuda: $PYTHON, python3.12,
#    python3 or python. Without one it creates .venv-gpu with the `gpu` and `test` extras where
#    there is network; without network it stops;
# 2. makes .venv-gpu-check, a venv over that Python's packages (--system-site-packages), and
#    installs gpu4d from this working tree into it without dependencies (nothing is
#    downloaded): what is missing (pytest, setuptools, wheel) comes from the wheel folder that
#    benchmarks/gpu_wheels.sh fills beforehand ($GPU4D_WHEELS, default benchmarks/wheels);
# 3. looks for the GPU (gpu4d.backend.gpu_problem); prints the versions, the CUDA version and
#    nvidia-smi;
# 4. runs `pytest -m gpu tests/test_gpu.py` (tests that need cuML skip when it is absent);
# 5. runs benchmarks/bench_gpu.py on the seed-sized scan (written to /tmp as .npy), k = 4..12,
#    each stage against benchmarks/ROOFLINE.md's expectation.
#
# At most 8 minutes on an H100/H200 (tests 240 s, benchmark 200 s at most: generating the scan
# and compiling kernels take most of it). Without a GPU it stops at once with a one-line reason
# and a non-zero exit code: 2 no GPU or no Python to use, 3 the GPU is not usable, 4 an install
# step failed; 1 when tests or the benchmark fail. With the device tool of these sessions:
# run `bash benchmarks/gpu_check.sh` with carry ["benchmarks/wheels"] (the folder is ignored).
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
WHEELS="${GPU4D_WHEELS:-$ROOT/benchmarks/wheels}"
CHECK_ENV="${GPU4D_CHECK_ENV:-$ROOT/.venv-gpu-check}"
LOG="${GPU4D_CHECK_LOG:-/tmp/gpu4d-check.log}"
: > "$LOG"

die() {  # one line, no traceback (the details go to $LOG)
    echo "gpu_check: $1" >&2
    exit "$2"
}
note() { echo "gpu_check: $*"; }
has_gpu_stack() { "$1" -c "import cupy, numba_cuda" >/dev/null 2>&1; }
gpu_listed() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q "GPU"; }

# -- 1. a Python with CuPy and numba-cuda -------------------------------------------------------
PY=""
for candidate in "${PYTHON:-}" python3.12 python3 python; do
    [ -n "$candidate" ] || continue
    path="$(command -v "$candidate" 2>/dev/null)" || continue
    if has_gpu_stack "$path"; then PY="$path"; break; fi
done
if [ -z "$PY" ]; then
    gpu_listed || die "no NVIDIA GPU here (nvidia-smi lists none) and no Python with CuPy and numba-cuda; nothing to check" 2
    base="$(command -v python3.12 || command -v python3)" || die "no python3 found" 2
    timeout 30 "$base" -m pip index versions pip >>"$LOG" 2>&1 \
        || die "no Python with CuPy and numba-cuda here, and no network to install them (see $LOG)" 2
    note "no Python with CuPy and numba-cuda: creating .venv-gpu with the gpu and test extras"
    { "$base" -m venv "$ROOT/.venv-gpu" && "$ROOT/.venv-gpu/bin/pip" install -q -e ".[gpu,test]"; } >>"$LOG" 2>&1 \
        || die "installing the gpu and test extras failed (see $LOG)" 4
    PY="$ROOT/.venv-gpu/bin/python"
fi
note "using $("$PY" -c 'import sys, cupy, numba, numba_cuda; print(sys.executable, "(Python %d.%d.%d," % sys.version_info[:3], "CuPy", cupy.__version__ + ",", "numba", numba.__version__ + ",", "numba-cuda", numba_cuda.__version__ + ")")' 2>>"$LOG")"

# -- 2. gpu4d from this working tree, without dependencies -------------------------------------
if [ ! -x "$CHECK_ENV/bin/python" ]; then
    "$PY" -m venv --system-site-packages "$CHECK_ENV" >>"$LOG" 2>&1 \
        || { rm -rf "$CHECK_ENV"; "$PY" -m venv --system-site-packages --without-pip "$CHECK_ENV" >>"$LOG" 2>&1; } \
        || die "cannot create the venv $CHECK_ENV (see $LOG)" 4
fi
VPY="$CHECK_ENV/bin/python"
# --system-site-packages reaches the base interpreter's packages only: when $PY is itself a venv,
# a .pth file adds its site-packages too
"$PY" -c 'import site; print("\n".join(site.getsitepackages()))' > "$("$VPY" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/_gpu4d_check_base.pth" 2>>"$LOG" \
    || die "cannot point $CHECK_ENV at the packages of $PY (see $LOG)" 4
if "$VPY" -m pip --version >/dev/null 2>&1; then PIP=("$VPY" -m pip); else PIP=("$PY" -m pip --python "$VPY"); fi
offline_install() {  # from the wheel folder only
    [ -d "$WHEELS" ] || die "$1 is missing and there is no wheel folder $WHEELS: run benchmarks/gpu_wheels.sh where there is network and bring the folder" 4
    "${PIP[@]}" install -q --no-index --find-links "$WHEELS" "$@" >>"$LOG" 2>&1 \
        || die "cannot install $* from $WHEELS (see $LOG); run benchmarks/gpu_wheels.sh again" 4
}
"$VPY" -c "import setuptools, wheel" >/dev/null 2>&1 || offline_install setuptools wheel
"$VPY" -c "import pytest" >/dev/null 2>&1 || offline_install pytest
for module in numpy scipy sklearn numba matplotlib tqdm threadpoolctl; do
    "$VPY" -c "import $module" >/dev/null 2>&1 || die "Python module $module is missing from $PY" 4
done
"${PIP[@]}" install -q --no-deps --no-build-isolation --no-index -e "$ROOT" >>"$LOG" 2>&1 \
    || die "installing gpu4d from $ROOT failed (see $LOG)" 4
where="$("$VPY" -c 'import gpu4d.kernels, os; print(os.path.dirname(gpu4d.kernels.__file__))' 2>>"$LOG")"
[ "$where" = "$ROOT/kernels" ] || die "gpu4d does not import from this working tree (gpu4d.kernels at '$where'; see $LOG)" 4
note "gpu4d installed from $ROOT into $CHECK_ENV"

# -- 3. the GPU ----------------------------------------------------------------------------------
problem="$("$VPY" -c 'from gpu4d.backend import gpu_problem; print(gpu_problem() or "")' 2>>"$LOG")" \
    || die "gpu4d.backend failed to import (see $LOG)" 3
[ -z "$problem" ] || die "no usable GPU: $problem" 3
"$VPY" - <<'PY' 2>>"$LOG"
import cupy, numba, numba_cuda, importlib.util
rt, drv = cupy.cuda.runtime.runtimeGetVersion(), cupy.cuda.runtime.driverGetVersion()
print(f"gpu_check: CuPy {cupy.__version__} (CUDA runtime {rt // 1000}.{rt % 1000 // 10}, driver supports {drv // 1000}.{drv % 1000 // 10}), "
      f"numba {numba.__version__}, numba-cuda {numba_cuda.__version__}, "
      f"cuML {'installed' if importlib.util.find_spec('cuml') else 'absent: KMeans runs on CuPy'}")
from gpu4d.backend import get_backend
print("gpu_check:", get_backend("gpu").describe())
PY
nvidia-smi 2>&1 | head -20

# -- 4. the GPU tests ----------------------------------------------------------------------------
note "pytest -m gpu tests/test_gpu.py"
timeout 240 "$VPY" -m pytest -q -m gpu -rs -p no:cacheprovider tests/test_gpu.py
tests=$?
# -- 5. the benchmark ----------------------------------------------------------------------------
note "benchmarks/bench_gpu.py (seed-sized scan, k = 4..12)"
timeout 200 "$VPY" benchmarks/bench_gpu.py --k 4:12
bench=$?
note "tests exit $tests, benchmark exit $bench (log: $LOG)"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ] || exit 1
