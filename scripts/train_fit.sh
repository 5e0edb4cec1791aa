#!/usr/bin/env bash
# The train-fit table: each trained run of an experiment folder scored on items it trained on, paired
# against the base model (fixed and broke items), then summarised by scripts/train_fit_summary.py.
#   bash scripts/train_fit.sh TABLE DATA OUT [METHOD...]
# TABLE is a `roma experiment` folder (its runs/<method>/seed<k> router folders), DATA a JSONL of
# training items, OUT where the per-run reports (train-<method>-<seed>.json) and table.md go; the
# methods default to every trained method in TABLE. Resumable: a run's finished report is kept, and a run
# still training (no router weights yet) is skipped. OUT must lie outside TABLE: a folder of its own
# there would stop the experiment's `--resume` (it refuses files that are not its own).
set -euo pipefail
TABLE=$1 DATA=$2 OUT=$3
shift 3
case "$(realpath -m "$OUT")/" in
    "$(realpath -m "$TABLE")"/*)
        echo "train_fit.sh: OUT $OUT is inside the experiment folder $TABLE, whose --resume would then" \
            "refuse it; choose a folder beside it" >&2
        exit 2
        ;;
esac
MODEL=${MODEL:-src/moe_roma/testbed/assets/downstream/model}
ROMA=${ROMA:-roma}
PY=${PY:-python}
mkdir -p "$OUT"
methods=("$@")
[ ${#methods[@]} -gt 0 ] || mapfile -t methods < <(ls "$TABLE/runs")
for m in "${methods[@]}"; do
    for run in "$TABLE/runs/$m"/seed*; do
        s=${run##*seed}
        report="$OUT/train-$m-$s.json"
        [ -f "$report" ] && continue
        if [ ! -f "$run/router_weights.safetensors" ]; then
            echo "$run: not finished (no router_weights.safetensors), skipped" >&2
            continue
        fi
        $ROMA eval --model "$MODEL" --routers "$run" --compare-base --data "$DATA" --scoring continuation \
            --threads "${THREADS:-1}" --no-progress --json "$report" | grep "^acc:"
    done
done
$PY scripts/train_fit_summary.py "$OUT" | tee "$OUT/table.md"
