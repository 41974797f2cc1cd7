"""The paper's four finetuning settings on one dataset, as one table: see missrec/recipes/table.py.

    python finetune/table.py --config finetune/configs/scientific.yaml --pretrained missrec-fhckm-100
"""
import sys

from missrec.recipes.table import main

if __name__ == "__main__":
    sys.exit(main())
