#!/usr/bin/env bash
# Finetune the embedded sample's target domain A in the paper's four settings (with/without
# item IDs x with/without pretraining) and print the results table.
# Run `make pretrain` (or accelerate launch pretrain/run.py) first; PRETRAINED overrides the checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PRE=${PRETRAINED:-outputs/pretrain-sample/checkpoint-3}
exec "$PY" finetune/table.py --config finetune/configs/sample_a.yaml --pretrained "$PRE" "$@"
