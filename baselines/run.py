"""Graph baselines (LightGCN, VBPR, SLMRec, MMSSL): see baselines/README.md and --help."""
from missrec.cli import run
from missrec.recipes.baselines import main

if __name__ == "__main__":
    run(main)
