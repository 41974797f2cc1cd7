"""Every command shown in README.md, the stage READMEs and docs/ parses: the docs and the tools agree.

The commands are read from the READMEs' fenced code blocks at test time. Each `python X.py ...`,
`python -m mod ...`, `accelerate launch ... X.py ...` or installed `missrec-*` script is run up
to the end of its option parsing and validation (``missrec.args.parse`` or ``parse_args``), then
stopped: nothing is trained, downloaded or written. A command whose options are wrong fails
exactly as it would for a user (one `error:` line).
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Runs each command in this one process and stops it once its options are parsed and validated.
DRIVER = r'''
import argparse, io, json, os, runpy, sys, traceback, contextlib

class Parsed(BaseException):
    pass

depth = [0]

def stop_after(fn, stop_on_known=False):
    def inner(*a, **k):
        depth[0] += 1
        try:
            r = fn(*a, **k)
        finally:
            depth[0] -= 1
        if depth[0] == 0:
            raise Parsed()
        return r
    return inner

# parse_known_args alone is only a first pass (the rest goes to a second parser), so it never stops.
def counted(fn):
    def inner(*a, **k):
        depth[0] += 1
        try:
            return fn(*a, **k)
        finally:
            depth[0] -= 1
    return inner

argparse.ArgumentParser.parse_args = stop_after(argparse.ArgumentParser.parse_args)
argparse.ArgumentParser.parse_known_args = counted(argparse.ArgumentParser.parse_known_args)
import missrec.args
missrec.args.parse = stop_after(missrec.args.parse)

results = []
for kind, target, args in json.load(sys.stdin):
    err = io.StringIO()
    code = None
    argv0 = sys.argv[:]
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            if kind == "script":
                sys.argv = [target] + args
                runpy.run_path(target, run_name="__main__")
            elif kind == "module":
                sys.argv = [target] + args
                runpy.run_module(target, run_name="__main__", alter_sys=True)
            else:  # "entry": module:function of an installed console script
                mod, fn = target.split(":")
                sys.argv = [mod] + args
                __import__(mod)
                getattr(sys.modules[mod], fn)()
            code = "ran past parsing"
        except Parsed:
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            code = "exception"
            traceback.print_exc(file=err)
    sys.argv = argv0
    depth[0] = 0
    results.append({"code": code, "stderr": err.getvalue()[-2000:]})
print(json.dumps(results))
'''


def readmes() -> list[Path]:
    """README.md, the stage READMEs and every other Markdown page one folder down (docs/, benchmarks/)."""
    pages = sorted(ROOT.glob("*.md")) + sorted(ROOT.glob("*/*.md"))
    return [p for p in pages if not any(part.startswith(".") for part in p.relative_to(ROOT).parts)]


def code_blocks(text: str):
    for m in re.finditer(r"^```([^\n`]*)\n(.*?)^```", text, flags=re.S | re.M):
        if m.group(1).strip() in ("", "bash", "sh", "shell", "console"):
            yield m.group(2)


def commands(block: str):
    """Shell lines of a block, continuations joined, comments dropped, as token lists."""
    for line in block.replace("\\\n", " ").splitlines():
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError:
            continue
        if tokens:
            yield tokens


def console_scripts() -> dict[str, str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return meta.get("project", {}).get("scripts", {})


def to_invocation(tokens: list[str], scripts: dict[str, str]):
    """(kind, target, args) to run, or None for a line that is not one of our Python entry points."""
    head = tokens[0]
    if head.startswith("python"):
        rest = tokens[1:]
    elif head == "accelerate" and tokens[1:2] == ["launch"]:
        rest = tokens[2:]
        i = 0
        while i < len(rest) and rest[i] != "-m" and not rest[i].endswith(".py"):
            if rest[i] == "--config_file":
                assert (ROOT / rest[i + 1]).is_file(), f"accelerate config {rest[i + 1]} does not exist"
            i += 1
        rest = rest[i:]
    elif head in scripts:
        return "entry", scripts[head], tokens[1:]
    else:
        return None
    if rest[:1] == ["-m"]:
        return "module", rest[1], rest[2:]
    if rest and rest[0].endswith(".py"):
        return "script", rest[0], rest[1:]
    return None


def collect():
    scripts = console_scripts()
    found = []
    for readme in readmes():
        for block in code_blocks(readme.read_text(encoding="utf-8")):
            for tokens in commands(block):
                if tokens[0] == "bash" and len(tokens) > 1 and tokens[1].endswith(".sh"):
                    assert (ROOT / tokens[1]).is_file(), f"{readme.name}: {tokens[1]} does not exist"
                    continue
                inv = to_invocation(tokens, scripts)
                if inv:
                    found.append((readme.relative_to(ROOT), " ".join(tokens), inv))
    return found


def test_readmes_show_commands():
    found = collect()
    assert len(found) >= 8, found  # the READMEs show this many; an extraction bug would find none
    kinds = {inv[0] for _, _, inv in found}
    assert {"script", "module"} <= kinds


def test_every_readme_command_parses():
    found = collect()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("MISSREC_DEBUG", None)
    p = subprocess.run([sys.executable, "-c", DRIVER], input=json.dumps([inv for *_, inv in found]),
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    results = json.loads(p.stdout.strip().splitlines()[-1])
    bad = [f"{readme}: `{line}` -> {r['code']}: {r['stderr'].strip()[-600:]}"
           for (readme, line, _), r in zip(found, results) if r["code"] != 0]
    assert not bad, "\n".join(bad)
