"""Pretrain on a source, finetune a target in the four settings over seeds, paired statistics:
see missrec/recipes/transfer.py and finetune/README.md.

    python finetune/transfer.py --source ml-1m --data_root data --dataset ml-100k --seeds 0,1,2
"""
import sys

from missrec.recipes.transfer import main

if __name__ == "__main__":
    sys.exit(main())
