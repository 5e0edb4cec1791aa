#!/usr/bin/env bash
# The paper's training regime on train_large (issue 28, docs/findings.md section 4) end to end,
# resumable: run it again with the same command after any interruption and it goes on where it
# stopped (every experiment runs with --resume; a finished one, with its results.json, is skipped).
#
#   sweep    the pre-registered sweep on the validation split (results/sweep-downstream-large)
#   configs  the comparison and size-curve files from the sweep's picks (scripts/large_comparison.py),
#            when they are missing; the pipeline then stops, so that they are committed before any
#            of their runs, and goes on when run again
#   compare  the comparison, 5 seeds (results/compare-downstream-large)
#   curve    the size curve, 3 seeds (results/size-curve-downstream-large)
#   summary  the train-fit table (results/compare-downstream-large-train-fit) and the size curve
#            joined with the comparison's full size (results/size-curve-downstream-large-summary)
#
# With no step named, all of them in that order, on one thread:
#   nice -n 5 bash scripts/train_large_pipeline.sh
# On two cores, once the configs exist, one process each (an experiment folder holds a lock while it
# runs, so two processes never run the same one), then the summary:
#   bash scripts/train_large_pipeline.sh compare & bash scripts/train_large_pipeline.sh curve; wait
#   bash scripts/train_large_pipeline.sh summary
# or one experiment's method runs two at a time (WORKERS=2: `roma experiment --workers 2`, one thread
# each, the same results as one worker):
#   WORKERS=2 bash scripts/train_large_pipeline.sh compare
# PYTHONPATH may name another checkout's code (a worktree frozen at the commit the runs began with).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
THREADS=${THREADS:-1}
WORKERS=${WORKERS:-1}
export PYTHONPATH=${PYTHONPATH:-src} OMP_NUM_THREADS=${OMP_NUM_THREADS:-$THREADS}

experiment() {  # experiment NAME: configs/NAME.yaml into results/NAME, unless it has finished
    local out=results/$1
    if [ -f "$out/results.json" ]; then
        echo "== $1: finished ($out/results.json), skipped"
        return
    fi
    echo "== experiment $1"
    $PY -u -m moe_roma.cli experiment "configs/$1.yaml" --out "$out" --threads "$THREADS" \
        --workers "$WORKERS" --resume --no-progress
}

configs() {
    [ -f configs/compare-downstream-large.yaml ] && [ -f configs/size-curve-downstream-large.yaml ] && return
    [ -f results/sweep-downstream-large/results.json ] || {
        echo "train_large_pipeline.sh: the sweep has not finished" \
            "(results/sweep-downstream-large/results.json is missing); run the sweep step first" >&2
        exit 2
    }
    $PY scripts/large_comparison.py results/sweep-downstream-large
    echo "== the comparison and size-curve files are written from the sweep's picks: commit them" \
        "before any of their runs, then run this again"
    exit 0
}

summary() {
    local fit=results/compare-downstream-large-train-fit data=runs/train-large/fit-data
    [ -f "$data/train_large.jsonl" ] || $PY -m moe_roma.cli testbed export --testbed downstream \
        --splits train_large --train-size 2000 --out "$data"
    PY=$PY ROMA="$PY -m moe_roma.cli" bash scripts/train_fit.sh results/compare-downstream-large \
        "$data/train_large.jsonl" "$fit"
    $PY scripts/size_curve.py --curve results/size-curve-downstream-large \
        --compare results/compare-downstream-large --configs configs \
        --out "results/size-curve-downstream-large-summary"
}

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(sweep configs compare curve summary)
for step in "${steps[@]}"; do
    case $step in
        sweep) experiment sweep-downstream-large ;;
        configs) configs ;;
        compare) configs && experiment compare-downstream-large ;;
        curve) configs && experiment size-curve-downstream-large ;;
        summary) summary ;;
        *)
            echo "train_large_pipeline.sh: unknown step '$step' (sweep, configs, compare, curve, summary)" >&2
            exit 2
            ;;
    esac
done
