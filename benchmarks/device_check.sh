#!/usr/bin/env bash
# One-shot check for a fresh GPU machine (CuPy, NumPy, SciPy, Numba, pytest
# installed; no network).  Usage: benchmarks/device_check.sh [OUT_DIR]
# (default $OUT).  Budget: under 8 minutes in total.
#   1. editable install (no deps, no build isolation: nothing is downloaded)
#   2. GPU tests (every test marked cuda), then the benchmarks, then the full suite
#   3. logs, device_check.json and device_check.txt land in OUT_DIR
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-device_check_out}}"
mkdir -p "$out"
status=0

echo "== install" | tee "$out/summary.txt"
python -m pip install -q --no-deps --no-build-isolation -e . >"$out/install.log" 2>&1 || {
  echo "install failed (see install.log)" | tee -a "$out/summary.txt"; status=1; }
python -c "import json, stgkern._cuda as c; print(json.dumps(c.info(), default=str))" >"$out/info.json" 2>&1
nvidia-smi >"$out/nvidia-smi.txt" 2>&1 || true

echo "== GPU tests" | tee -a "$out/summary.txt"
# every GPU case of the suite (marker cuda: tests/test_cuda*.py and the xp-parametrised tests)
timeout 180 python -m pytest -q -p no:cacheprovider tests -m cuda >"$out/test_cuda.log" 2>&1 || status=1
tail -n 3 "$out/test_cuda.log" | tee -a "$out/summary.txt"

if command -v nvcc >/dev/null 2>&1; then
  echo "== prebuilt fatbin path" | tee -a "$out/summary.txt"
  { timeout 120 python tools/cuda_build.py stgkern/_cuda/prebuilt &&
    timeout 60 python -m pytest -q -p no:cacheprovider tests/test_cuda.py -k "default and (spmm or softmax)" &&
    python -c "import cupy as cp, stgkern, stgkern._cuda as c
g = stgkern.Graph(cp.asarray([0, 2, 3]), cp.asarray([0, 1, 1]))
print(stgkern.edge_softmax(g, cp.ones(3, cp.float32)), c.info()['paths'])"
  } >"$out/aot.log" 2>&1 || status=1
  tail -n 2 "$out/aot.log" | tee -a "$out/summary.txt"
  rm -rf stgkern/_cuda/prebuilt
fi

echo "== benchmarks" | tee -a "$out/summary.txt"
timeout 240 python benchmarks/device_check.py "$out" >"$out/bench.log" 2>&1 || status=1
cat "$out/device_check.txt" 2>/dev/null | tee -a "$out/summary.txt"
tail -n 5 "$out/bench.log" >>"$out/summary.txt"

echo "== full test suite" | tee -a "$out/summary.txt"
# best effort in the time left: the CPU cases also run in CI; a timeout here is reported, not a failure
timeout 90 python -m pytest -q -p no:cacheprovider tests -m "not slow" >"$out/pytest_all.log" 2>&1
rc=$?
if [ $rc -eq 124 ]; then echo "full suite: stopped at the 90 s limit" | tee -a "$out/summary.txt"
elif [ $rc -ne 0 ]; then status=1; fi
tail -n 5 "$out/pytest_all.log" | tee -a "$out/summary.txt"

echo "exit status $status" | tee -a "$out/summary.txt"
exit $status
