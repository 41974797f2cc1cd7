"""Download one image per item, validated: see missrec/features/images.py.

    python features/fetch_images.py DATASET_DIR [--workers 16]
"""
import sys

from missrec.features.images import main

if __name__ == "__main__":
    sys.exit(main())
