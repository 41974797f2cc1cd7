"""Every model on one dataset folder, one protocol, one table (see missrec/recipes/compare.py and --help)."""
import sys

from missrec.recipes.compare import main

if __name__ == "__main__":
    sys.exit(main())
