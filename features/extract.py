"""CLIP text/image features for a dataset folder or corpus: see missrec/features/extract.py.

    python features/extract.py data/Scientific --model ViT-B-32 --pretrained openai
"""
import sys

from missrec.features.extract import main

if __name__ == "__main__":
    sys.exit(main())
