#!/usr/bin/env bash
# Office: the four settings of the paper's table, printed next to the paper's numbers.
# Usage: bash finetune/office.sh PRETRAINED [extra options, e.g. --data_root DIR]
# PRETRAINED: our checkpoint folder, the authors' MISSRec-FHCKM_mm_full-*.pth, or a registry name.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PRE=${1:?usage: bash finetune/office.sh PRETRAINED [options]}
shift
exec "$PY" finetune/table.py --config finetune/configs/office.yaml --pretrained "$PRE" "$@"
