#!/usr/bin/env bash
# The positive control end to end (docs/control.md, "Pre-registration"), resumable: run it again with
# the same command after any interruption and it goes on where it stopped.
#
#   1. the beta = 1, 50% dose (runs/control/b1.00-s50) and its gates;
#   2. the selection on its marked validation split (results/control/select);
#   3. the dose files with the picks (results/control/configs/dose-*.yaml);
#   4. the other five doses, each with its gates, and every dose's grid (results/control/<dose>);
#   5. every dose's `roma diagnose` on its RoMA training set (results/control/diagnose/<dose>), the
#      clean routers on the evaluation files (results/control/ceiling) and the readouts
#      (scripts/control_readouts.py: results/control/readouts.json, table.md, dose_response.png).
#
# With HOST set, the doses are planted into that task-routed host (built first if missing, grouped by
# HOST_GROUP, its answers anchored with weight HOST_ANSWER), whose gate 0 is copied to
# results/control/doses/host.json. Each dose's gates are copied to results/control/doses/<dose>.json.
# One thread by default:
#   HOST=runs/control/host HOST_GROUP=embedding HOST_ANSWER=5 nice -n 5 bash scripts/control_pipeline.sh
# A second worker on another core (the host built first) can build doses ahead of the first, and
# with `grid` (once the selection has written the dose files) run their grids too:
#   HOST=runs/control/host nice -n 5 bash scripts/control_pipeline.sh build 0 0.25 0.5 0.75
#   HOST=runs/control/host nice -n 5 bash scripts/control_pipeline.sh grid 0.75 0.5 0.25 0
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
THREADS=${THREADS:-1}
export PYTHONPATH=${PYTHONPATH:-src} OMP_NUM_THREADS=${OMP_NUM_THREADS:-$THREADS}
HOST=${HOST:-}
HOST_GROUP=${HOST_GROUP:-task}
HOST_ANSWER=${HOST_ANSWER:-0}

once() {  # once DONE_FILE LOCK_NAME COMMAND...: run COMMAND until DONE_FILE exists, one worker at a time
    # A lock folder per step lets a second worker (`control_pipeline.sh build|grid ...`) work ahead
    # of this one: a worker that finds the step held waits for it; a stale lock (no worker running)
    # is removed by hand.
    local done=$1 lock=runs/control/$2.lock
    shift 2
    mkdir -p runs/control
    until [ -f "$done" ]; do
        if mkdir "$lock" 2>/dev/null; then
            trap 'rmdir "'"$lock"'" 2>/dev/null || true' EXIT
            "$@"
            rmdir "$lock"
            trap - EXIT
        else
            echo "== $lock is held by another worker; waiting"
            sleep "${LOCK_WAIT:-60}"
        fi
    done
}

plant() {  # plant NAME BETA SHARE [PLANTED_FOLDER]
    echo "== building dose $1"
    $PY -u scripts/control_calibrate.py --beta "$2" --marked-share "$3" --threads "$THREADS" \
        --out "runs/control/$1" ${4:+--planted "$4"} ${HOST:+--host "$HOST"}
}

build() {  # build NAME BETA SHARE [PLANTED_FOLDER]; NAME as scripts/control_grid.py's dose_name
    once "runs/control/$1/gates.json" "$1" plant "$@"
    mkdir -p results/control/doses
    cp "runs/control/$1/gates.json" "results/control/doses/$1.json"
}

run_experiment() {  # run_experiment CONFIG OUT
    echo "== experiment $1"
    $PY -u -m moe_roma.cli experiment "$1" --out "$2" --threads "$THREADS" --resume --no-progress
}

experiment() {  # experiment CONFIG OUT; a finished one (results.json) is skipped, as --resume refuses it
    once "$2/results.json" "$(basename "$2").grid" run_experiment "$@"
}

diagnose_dose() {  # diagnose_dose NAME
    local folder=runs/control/$1
    [ -f "$folder/train-routing.json" ] || $PY -u -m moe_roma.cli collect --model "$folder/model" \
        --data "$folder/data/train.jsonl" --layers last5 --scoring continuation --threads "$THREADS" \
        --out "$folder/train-routing.json"
    $PY -u -m moe_roma.cli diagnose --routing "$folder/train-routing.json" --model "$folder/model" \
        --threads "$THREADS" --no-progress --out "results/control/diagnose/$1" --overwrite
}

diagnose() {  # diagnose NAME: `roma diagnose` on the dose's RoMA training set, target test included
    once "results/control/diagnose/$1/report.json" "$1.diagnose" diagnose_dose "$1"
}

mkdir -p results/control/doses
if [ -n "$HOST" ]; then
    if [ ! -f "$HOST/host.json" ]; then
        echo "== building the host $HOST"
        $PY -u scripts/control_host.py --threads "$THREADS" --group-by "$HOST_GROUP" \
            --answer-weight "$HOST_ANSWER" --out "$HOST"
    fi
    cp "$HOST/host.json" results/control/doses/host.json
fi
if [ "${1:-}" = build ] || [ "${1:-}" = grid ]; then
    # A second worker: build BETA... (50% marked share), with `grid` also run their grids and
    # diagnose them (the dose files must exist: the first worker writes them after the selection).
    mode=$1
    shift
    for beta in "$@"; do
        name=$(printf "b%.2f-s50" "$beta")
        build "$name" "$beta" 0.5
        if [ "$mode" = grid ]; then
            experiment "results/control/configs/dose-$name.yaml" "results/control/$name"
            diagnose "$name"
        fi
    done
    exit 0
fi
build b1.00-s50 1 0.5
experiment results/control/configs/select.yaml results/control/select
$PY scripts/control_grid.py doses results/control/select
experiment results/control/configs/dose-b1.00-s50.yaml results/control/b1.00-s50
build b1.00-s25 1 0.25 runs/control/b1.00-s50
experiment results/control/configs/dose-b1.00-s25.yaml results/control/b1.00-s25
for beta in 0 0.25 0.5 0.75; do
    name=$(printf "b%.2f-s50" "$beta")
    build "$name" "$beta" 0.5
    experiment "results/control/configs/dose-$name.yaml" "results/control/$name"
done
experiment results/control/configs/ceiling.yaml results/control/ceiling
for name in b1.00-s50 b1.00-s25 b0.00-s50 b0.25-s50 b0.50-s50 b0.75-s50; do
    diagnose "$name"
done
$PY scripts/control_readouts.py --threads "$THREADS"
echo "== the control's grid is complete"
