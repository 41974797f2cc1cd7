"""Finetune MISSRec on one dataset and evaluate it: see missrec/recipes/finetune.py and finetune/README.md.

    python finetune/run.py --config finetune/configs/scientific.yaml --pretrained PATH
"""
import sys

from missrec.recipes.finetune import main

if __name__ == "__main__":
    sys.exit(main())
