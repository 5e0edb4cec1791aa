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
# A second worker on another core (the host built first) can build doses ahead of the first:
#   HOST=runs/control/host nice -n 5 bash scripts/control_pipeline.sh build 0 0.25 0.5 0.75
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
THREADS=${THREADS:-1}
export PYTHONPATH=${PYTHONPATH:-src} OMP_NUM_THREADS=${OMP_NUM_THREADS:-$THREADS}
HOST=${HOST:-}
HOST_GROUP=${HOST_GROUP:-task}
HOST_ANSWER=${HOST_ANSWER:-0}

build() {  # build NAME BETA SHARE [PLANTED_FOLDER]; NAME as scripts/control_grid.py's dose_name
    local name=$1 lock=runs/control/$1.lock
    shift
    mkdir -p runs/control results/control/doses
    until [ -f "runs/control/$name/gates.json" ]; do
        # A lock folder per dose lets a second worker (`control_pipeline.sh build ...`) build doses
        # ahead of this one; a stale lock (no worker running) is removed by hand.
        if mkdir "$lock" 2>/dev/null; then
            trap 'rmdir "'"$lock"'" 2>/dev/null || true' EXIT
            echo "== building dose $name"
            $PY -u scripts/control_calibrate.py --beta "$1" --marked-share "$2" --threads "$THREADS" \
                --out "runs/control/$name" ${3:+--planted "$3"} ${HOST:+--host "$HOST"}
            rmdir "$lock"
            trap - EXIT
        else
            echo "== dose $name is being built by another worker ($lock); waiting"
            sleep "${LOCK_WAIT:-60}"
        fi
    done
    cp "runs/control/$name/gates.json" "results/control/doses/$name.json"
}

diagnose() {  # diagnose NAME: `roma diagnose` on the dose's RoMA training set, target test included
    local folder=runs/control/$1
    [ -f "results/control/diagnose/$1/report.json" ] && return 0
    [ -f "$folder/train-routing.json" ] || $PY -u -m moe_roma.cli collect --model "$folder/model" \
        --data "$folder/data/train.jsonl" --layers last5 --scoring continuation --threads "$THREADS" \
        --out "$folder/train-routing.json"
    $PY -u -m moe_roma.cli diagnose --routing "$folder/train-routing.json" --model "$folder/model" \
        --threads "$THREADS" --no-progress --out "results/control/diagnose/$1" --overwrite
}

experiment() {  # experiment CONFIG OUT; a finished one (results.json) is skipped, as --resume refuses it
    [ -f "$2/results.json" ] && return 0
    echo "== experiment $1"
    $PY -u -m moe_roma.cli experiment "$1" --out "$2" --threads "$THREADS" --resume --no-progress
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
if [ "${1:-}" = build ]; then  # a second worker: build BETA... (50% marked share) and stop
    shift
    for beta in "$@"; do
        build "$(printf "b%.2f-s50" "$beta")" "$beta" 0.5
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
