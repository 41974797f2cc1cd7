"""Graph baselines and MISSRec in one table for a dataset (see missrec/recipes/compare.py)."""
from missrec.cli import run
from missrec.recipes.compare import main

if __name__ == "__main__":
    run(main)
