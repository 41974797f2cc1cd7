#!/usr/bin/env bash
# Instruments: the four settings of the paper's table, printed next to the paper's numbers.
# Usage: bash finetune/instruments.sh PRETRAINED [extra options, e.g. --data_root DIR]
# PRETRAINED: our checkpoint folder, the authors' MISSRec-FHCKM_mm_full-*.pth, or a registry name.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PRE=${1:?usage: bash finetune/instruments.sh PRETRAINED [options]}
shift
exec "$PY" finetune/table.py --config finetune/configs/instruments.yaml --pretrained "$PRE" "$@"
