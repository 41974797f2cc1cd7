"""Pretrain MISSRec on a mixture of source domains: see missrec/recipes/pretrain.py and pretrain/README.md.

    accelerate launch pretrain/run.py
    accelerate launch --config_file launch/gpu8.yaml pretrain/run.py --config pretrain/configs/fhckm.yaml
"""
import sys

from missrec.recipes.pretrain import main

if __name__ == "__main__":
    sys.exit(main())
