#!/usr/bin/env bash
# GPU checks, run on a GPU node from the repository root:
#   1. every generator family at its published size (random init), 256 px, fp16 and bf16
#   2. TAEF2 and Real-ESRGAN through `gcl-synth run` against a model-only loop
#   3. gcl-train ResNet-18 SimCLR (bf16-mixed) on CIFAR-size shards: samples/s, data-wait share
#   4. with the time left: one more run of the GPU study (studies/cifar10-gpu)
# Everything ends within GPU_CHECK_MINUTES (default 9) and is written as 3 files under OUT
# (default bench/out/gpu): summary.json (every figure), logs.tar.gz, study_runs.tar.gz (unpack
# into studies/cifar10-gpu to keep the study's results).
#
# With gcl installed in the node's environment (pip install -e .), that environment is used:
#   bash bench/gpu_checks.sh
# On a node without network, fetch the wheels it lacks and the data on a machine with network
# (bash bench/device_wheels.sh && bash bench/device_data.sh fill .whl/ and .gpu-data/), copy the
# checkout with those folders over, and the same command installs them into a temporary folder.
# Rehearsal on a CPU (same script, same code path, toy sizes, random-init models, a few minutes):
#   bash bench/gpu_checks.sh --rehearse      # OUT defaults to bench/out/rehearse
# The interpreter is always `python3` from PATH: activate the environment first.
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
REHEARSE=0
[ "${1:-}" = "--rehearse" ] && REHEARSE=1
PY=python3
if [ $REHEARSE = 1 ]; then
  OUT=${OUT:-bench/out/rehearse}; MINUTES=${REHEARSE_MINUTES:-20}
else
  OUT=${OUT:-bench/out/gpu}; MINUTES=${GPU_CHECK_MINUTES:-9}
fi
DEADLINE=$((START + MINUTES * 60))
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/gcl-gpu.XXXXXX)
LOGS=$WORK/logs; SITE=$WORK/site
mkdir -p "$LOGS"
fail() {  # a one-line reason in summary.json, the logs beside it
  printf '{"mode": "%s", "error": "%s", "checks": {}}\n' "$([ $REHEARSE = 1 ] && echo rehearse || echo gpu)" "$1" > "$OUT/summary.json"
  tar -czf "$OUT/logs.tar.gz" -C "$LOGS" .
  echo "gpu_checks: $1" >&2; exit 1
}
{ nvidia-smi || echo "no nvidia-smi"; } > "$LOGS/nvidia-smi.txt" 2>&1
"$PY" -c "import torch" 2>/dev/null || fail "python3 has no torch (a rehearsal: activate an environment with torch first)"
WHEELS=(.whl/*.whl)
if [ $REHEARSE = 1 ] && [ -e "${WHEELS[0]}" ]; then
  # a rehearsal runs another Python than the GPU node's CPython 3.12: a wheel built for 3.12 alone
  # (pydantic-core) cannot install here, and this interpreter has its own copy of that package
  mapfile -t WHEELS < <("$PY" - "${WHEELS[@]}" <<'PYEOF'
import sys
from packaging.tags import sys_tags
from packaging.utils import parse_wheel_filename
here = set(sys_tags())
print("\n".join(w for w in sys.argv[1:] if set(parse_wheel_filename(w.rsplit("/", 1)[-1])[3]) & here))
PYEOF
)
fi
if [ -e "${WHEELS[0]}" ]; then
  # a node without network: the fetched wheels, then gcl itself, into one --target folder; nothing from an index.
  # gcl is built from a copy of its sources: no build/ left in the tree, none reused from an earlier build
  mkdir -p "$WORK/src" && cp -r pyproject.toml README.md gcl synth train eval "$WORK/src/"
  { "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "${WHEELS[@]}" &&
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --target "$SITE" "$WORK/src" ; } \
    > "$LOGS/install.log" 2>&1 || fail "pip install --no-index of .whl/ and gcl failed (install.log)"
  export PYTHONPATH=$SITE
else
  "$PY" -c "import gcl.synth.cli, diffusers, webdataset, lightly, distributed" > "$LOGS/install.log" 2>&1 ||
    fail "python3 cannot import gcl and its dependencies: pip install -e . first (or fetch .whl/ with bench/device_wheels.sh)"
fi
export HF_HUB_OFFLINE=1
if [ $REHEARSE = 0 ]; then
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || fail "torch.cuda.is_available() is False"
fi
"$PY" -m pip list > "$LOGS/pip-list.txt" 2>&1
# the driver: checks in priority order, each under its own budget, then the archives
PYTHONSAFEPATH=1 "$PY" bench/gpu_checks.py --out "$OUT" --logs "$LOGS" --deadline "$DEADLINE" \
  $([ $REHEARSE = 1 ] && echo --rehearse) 2>&1 | tee "$LOGS/driver.log"
rc=${PIPESTATUS[0]}
[ -f "$OUT/summary.json" ] || fail "the driver wrote no summary (exit $rc, driver.log)"
tar -czf "$OUT/logs.tar.gz" -C "$LOGS" .  # again: the driver's own log too
rm -rf "$WORK"
echo "gpu_checks: $(ls "$OUT" | wc -l) files in $OUT, $(( $(date +%s) - START )) s"
exit $rc
