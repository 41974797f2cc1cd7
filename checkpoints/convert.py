"""Import an original MISSRec .pth into our checkpoint folder, running nothing from it: see missrec/convert.py.

    python checkpoints/convert.py IN.pth OUT_DIR [--dataset DIR]
"""
import sys

from missrec.convert import main

if __name__ == "__main__":
    sys.exit(main())
