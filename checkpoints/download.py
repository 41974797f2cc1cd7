"""Download a registered checkpoint, a URL or a Hub repo, verified: see missrec/hub.py.

    python checkpoints/download.py --list
    python checkpoints/download.py NAME_OR_URL [--out DIR] [--sha256 HEX]
"""
import sys

from missrec.hub import main

if __name__ == "__main__":
    sys.exit(main())
