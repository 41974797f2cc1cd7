"""Graph baselines and MISSRec in one table for a dataset (see missrec/recipes/compare.py)."""
import sys

from missrec.recipes.compare import main

if __name__ == "__main__":
    sys.exit(main())
