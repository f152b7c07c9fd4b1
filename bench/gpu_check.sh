#!/usr/bin/env bash
# The first GPU run's checks (issue 26): one script, sized for about 10 minutes on one GPU (not yet
# timed on one: no session has had a GPU), from a bare
# checkout. It needs no data files (the checks train on the embedded fashion-mnist-mini and
# digits; the packing benchmark uses Fashion-MNIST from --data-root or Debian's folder when
# there, else the embedded mini) and no network where the dependencies are installed.
#
#   bash bench/gpu_check.sh            # on the GPU (cuda)
#   bash bench/gpu_check.sh cpu        # the same checks on the CPU at the smallest sizes (the suite runs it)
#   DATA_ROOT=/data PYTHON=python3.11 bash bench/gpu_check.sh
#
# Prints the GPU, the numerics flags and every figure (bench/gpu_check.py's sections, GPU
# memory per process while it runs, the packing benchmark's trials per GPU-hour); exits
# non-zero when a check fails. Record the figures in bench/results.md.
set -uo pipefail
cd "$(dirname "$0")/.."
mode="${1:-cuda}"
case "$mode" in cuda|cpu) ;; *) echo "usage: bash bench/gpu_check.sh [cuda|cpu]" >&2; exit 2 ;; esac
PYTHON="${PYTHON:-python3}"
data_root=(); [ -n "${DATA_ROOT:-}" ] && data_root=(--data-root "$DATA_ROOT")
started=$(date +%s)
status=0

# The project's own install: this checkout's package first on the path; its dependencies
# installed from pyproject.toml where they are missing (pip install -e .).
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PYTHON" -c 'import flipsearch.cli, torch, ray.tune, optuna' 2>/dev/null; then
  echo "gpu_check: dependencies missing; installing the checkout with $PYTHON -m pip install -e ."
  "$PYTHON" -m pip install -q -e . || { echo "gpu_check: FAIL could not install the checkout"; exit 1; }
fi
echo "gpu_check: mode $mode, $("$PYTHON" --version 2>&1), $(git rev-parse --short HEAD 2>/dev/null || echo 'no git'), $(date -u '+%Y-%m-%d %H:%M UTC')"

# GPU memory per process, sampled every second while the checks run (nvidia-smi's view).
sampler=""
if [ "$mode" = cuda ] && command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader
  mem_log=$(mktemp)
  ( while sleep 1; do nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits >>"$mem_log" 2>/dev/null; done ) &
  sampler=$!
fi

"$PYTHON" bench/gpu_check.py --device "$mode" "${data_root[@]}" || status=1

if [ -n "$sampler" ]; then
  kill "$sampler" 2>/dev/null
  echo; echo "== GPU memory per process (peak MiB while the checks ran, nvidia-smi)"
  awk -F', *' '$1 ~ /^[0-9]+$/ { if ($2 > peak[$1]) peak[$1] = $2 } END { n = 0; for (p in peak) { printf "  pid %s: %d MiB\n", p, peak[p]; n++ } if (!n) print "  (no process seen)" }' "$mem_log"
  rm -f "$mem_log"
fi

# The packing benchmark at a size that fits the time: trials per GPU-hour of fd updates of
# cnn8 on Fashion-MNIST (the paper-1 set-up; ≥ 1,000 per GPU-hour is the goal).
echo; echo "== packing benchmark (bench/packing.py, trials part)"
amps=("" --amp)
if [ "$mode" = cpu ]; then
  size=(--packs 1 2 --fashion-n 256 --epochs 1 --threads 1 --clock wall)
  amps=(--amp)  # its fp32 path is bench/packing.py's own smoke run (tests/test_bench.py)
else
  size=(--packs 1 4 16 64 --fashion-n 6000 --epochs 2)
fi
for amp in "${amps[@]}"; do
  "$PYTHON" bench/packing.py --device "$mode" $amp --datasets fashion --parts trials --repeats 1 --warmup 0 \
    "${size[@]}" "${data_root[@]}" || { echo "FAIL packing benchmark ${amp:-fp32}"; status=1; }
done

echo; echo "gpu_check: $(( $(date +%s) - started )) s"
if [ "$status" = 0 ]; then echo "gpu_check: all checks passed"; else echo "gpu_check: FAILED (see the FAIL lines)"; fi
exit "$status"
