"""Graph baselines (LightGCN, VBPR, SLMRec, MMSSL): see baselines/README.md and --help."""
import sys

from missrec.recipes.baselines import main

if __name__ == "__main__":
    sys.exit(main())
