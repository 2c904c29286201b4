#!/usr/bin/env bash
# The GPU benchmark (perf/gpu_bench.py) on a lent GPU machine, from the repository root, in one
# run of at most ~5 minutes (--deadline-s, default 270 s, plus ~15 s to unpack the bundle):
#
#   bash ../shared/device/make-gpu-bundle.sh        # here, once (~41 MB, git-ignored gpu-bundle/)
#   # then on the device, carrying gpu-bundle:
#   bash perf/gpu_bench.sh [--items 1000000 --served-batch 32 --concurrency 8 --skip compile]
#
# Uses the machine's torch (CUDA) and the bundle's tritonserver 2.51, perf_analyzer and
# tritonclient; the python backend stub gets numpy 1.26 from the bundle's small venv (numpy 2
# makes this server return empty tensors). recdeploy runs from this checkout, not installed
# (recdeploy/<stage> links to <stage>/, so PYTHONPATH=the checkout is enough). The native
# libtorch backend is compiled there with its g++ against the machine's torch. Everything goes
# to $OUT (default reports/gpu): gpu_report.md, gpu_summary.json, gpu_kernels.txt, gpu_perf.csv,
# gpu_server_log_tail.txt, gpu_log.txt (this output), gpu_native_build.log if that build failed.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out=$(realpath -m "${OUT:-reports/gpu}")
mkdir -p "$out"
{
  [ -d gpu-bundle ] || { echo "gpu_bench.sh: gpu-bundle/ missing (see the header)" >&2; exit 2; }
  [ -d gpu-bundle/x ] || bash gpu-bundle/unpack.sh || exit 2
  # shellcheck disable=SC1091
  source gpu-bundle/x/env.sh
  # perf_analyzer looks for libb64.so.0d / libcudart.so.12 by plain name; the bundle's libs
  # folder has them under hashed names: link them in last, so real ones win
  links=$(mktemp -d)
  for pair in 'libb64-*.so.0d:libb64.so.0d' 'libcudart-*.so.12*:libcudart.so.12'; do
    found=$(ls gpu-bundle/x/ts/libs/${pair%%:*} 2>/dev/null | head -n 1 || true)
    [ -n "$found" ] && ln -sf "$root/$found" "$links/${pair##*:}"
  done
  export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$links
  ldd "$PERF_ANALYZER" | grep "not found" || true
  export PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH}
  export RECDEPLOY_CACHE=${RECDEPLOY_CACHE:-/tmp/recdeploy-cache}
  export PYTHONUNBUFFERED=1
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv,noheader || true
  g++ --version | head -n 1 || echo "no g++: the native backend and the AOTInductor package are left out"
  python3 -m recdeploy.perf.gpu_bench --out "$out" "$@"
} 2>&1 | tee "$out/gpu_log.txt"
exit "${PIPESTATUS[0]}"
