# `make run`  : set up (first time) and run the main job on the embedded sample:
#               pretrain on the 5 source domains, then finetune + evaluate both target domains.
# `make test` : set up (first time) and run the test suite.
# Running `make run` again starts over: the previous outputs are moved aside to <folder>.old-<date>-<time>.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup run pretrain finetune test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	@touch $(STAMP)

pretrain: setup
	$(VENV)/bin/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no pretrain/run.py --overwrite_output_dir

finetune: setup
	bash finetune/sample_a.sh --overwrite_output_dir
	bash finetune/sample_b.sh --overwrite_output_dir

run: pretrain finetune

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) -m benchmarks.run_all --quick

clean:
	rm -rf outputs data/sample
