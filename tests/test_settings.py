"""One source per setting: typed YAML (1e-3 is a number) in every recipe, one-line type errors,
per-recipe defaults in --help, full-precision results.json, 1-based epochs, every --ks cut-off in
the table, and one leave-one-out split shared by the sample and both converters."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _tiny import make_domain
from missrec.args import ModelArgs, TrainArgs, coerce, parse, yaml_scalar
from missrec.errors import OptionError

ROOT = Path(__file__).resolve().parents[1]


def _yaml(tmp_path, text, name="c.yaml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def _one_error(capsys, *needles) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for n in needles:
        assert n in err, (n, err)
    return err


# ----------------------------------------------------------------------------- typed YAML
def test_yaml_exponent_numbers_are_numbers():
    assert yaml_scalar("1e-3") == 0.001 and yaml_scalar("5E4") == 50000.0 and yaml_scalar("-2e+5") == -200000.0
    assert yaml_scalar("10") == 10 and isinstance(yaml_scalar("10"), int)
    assert yaml_scalar("abc") == "abc" and yaml_scalar("10,20") == "10,20"
    assert coerce("k", 1e5, int) == 100000 and coerce("k", 3, float) == 3.0 and coerce("k", 10, str) == "10"
    with pytest.raises(OptionError, match="k: expected an integer, got 1.5"):
        coerce("k", 1.5, int)


def test_yaml_1e3_in_the_finetune_and_table_configs(tmp_path):
    from missrec.recipes.finetune import FinetuneArgs, FinetuneTrainArgs
    from missrec.recipes.table import TableArgs

    cfg = _yaml(tmp_path, "learning_rate: 1e-3\ngamma_reg: 1E-5\nadam_epsilon: 5e-9\nmax_steps: 1e2\n"
                          "temperature: 7e-2\nsettings: noid-scratch\n")
    m, t, f, own = parse((ModelArgs, FinetuneTrainArgs, FinetuneArgs, TableArgs), ["--config", cfg])
    assert (t.learning_rate, t.gamma_reg, t.adam_epsilon, t.max_steps) == (0.001, 1e-5, 5e-9, 100)
    assert m.temperature == 0.07 and own.settings == "noid-scratch"
    assert isinstance(t.max_steps, int)


def test_yaml_1e3_in_the_pretrain_config(tmp_path):
    from missrec.recipes.pretrain import PretrainArgs

    cfg = _yaml(tmp_path, "lambda_seq: 5e-4\nlearning_rate: 1E-4\n")
    _, t, p = parse((ModelArgs, TrainArgs, PretrainArgs), ["--config", cfg])
    assert p.lambda_seq == 5e-4 and t.learning_rate == 1e-4


def test_yaml_1e3_in_baseline_sections_and_model_opts(tmp_path):
    from missrec.graph.loop import FitArgs
    from missrec.recipes.baselines import BaselineFitArgs, DataArgs, model_config

    cfg = _yaml(tmp_path, "model: lightgcn\nepochs: 1E1\nmodel_cfg:\n  lr: 1e-3\n  reg: 1e-5\n"
                          "lightgcn:\n  reg: 5e-4\n  batch_size: 256\n")
    d, f, sections = parse((DataArgs, BaselineFitArgs), ["--config", cfg, "--model_opts", "n_layers=2,lr=2e-3"],
                           sections=("model_cfg", "lightgcn"))
    assert f.epochs == 10 and isinstance(f, FitArgs)
    c = model_config(d.model, sections, d.model_opts, cfg)
    assert c == {"lr": 0.002, "reg": 5e-4, "batch_size": 256, "n_layers": 2}
    assert all(type(c[k]) is float for k in ("lr", "reg"))


@pytest.mark.parametrize("yaml_text, opts, needle", [
    ("model_cfg:\n  lr: abc\n", "", "c.yaml: model_cfg.lr: expected a number, got 'abc'"),
    ("lightgcn:\n  n_layers: 2.5\n", "", "c.yaml: lightgcn.n_layers: expected an integer, got 2.5"),
    ("model_cfg:\n  nope: 1\n", "", "c.yaml: model_cfg.nope: not an option of lightgcn"),
    ("", "lr=abc", "--model_opts lr: expected a number, got 'abc'"),
    ("", "lr", "--model_opts: expected key=value, got 'lr'"),
])
def test_wrong_model_option_types_are_one_line(tmp_path, capsys, yaml_text, opts, needle):
    from missrec.recipes.baselines import main

    argv = ["--model", "lightgcn", "--output_dir", str(tmp_path / "out"), "--epochs", "1"]
    if yaml_text:
        argv += ["--config", _yaml(tmp_path, yaml_text)]
    if opts:
        argv += ["--model_opts", opts]
    try:
        rc = main(argv)
    except SystemExit as e:  # refused while parsing
        rc = e.code
    assert rc == 2
    _one_error(capsys, needle)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("yaml_text, needle", [
    ("learning_rate: abc\n", "c.yaml: learning_rate: expected a number, got 'abc'"),
    ("epochs: 1.5\n", "c.yaml: epochs: expected an integer, got 1.5"),
    ("mask_history: 3\n", "c.yaml: mask_history: expected true or false, got 3"),
    ("fusion: mean\n", "c.yaml: fusion: must be one of dynamic_shared | static, got 'mean'"),
    ("patience: 0\n", "c.yaml: patience: must be an integer >= 1, got 0"),
])
def test_wrong_setting_types_are_one_line_naming_file_and_key(tmp_path, capsys, yaml_text, needle):
    from missrec.recipes.finetune import FinetuneArgs, FinetuneTrainArgs

    with pytest.raises(SystemExit) as e:
        parse((ModelArgs, FinetuneTrainArgs, FinetuneArgs), ["--config", _yaml(tmp_path, yaml_text)])
    assert e.value.code == 2
    _one_error(capsys, needle)


def test_each_dataclass_validates_its_own_fields():
    from missrec.graph.loop import FitArgs
    from missrec.recipes.finetune import FinetuneArgs

    with pytest.raises(OptionError, match="--mode: must be one of transductive | inductive"):
        FinetuneArgs(mode="both")
    with pytest.raises(OptionError, match="--metric: 'hit@5' is not computed"):
        FitArgs(metric="hit@5")
    assert FitArgs(metric="hit@10").ks_tuple == FinetuneArgs().ks_tuple == (10, 20, 50)
    # a field called `mode` elsewhere is not restricted by FinetuneArgs' rule
    from dataclasses import dataclass

    @dataclass
    class Other:
        mode: str = "anything"
    assert parse((Other,), ["--mode", "x"])[0].mode == "x"


# ----------------------------------------------------------------------------- defaults and --help
def _help(script) -> str:
    p = subprocess.run([sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1",
                            "HF_HUB_OFFLINE": "1", "COLUMNS": "1000"})
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_help_shows_the_defaults_that_apply():
    from missrec.recipes.finetune import FinetuneTrainArgs

    ft = _help("finetune/run.py")
    assert "Number of epochs. (default: 300)" in ft and "(default: 0.5)" in ft
    assert FinetuneTrainArgs().epochs == 300 and TrainArgs().epochs == 100
    pt = _help("pretrain/run.py")  # your data's defaults, not the embedded sample's YAML
    # Model options left unset take the model's own defaults (the same for pretraining and finetuning).
    assert "Longest history (older items are cut). Default: the model's own (MISSRec 50;" in pt
    assert "Feed-forward width. Default: the model's own (MISSRec 256;" in pt and "Dropout. Default: the model's own (MISSRec 0.5;" in pt
    assert "--output-dir" not in pt  # one spelling per option
    bl = _help("baselines/run.py")
    assert "(default: outputs/baselines/{dataset}-{model})" in bl and "Maximum number of epochs. (default: 1000)" in bl


def test_pretrain_defaults_match_finetuning_model_sizes():
    from missrec.recipes.finetune import FinetuneArgs, FinetuneTrainArgs

    pre = parse((ModelArgs, TrainArgs), ["--output_dir", "x"])[0]
    fin = parse((ModelArgs, FinetuneTrainArgs, FinetuneArgs), [])[0]
    assert pre == fin and pre.given() == {}  # unset: the model's own defaults, for both recipes
    from missrec.config import MISSRecConfig
    c = MISSRecConfig()
    assert (c.max_seq_length, c.dropout, c.inner_size) == (50, 0.5, 256)


def test_dashed_option_spellings_still_parse_but_are_not_shown(capsys):
    from missrec.cli import ArgumentParser

    p = ArgumentParser(prog="x")
    p.add_argument("--skip_feature_check", action="store_true")
    assert p.parse_args(["--skip-feature-check"]).skip_feature_check
    assert "skip-feature-check" not in p.format_help()


# ----------------------------------------------------------------------------- reports
def test_results_json_keeps_full_precision_and_epochs_count_from_1(tmp_path):
    from missrec.recipes.baselines import run_baseline

    make_domain(tmp_path, "tiny")
    out = tmp_path / "out"
    res = run_baseline(["--data_root", str(tmp_path), "--dataset", "tiny", "--model", "lightgcn",
                        "--model_opts", "reg=1e-5,lr=1.2345678e-3,batch_size=64,embed_dim=8", "--epochs", "2",
                        "--output_dir", str(out), "--progress", "false", "--plot", "false"])
    saved = json.loads((out / "results.json").read_text())
    assert saved["cfg"]["reg"] == 1e-5 and saved["cfg"]["lr"] == 1.2345678e-3
    assert saved["test"] == res["test"]  # metrics unrounded too
    assert [h["epoch"] for h in saved["history"]] == [1, 2] and saved["best_epoch"] in (1, 2)
    assert "| valid |" in (out / "results.md").read_text()


def test_finetune_epochs_count_from_1_and_table_has_every_ks_column(tmp_path):
    from missrec.recipes.table import run_table

    make_domain(tmp_path, "tiny")
    out = tmp_path / "out"
    rows = run_table(["--data_root", str(tmp_path), "--dataset", "tiny", "--settings", "sasrec", "--epochs", "2",
                      "--ks", "5,20", "--metric", "ndcg@5", "--output_dir", str(out), "--progress", "false",
                      "--plot", "false", "--train_batch_size", "64"])
    head = (out / "table.md").read_text().splitlines()[0]
    assert "| R@5 | N@5 | R@20 | N@20 | time |" in head and "R@10" not in head and "@50" not in head
    assert set(rows[0]["test"]) == {"recall@5", "ndcg@5", "recall@20", "ndcg@20"}
    res = json.loads((out / "sasrec" / "results.json").read_text())
    assert [h["epoch"] for h in res["history"]] == [1, 2] and res["best_epoch"] in (1, 2)
    assert json.loads((out / "table.json").read_text())["ks"] == [5, 20]


# ----------------------------------------------------------------------------- one split
def _reference(seqs, max_len):
    """The protocol restated independently: train = every prefix of items[:-2], valid, test."""
    out = {"train": [], "valid": [], "test": []}
    for u, s in enumerate(seqs):
        for k in range(1, len(s) - 2):
            out["train"].append((str(u), s[max(0, k - max_len):k], s[k]))
        out["valid"].append((str(u), s[:-2][-max_len:], s[-2]))
        out["test"].append((str(u), s[:-1][-max_len:], s[-1]))
    return out


def _read_inter(path: Path):
    lines = path.read_text().splitlines()[1:]
    return [(u, [int(x) for x in h.split()], int(t)) for u, h, t in (ln.split("\t") for ln in lines)]


def test_sample_and_both_converters_split_alike(tmp_path):
    from missrec.data.sample import _splits
    from missrec.features import amazon, movielens

    rng = np.random.default_rng(3)
    max_len = 4
    seqs = [rng.integers(0, 40, size=rng.integers(3, 11)).tolist() for _ in range(30)]
    want = _reference(seqs, max_len)
    lens = np.array([len(s) for s in seqs])
    bounds = np.concatenate([[0], np.cumsum(lens)])
    flat = np.array([x for s in seqs for x in s], dtype=np.int64)

    padded = np.zeros((len(seqs), lens.max()), np.int64)
    for u, s in enumerate(seqs):
        padded[u, :len(s)] = s
    sample = {}
    for split, sp in _splits(padded, lens, offset=1, max_hist=max_len).items():
        sample[split] = [(str(u), (sp.seq[r, :sp.length[r]] - 1).tolist(), int(sp.target[r]) - 1)
                         for r, u in enumerate(sp.user)]

    files = {s: io.StringIO() for s in ("train", "valid", "test")}
    prep = amazon.Prepared([str(i) for i in range(40)], [str(u) for u in range(30)], [""] * 40, [None] * 40, flat, bounds)
    amazon._write_rows(files, prep, max_len, str, str)
    az = {s: [(u, [int(x) for x in h.split()], int(t)) for u, h, t in (ln.split("\t") for ln in f.getvalue().splitlines())]
          for s, f in files.items()}

    mprep = movielens.Prepared([str(i) for i in range(40)], [str(u) for u in range(30)], [""] * 40, flat, bounds, [])
    folder = movielens.write_dataset(tmp_path, "ml", mprep, max_len, {}, movielens.Subset())
    ml = {s: _read_inter(folder / f"ml.{s}.inter") for s in ("train", "valid", "test")}

    for split in ("train", "valid", "test"):
        assert sample[split] == az[split] == ml[split] == want[split], split
    assert amazon.split_rows is movielens.split_rows and amazon.kcore is movielens.kcore


def test_kcore_sizes_do_not_change_the_core():
    from missrec.data.split import kcore

    rng = np.random.default_rng(0)
    u, i = rng.integers(0, 30, 400), rng.integers(0, 50, 400)
    m1, r1 = kcore(u, i, 4)
    m2, r2 = kcore(u, i, 4, 60, 70)
    assert (m1 == m2).all() and r1 == r2 > 1
    cu, ci = np.bincount(u[m1]), np.bincount(i[m1])
    assert cu[cu > 0].min() >= 4 and ci[ci > 0].min() >= 4
