#!/usr/bin/env bash
# The two fair-protocol studies of issue 27 (docs/report-example and
# docs/report-class-incremental), one after the other, each report written as soon as its
# sweep ends. Real Fashion-MNIST from Debian's dataset-fashion-mnist package. An
# interrupted run continues where it stopped: `bash scripts/fair_studies.sh --resume`.
set -euo pipefail
cd "$(dirname "$0")/.."
resume=()
[[ "${1:-}" == "--resume" ]] && resume=(--resume)
study() {  # SPACE RUN_DIR REPORT_DIR
    local started=$SECONDS
    flipsearch sweep "$1" --out "$2" "${resume[@]}"
    echo "sweep $2: $(( (SECONDS - started) / 60 )) min"
    rm -rf "$3"  # no file of an earlier report is left beside the new one
    flipsearch report "$2" --out "$3"
    echo "report $3: $(( (SECONDS - started) / 60 )) min in all"
}
study search_spaces/paper1-fmnist-fair.yaml runs/paper1-fmnist-fair docs/report-example
study search_spaces/fmnist-class-incremental-fair.yaml runs/fmnist-ci-fair docs/report-class-incremental
