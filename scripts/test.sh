#!/usr/bin/env bash
# The project's one test command (README, .ci/run): install everything the tests need, stop
# with a non-zero status if any install fails, then run the whole suite with no test skipped.
#   scripts/test.sh                 # install + every test: the main suite, then the heavy tier
#   scripts/test.sh -k report       # extra arguments go to pytest
#   FLIPSEARCH_TEST_WORKERS=0 scripts/test.sh   # each tier in one process (no xdist workers)
#   FLIPSEARCH_TEST_NO_INSTALL=1 scripts/test.sh ...   # skip the installs (a developer's loop)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${FLIPSEARCH_TEST_NO_INSTALL:-0}" != 1 ]; then
  # Debian packages: Chromium (tests/test_browser.py, tests/test_report_browser.py) and the
  # real Fashion-MNIST (tests/test_data.py, tests/test_mini.py).
  missing=()
  [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || missing+=(dataset-fashion-mnist)
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "scripts/test.sh: apt-get install ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  python -m pip install -q -e '.[test]'
  # The BCML oracle of tests/test_bct.py. Without --no-deps pip would pull in TensorFlow,
  # mlflow and an old Flask that the loss module never imports; an extra cannot say --no-deps.
  python -m pip install -q --no-deps backwardcompatibilityml==1.4.2
fi

# A skipped test fails the run (tests/conftest.py): nothing the README promises may go untested.
export FLIPSEARCH_NO_SKIP=1
# pytest-xdist workers (FLIPSEARCH_TEST_WORKERS, default 2: this machine's cores; 0 runs
# in-process), --dist loadgroup: tests that share a costly fixture stay on one worker, every
# other test is a unit any idle worker takes, slow ones first (tests/conftest.py); each worker
# starts its own Ray. A worker that dies fails the run at once (--max-worker-restart 0): after a
# replaced worker the loadgroup scheduler was seen to wait forever (2026-12-06, two suites on
# the 2 cores, a worker's Ray killed).
pytest_=(python -m pytest -q -n "${FLIPSEARCH_TEST_WORKERS:-2}" --dist loadgroup --no-loadscope-reorder
         --max-worker-restart 0)
if [ $# -gt 0 ]; then
  # A developer's selection (-k report, a file): one run over both tiers.
  exec "${pytest_[@]}" -m "bench or not bench" "$@"
fi
# Two tiers, two runs; both always run, and the script fails if either does.
#  1. the main suite: everything but (2.), pyproject's default selection;
#  2. the heavy tier: tests that start Ray clusters or scripts of their own — every bench/
#     script's --smoke run, bench/gpu_check.sh in its cpu mode, the multi-node cluster.
status=0
echo "scripts/test.sh: the main suite (-m 'not bench and not cluster')"
"${pytest_[@]}" -m "not bench and not cluster" || status=$?
echo "scripts/test.sh: the heavy tier (-m 'bench or cluster')"
"${pytest_[@]}" -m "bench or cluster" || { s=$?; [ "$status" != 0 ] || status=$s; }
exit "$status"
