#!/usr/bin/env bash
# Packed training on one GPU: trials/hour per GPU of whole fd updates on a Fashion-MNIST
# subset with cnn8, for packs of 1, 4, 16 and 64, AMP off and on (bench/packing.py's
# "trials" part, wall-clock seconds). Sized to finish in under 5 minutes on a current GPU.
#
#   bench/gpu_check.sh          # on cuda
#   bench/gpu_check.sh cpu      # the very same code path on the CPU at smoke size (checks it runs)
set -euo pipefail
cd "$(dirname "$0")/.."
device="${1:-cuda}"
if [ "$device" = cpu ]; then
  size=(--packs 1 2 --fashion-n 256 --epochs 1 --threads 1 --clock wall)
else
  size=(--packs 1 4 16 64 --fashion-n 10000 --epochs 2)
fi
for amp in "" --amp; do
  python bench/packing.py --device "$device" $amp --datasets fashion --parts trials \
    --repeats 1 --warmup 0 "${size[@]}"
done
