"""Entry logic of the top-level stages (their run.py scripts are thin wrappers)."""
