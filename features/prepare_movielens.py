"""Entry point: MovieLens / RecBole ratings -> atomic dataset folder (see missrec/features/movielens.py)."""
import sys

from missrec.features.movielens import main

if __name__ == "__main__":
    sys.exit(main())
