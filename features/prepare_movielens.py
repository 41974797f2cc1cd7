"""MovieLens / RecBole ratings -> dataset folder: see missrec/features/movielens.py and features/README.md.

    python features/prepare_movielens.py raw/ml-1m.zip --top_users 2000 --name ml-1m-top2000
"""
import sys

from missrec.features.movielens import main

if __name__ == "__main__":
    sys.exit(main())
