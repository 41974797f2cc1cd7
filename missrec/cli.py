"""The one error path of every entry point: expected failures end in one ``error: ...`` line.

Every entry point is ``main(argv=None) -> int``: ``return run(work, argv, exit=False)``, where
``work(argv)`` does the job (``entry_status(fn)`` when ``fn`` returns results rather than a status);
the scripts call ``sys.exit(main())`` and pyproject.toml's console scripts name ``main``.

``run(main, argv)`` calls ``main(argv)``. A failure the user can fix (a ``UserError`` from
``missrec.errors``: bad option, missing or damaged file; or an ``OSError`` naming its file) prints ``error: <file or option>: <what is wrong and what to do>`` on one line
to stderr and exits with status 2; no traceback unless ``--debug`` is on the command line or
``MISSREC_DEBUG=1`` is set. Anything else (a bug) still raises with its full traceback.
Tools whose ``main`` returns an exit status (``sys.exit(main())``) use ``run(..., exit=False)``:
the same line, then status 2 is returned rather than raised (an interrupt still propagates).
"""
from __future__ import annotations

import argparse
import difflib
import os
import sys

from .errors import CorruptFileError, OptionError, UserError  # noqa: F401 - re-exported

EXIT_USER_ERROR = 2
DEBUG_HINT = "(--debug or MISSREC_DEBUG=1 shows the traceback)"


def debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("MISSREC_DEBUG", "") not in ("", "0")


def one_line(message: str) -> str:
    return " ".join(str(message).split())


def error_line(message: str, hint: str = "") -> None:
    """Print ``error: <message>`` as one line to stderr."""
    print(f"error: {one_line(message)}" + (f"  {hint}" if hint else ""), file=sys.stderr, flush=True)


def fail(message: str, hint: str = "") -> None:
    """Print ``error: <message>`` as one line and exit with status 2."""
    error_line(message, hint)
    sys.exit(EXIT_USER_ERROR)


def describe(e: BaseException) -> str | None:
    """The one-line text for an expected failure, or None for an unexpected one (a bug)."""
    if isinstance(e, UserError):
        return str(e)
    if isinstance(e, OSError) and e.filename is not None:  # FileNotFoundError, IsADirectoryError, ...
        return f"{e.filename}: {e.strerror or e}"
    # Any other ValueError/KeyError/TypeError/OSError is a bug (or a check not written yet): it keeps
    # its traceback, so "too many values to unpack" never reaches the user as advice.
    if type(e).__name__ == "OutOfMemoryError":
        return "out of accelerator memory: lower --train_batch_size / --eval_batch_size"
    return None


def run(main, argv=None, *, exit: bool = True):
    """Call ``main(argv)`` with ``--debug`` taken out of ``argv``; see the module docstring."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    argv = [a for a in argv if a != "--debug"]
    try:
        return main(argv)
    except KeyboardInterrupt:
        if debug or not exit:  # a caller that takes a status back is stopped by the interrupt too
            raise
        error_line("interrupted")
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - sorted into expected (one line) and bugs (re-raised)
        msg = describe(e)
        if msg is None or debug:
            raise
        if not exit:
            error_line(msg, DEBUG_HINT)
            return EXIT_USER_ERROR
        fail(msg, DEBUG_HINT)


def entry_status(work):
    """``work(argv)`` (a recipe returning its results) as a ``run`` target that returns status 0."""
    def call(argv):
        work(argv)
        return 0
    call.__name__ = getattr(work, "__name__", "work")
    return call


class ArgumentParser(argparse.ArgumentParser):
    """argparse with no abbreviated options and one-line errors (``error: --opt: ...``)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_known_args(self, args=None, namespace=None):
        # Option names use underscores only; the dashed spelling of one (--no-progress for
        # --no_progress, from before the names were unified) is still read, and never shown.
        known = {s for a in self._actions for s in a.option_strings}
        args = [_underscored(a, known) for a in (sys.argv[1:] if args is None else args)]
        return super().parse_known_args(args, namespace)

    def error(self, message):
        fail(parser_message(self, message))


def _underscored(arg: str, known: set[str]) -> str:
    name, eq, value = arg.partition("=")
    alt = "--" + name[2:].replace("-", "_")
    return alt + eq + value if name.startswith("--") and name not in known and alt in known else arg


def parser_message(parser: argparse.ArgumentParser, message: str) -> str:
    """argparse's message, with a near miss suggested for an unknown option."""
    if message.startswith("unrecognized arguments:"):
        unknown = [a for a in message.split(":", 1)[1].split() if a.startswith("-")]
        if unknown:
            opt = unknown[0].split("=", 1)[0]
            known = [s for a in parser._actions for s in a.option_strings]
            longer = [k for k in known if k.startswith(opt)]  # an abbreviation: say what it is short for
            near = longer if len(longer) == 1 else difflib.get_close_matches(opt, known, n=1, cutoff=0.75)
            hint = f"did you mean {near[0]}? " if near else ""
            return f"{opt}: unknown option ({hint}options are never abbreviated; see --help)"
    if message.startswith("argument "):  # "argument --k: invalid ..." -> "--k: invalid ..."
        name, sep, what = message[len("argument "):].partition(": ")
        if sep:
            message = f"{name.split('/')[0]}: {what}"
    return f"{message} (see --help)"
