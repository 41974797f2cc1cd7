"""Data files and simple options end in one `error:` line, exit 2, nothing written (issue 19);
a bug keeps its traceback and divergence reads the same in both training loops (issue 18).

Entry points run in-process through ``missrec.cli.run`` (the console scripts' path) where that is
enough, as subprocesses where the traceback or the whole run is the point.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from _tiny import make_domain
from missrec import cli
from missrec.errors import DivergenceError, OptionError, UserError

ROOT = Path(__file__).resolve().parents[1]
FINETUNE, BASELINES = ROOT / "finetune" / "run.py", ROOT / "baselines" / "run.py"
SMALL = ["--hidden_size", "32", "--n_heads", "2", "--inner_size", "32", "--progress", "false",
         "--train_batch_size", "64"]


def _env():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    for k in ("MISSREC_DEBUG", "MISSREC_KILL_AFTER_STEP", "MISSREC_DATA_ROOT"):
        env.pop(k, None)
    return env


def _run(args):
    return subprocess.run([sys.executable, *map(str, args)], env=_env(), capture_output=True, text=True, timeout=300)


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line(capsys, main, argv, *needles) -> str:
    """``cli.run(main, argv)`` exits 2 with exactly one ``error:`` line holding every needle."""
    with pytest.raises(SystemExit) as e:
        cli.run(main, [str(a) for a in argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for n in needles:
        assert str(n) in lines[0], (n, lines[0])
    return lines[0]


def _finetune(argv):
    from missrec.recipes.finetune import finetune
    return finetune(argv)


def _baselines(argv):
    from missrec.recipes.baselines import run_baseline
    return run_baseline(argv)


def _sample(argv):
    from missrec.recipes.sample import _main
    return _main(argv)


@pytest.fixture
def domain(tmp_path):
    make_domain(tmp_path / "d", "tiny")
    return tmp_path / "d"


# ----------------------------------------------------------------------------- bugs keep their traceback
@pytest.mark.parametrize("exc", [ValueError("too many values to unpack (expected 2)"), KeyError("k"),
                                 TypeError("unsupported operand"), OSError("no file named"),
                                 RuntimeError("shape mismatch")])
def test_only_user_errors_become_one_line(exc):
    assert cli.describe(exc) is None
    assert cli.describe(OptionError("--x", "bad")) == "--x: bad"
    assert cli.describe(FileNotFoundError(2, "No such file or directory", "/nope")) == "/nope: No such file or directory"
    assert issubclass(UserError, ValueError)  # callers catching bad input as ValueError keep working


def test_a_bug_on_the_run_path_shows_its_traceback(domain, tmp_path, monkeypatch, capsys):
    import missrec.data.atomic as atomic

    def bug(*a, **k):
        raise ValueError("too many values to unpack (expected 2)")

    monkeypatch.setattr(atomic, "load_dataset", bug)
    with pytest.raises(ValueError, match="too many values to unpack"):
        cli.run(_finetune, ["--data_root", str(domain), "--dataset", "tiny", "--output_dir", str(tmp_path / "o"),
                            *SMALL, "--epochs", "1"])
    assert "error:" not in capsys.readouterr().err


def test_a_bug_in_a_console_script_prints_a_traceback_not_an_error_line(tmp_path):
    code = ("import sys, missrec.recipes.sample as s\n"
            "def bug(*a, **k):\n    raise ValueError('too many values to unpack (expected 2)')\n"
            "s.ensure_sample = bug\n"
            f"sys.exit(s.main(['--root', {str(tmp_path / 'r')!r}]))\n")
    p = _run(["-c", code])
    assert p.returncode == 1
    assert "Traceback (most recent call last)" in p.stderr
    assert p.stderr.strip().splitlines()[-1] == "ValueError: too many values to unpack (expected 2)"
    assert not any(ln.startswith("error:") for ln in p.stderr.splitlines())


# ----------------------------------------------------------------------------- divergence: one error, both loops
DIVERGED = re.compile(r"error: training diverged at (step \d+ \()?epoch (\d+)\)?: loss \S+.*; lower the learning rate.*")


def test_divergence_is_the_same_one_line_in_both_loops(domain, tmp_path):
    seq = _run([FINETUNE, "--data_root", domain, "--dataset", "tiny", "--output_dir", tmp_path / "ft", *SMALL,
                "--epochs", "2", "--learning_rate", "1e12"])
    graph = _run([BASELINES, "--format", "atomic", "--data_root", domain, "--dataset", "tiny", "--model", "lightgcn",
                  "--model_opts", "lr=1e30,embed_dim=8", "--epochs", "5", "--output_dir", tmp_path / "gr",
                  "--plot", "false"])
    lines = []
    for p in (seq, graph):
        assert p.returncode == 2, p.stderr[-2000:]
        assert "Traceback" not in p.stderr, p.stderr[-2000:]
        errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and DIVERGED.fullmatch(errors[0]), p.stderr[-2000:]
        lines.append(errors[0])
    assert "at step" in lines[0] and "--learning_rate" in lines[0]
    assert "lr=" in lines[1]  # the graph models' option name
    # Nothing of either run is written (the graph run's folder holds only its released lock file).
    assert not (tmp_path / "gr" / "results.json").exists() and not (tmp_path / "ft" / "results.json").exists()


def test_graph_loop_divergence_is_a_user_error():
    from missrec.graph.base import check_finite
    check_finite({"loss": 0.5}, 1)
    with pytest.raises(DivergenceError, match=r"^training diverged at epoch 3: loss nan"):
        check_finite({"loss": math.nan, "reg": 1.0}, 3)


# ----------------------------------------------------------------------------- meta.json fields
@pytest.mark.parametrize("patch,needles", [
    ({"dims": {"feat1CLS": 0}}, ["dims: feat1CLS", "whole number >= 1", "got 0"]),
    ({"dims": {"feat1CLS": "16"}}, ["dims: feat1CLS", "got '16'"]),
    ({"dims": [16, 16]}, ["dims: expected an object", "[16, 16]"]),
    ({"dims": "16"}, ["dims: expected an object"]),
    ({"n_items": 30.7}, ["n_items: expected a whole number", "30.7"]),
    ({"n_items": "abc"}, ["n_items: expected a whole number", "'abc'"]),
    ({"n_items": True}, ["n_items: expected a whole number"]),
    ({"n_users": -1}, ["n_users: expected a whole number >= 0", "-1"]),
])
def test_bad_meta_json_field_is_one_line_naming_file_and_key(domain, tmp_path, capsys, patch, needles):
    meta_path = domain / "tiny" / "tiny.meta.json"
    meta = json.loads(meta_path.read_text())
    meta.update(patch)
    meta_path.write_text(json.dumps(meta))
    before = _tree(domain)
    out = tmp_path / "o"
    _one_line(capsys, _finetune, ["--data_root", domain, "--dataset", "tiny", "--output_dir", out, *SMALL,
                                  "--epochs", "1"], meta_path, *needles)
    assert not out.exists() and _tree(domain) == before


def test_meta_json_n_items_that_disagrees_still_names_the_file(domain):
    from missrec.data.atomic import load_dataset
    meta_path = domain / "tiny" / "tiny.meta.json"
    meta = json.loads(meta_path.read_text())
    meta["n_items"] = 31
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(UserError, match=r"tiny\.meta\.json: n_items 31 != 30 lines"):
        load_dataset(domain, "tiny")


# ----------------------------------------------------------------------------- duplicate raw ids
@pytest.mark.parametrize("suffix", ["item2index", "user2index"])
def test_duplicate_raw_id_in_an_index_map_names_file_line_and_id(domain, tmp_path, capsys, suffix):
    path = domain / "tiny" / f"tiny.{suffix}"
    lines = path.read_text().splitlines()
    raw = lines[2].split("\t")[0]
    lines[7] = f"{raw}\t7"  # line 8 repeats line 3's raw id under another index
    path.write_text("\n".join(lines) + "\n")
    before = _tree(domain)
    out = tmp_path / "o"
    _one_line(capsys, _finetune, ["--data_root", domain, "--dataset", "tiny", "--output_dir", out, *SMALL,
                                  "--epochs", "1"], f"{path}:8", repr(raw), "lines 3 and 8")
    assert not out.exists() and _tree(domain) == before


# ----------------------------------------------------------------------------- missrec-sample sizes
@pytest.mark.parametrize("argv,needles", [
    (["--source-items", "100000000"], ["--source-items: 100,000,000 is too large: at most 10,000"]),
    (["--target-items", "20000"], ["--target-items", "at most 10,000"]),
    (["--source-users", "5000000000"], ["--source-users", "at most 1,000,000"]),
    (["--n-sources", "1000"], ["--n-sources", "at most 100"]),
    (["--n-sources", "40", "--source-items", "9000"], ["items; at most 200,000"]),
    (["--target-users", "1"], ["--target-users: must be >= 2"]),
    (["--seed", "-1"], ["--seed: must be a whole number in 0..4294967295"]),
])
def test_sample_sizes_are_bounded_before_anything_is_allocated(tmp_path, capsys, argv, needles):
    root = tmp_path / "r"
    _one_line(capsys, _sample, ["--root", root, *argv], *needles)
    assert not root.exists()


# ----------------------------------------------------------------------------- graph model options
@pytest.mark.parametrize("model,opts,needles", [
    ("lightgcn", "embed_dim=0", ["lightgcn option embed_dim: must be a whole number >= 1, got 0"]),
    ("lightgcn", "n_layers=-3", ["lightgcn option n_layers: must be a whole number >= 0, got -3"]),
    ("lightgcn", "lr=abc", ["--model_opts lr: expected a number, got 'abc'"]),
    ("lightgcn", "lr=-0.1", ["lightgcn option lr: must be a number > 0"]),
    ("vbpr", "embed_dim=2.5", ["--model_opts embed_dim: expected an integer, got 2.5"]),
    ("slmrec", "dropout=1.5", ["slmrec option dropout: must lie in [0, 1)"]),
    ("mmssl", "heads=0", ["mmssl option heads: must be a whole number >= 1, got 0"]),
    ("mmssl", "T=abc", ["--model_opts T: expected an integer, got 'abc'"]),
])
def test_bad_graph_model_option_is_one_line_naming_the_key(domain, tmp_path, capsys, model, opts, needles):
    out = tmp_path / "o"
    _one_line(capsys, _baselines, ["--format", "atomic", "--data_root", domain, "--dataset", "tiny", "--model", model,
                                   "--model_opts", opts, "--epochs", "1", "--output_dir", out], *needles)
    assert not out.exists()


def test_bad_graph_model_option_in_yaml_is_one_line(domain, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"epochs": 1, "lightgcn": {"embed_dim": 0}}))
    out = tmp_path / "o"
    _one_line(capsys, _baselines, ["--config", cfg, "--format", "atomic", "--data_root", domain, "--dataset", "tiny",
                                   "--model", "lightgcn", "--output_dir", out], "embed_dim", "got 0")
    assert not out.exists()


def test_graph_option_checks_are_the_constructors_too():
    from missrec.graph import MODELS
    from missrec.graph.data import GraphData
    data = GraphData.from_pairs(3, 4, np.array([0, 1, 2]), np.array([0, 1, 3]),
                                valid=[[1], [2], [0]], test=[[2], [3], [1]], name="t")
    with pytest.raises(OptionError, match="embed_dim"):
        MODELS["lightgcn"](data, {"embed_dim": 0})
    assert MODELS["lightgcn"](data, {"embed_dim": 4, "lr": 1}).cfg["lr"] == 1  # an int for a float is fine
    assert MODELS["lightgcn"](data, {"lr": "1e-3"}).cfg["lr"] == 1e-3  # PyYAML reads 1e-3 as text


# ----------------------------------------------------------------------------- simple options
@pytest.mark.parametrize("argv,needles", [
    (["--seed", "-1"], ["--seed: must be a whole number in 0..4294967295", "got -1"]),
    (["--dataset", ""], ["--dataset: must name a dataset folder", "got ''"]),
])
def test_bad_simple_option_is_one_line_before_any_work(domain, tmp_path, capsys, argv, needles):
    out = tmp_path / "o"
    base = ["--data_root", domain, "--dataset", "tiny", "--output_dir", out, *SMALL, "--epochs", "1"]
    _one_line(capsys, _finetune, base + argv, *needles)
    assert not out.exists()


def test_graph_seed_out_of_range_is_one_line(domain, tmp_path, capsys):
    _one_line(capsys, _baselines, ["--format", "atomic", "--data_root", domain, "--dataset", "tiny", "--model",
                                   "lightgcn", "--seed", "-1", "--output_dir", tmp_path / "o"], "--seed", "got -1")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("inside", [False, True])
def test_output_dir_naming_a_file_is_refused_at_startup(domain, tmp_path, capsys, inside):
    f = tmp_path / "taken"
    f.write_text("mine")
    out = f / "sub" if inside else f
    _one_line(capsys, _finetune, ["--data_root", domain, "--dataset", "tiny", "--output_dir", out, *SMALL,
                                  "--epochs", "1"], "--output_dir", "is an existing file", str(out))
    assert f.read_text() == "mine" and capsys.readouterr().out == ""  # before any training (no progress printed)


# ----------------------------------------------------------------------------- model cards
HOSTILE = "x<!-- everything after this is hidden"


def test_model_card_escapes_strings_from_data_files():
    from markdown_it import MarkdownIt

    from missrec.modelcard import model_card
    results = {"dataset": HOSTILE + "\n# not a heading", "best_epoch": 1, "epochs_run": 2,
               "features": {"model": "enc](javascript:alert(1)) <b>bold</b> `code` | cell"},
               "test": {"recall@10": 0.1234, "ndcg@10<!--": 0.5}, "valid": {"recall@10": 0.2, "ndcg@10<!--": 0.4}}
    text = model_card({"model_type": "missrec", "text_dim": 8, "image_dim": "<!--"}, results)
    body = text.split("\n---\n", 1)[1]
    html = MarkdownIt("commonmark").enable("table").render(body)
    assert "<!--" not in html and "<b>" not in html and "href" not in html and "<code>code" not in html
    assert "0.1234" in html and "## Configuration" not in html and "<h2>Configuration</h2>" in html
    assert "&lt;!-- everything after this is hidden # not a heading" in html  # shown verbatim, on one line
    assert html.count("<h1>") == 1  # only the card's own title
    assert "<th>ndcg@10&lt;!--</th>" in html
    # The YAML front matter stays valid and keeps the strings (one line each).
    meta = yaml.safe_load(text.split("---\n", 2)[1])
    assert meta["datasets"] == [HOSTILE + " # not a heading"]


def test_model_card_written_into_a_checkpoint_is_escaped(domain, tmp_path):
    from missrec.modelcard import write_model_card
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "missrec", "text_dim": 16, "image_dim": 16}))
    write_model_card(folder, {"dataset": HOSTILE, "test": {"recall@10": 0.3}, "valid": {"recall@10": 0.2}})
    body = (folder / "README.md").read_text().split("\n---\n", 1)[1]
    assert "<!--" not in body and "&lt;!-- everything after this is hidden" in body and "0.3000" in body


# ----------------------------------------------------------------------------- file permissions
def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_checkpoint_files_all_get_the_usual_permissions(tmp_path):
    import torch

    from missrec.checkpoint import save_checkpoint
    old = os.umask(0o022)
    try:
        out = save_checkpoint(tmp_path / "ck", {"model_type": "missrec"}, {"w": torch.zeros(2)},
                              {"text_interest": torch.zeros(3, dtype=torch.long)})
    finally:
        os.umask(old)
    modes = {p.name: _mode(p) for p in out.iterdir()}
    assert set(modes) == {"config.json", "model.safetensors", "interest.safetensors", "README.md"}
    assert set(modes.values()) == {0o644}, modes
    assert _mode(out) == 0o755


def test_replace_dir_gives_library_written_files_the_usual_mode(tmp_path):
    from safetensors.torch import save_file

    from missrec.fsutil import replace_dir
    import torch
    src = tmp_path / ".x.tmp"
    (src / "accelerate").mkdir(parents=True)
    save_file({"a": torch.zeros(1)}, str(src / "accelerate" / "model.safetensors"))  # accelerate's way: 0600
    (src / "plain.json").write_text("{}")
    old = os.umask(0o022)
    try:
        replace_dir(src, tmp_path / "x")
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "x").rglob("*")]
    assert {_mode(p) for p in files if p.is_file()} == {0o644}
    assert {_mode(p) for p in files if p.is_dir()} == {0o755}
    shutil.rmtree(tmp_path / "x")
