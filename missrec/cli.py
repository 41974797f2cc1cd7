"""Entry-point wrapper: expected failures (bad input, missing files) end in one clear line."""
from __future__ import annotations

import os
import sys

from .data.atomic import DataFormatError


def run(main, argv=None):
    try:
        return main(argv)
    except (DataFormatError, FileNotFoundError, ValueError) as e:
        if os.environ.get("MISSREC_DEBUG"):
            raise
        print(f"error: {e}  (set MISSREC_DEBUG=1 for the traceback)", file=sys.stderr)
        sys.exit(2)
