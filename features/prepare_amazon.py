"""Amazon review dumps -> dataset folder or pretraining corpus: see missrec/features/amazon.py.

    python features/prepare_amazon.py --raw_dir RAW --out_root DATA --category Industrial_and_Scientific
"""
import sys

from missrec.features.amazon import main

if __name__ == "__main__":
    sys.exit(main())
