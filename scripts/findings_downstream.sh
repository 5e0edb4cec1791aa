#!/bin/bash
# The measurements of docs/findings.md, on the downstream testbed, after
#   roma experiment configs/paper-table-downstream.yaml --out results/paper-table-downstream
# writes into $OUT (default /tmp/findings-downstream); about 10 minutes on 2 CPU cores.
set -euo pipefail
OUT=${OUT:-/tmp/findings-downstream}
TABLE=${TABLE:-results/paper-table-downstream}
M=src/moe_roma/testbed/assets/downstream/model
mkdir -p "$OUT"
roma testbed export --testbed downstream --out "$OUT/data" --splits train in_dist
# 1-3. Does correctness depend on routing; are failed items far from their successful neighbours;
#      does RoMA's pull point where the oracle moves the routing (oracle on every training item).
roma diagnose --routing "$TABLE/routing.json" --layers last5 --top-k 4 --oracle 960 --model "$M" --out "$OUT/diagnose"
# 4. Does each trained run fit its own training set? (paired against the base on `train`)
bash scripts/train_fit.sh "$TABLE" "$OUT/data/train.jsonl" "$OUT" router_tuning roma roma_oracle
