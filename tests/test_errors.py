"""Bad input ends in one `error: <file or option>: ...` line, exit status 2, and nothing written.

One test per case of issue 11 handled here. Entry points run as subprocesses, exactly as a user
runs them; library-level cases call the library. Over 500 lines on purpose: one short test per
bad input (about 60), kept together so the list of handled cases reads in one place.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from _tiny import make_domain
from missrec.args import ModelArgs, TrainArgs, parse
from missrec.checkpoint import save_model
from missrec.config import MISSRecConfig
from missrec.data.atomic import DataFormatError, load_dataset, write_index_map
from missrec.errors import CorruptFileError, UserError
from missrec.factory import from_pretrained
from missrec.model import MISSRec

ROOT = Path(__file__).resolve().parents[1]
PRETRAIN, FINETUNE = ROOT / "pretrain" / "run.py", ROOT / "finetune" / "run.py"
SMALL = ["--hidden_size", "32", "--n_heads", "2", "--inner_size", "32", "--progress", "false",
         "--train_batch_size", "64"]


def _env(**extra):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    for k in ("MISSREC_DEBUG", "MISSREC_KILL_AFTER_STEP", "MISSREC_DATA_ROOT"):
        env.pop(k, None)
    env.update(extra)
    return env


def _run(args, env=None, cwd=None):
    cmd = [sys.executable, *map(str, args)]
    return subprocess.run(cmd, env=env or _env(), cwd=cwd, capture_output=True, text=True, timeout=300)


def _one_error_line(p, *needles) -> str:
    """Exit status 2, no traceback, exactly one `error:` line containing every needle."""
    assert p.returncode == 2, (p.returncode, p.stdout[-2000:], p.stderr[-3000:])
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, p.stderr
    for n in needles:
        assert str(n) in lines[0], (n, lines[0])
    return lines[0]


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _copy_domain(data, tmp_path, name="tiny") -> Path:
    root = tmp_path / "d"
    shutil.copytree(data / name, root / name)
    return root


@pytest.fixture(scope="module")
def pretrained(data, tmp_path_factory):
    """A real 1-epoch pretraining run (checkpoint-1 with accelerate state)."""
    out = tmp_path_factory.mktemp("pt") / "run"
    p = _run([PRETRAIN, "--data_root", data, "--dataset", "tinypt", "--output_dir", out, *SMALL, "--epochs", "1"])
    assert p.returncode == 0, p.stderr[-3000:]
    return out


def _transductive(folder: Path, ds, catalogue=True) -> Path:
    cfg = MISSRecConfig(hidden_size=32, n_heads=2, inner_size=32, text_dim=16, image_dim=16, use_id=True,
                        n_items=ds.n_items, catalogue=ds.catalogue() if catalogue else {})
    torch.manual_seed(0)
    save_model(folder, MISSRec(cfg))
    return folder


# ----------------------------------------------------------------------------- options
def _finetune_args():
    try:
        from missrec.recipes.finetune import FinetuneArgs  # after the package-layout move
    except ImportError:
        from finetune.run import FinetuneArgs
    return FinetuneArgs


@pytest.mark.parametrize("argv, needles", [
    (["--ks", "10,x"], ["--ks", "'10,x'", "positive integers"]),
    (["--ks", "0,10"], ["--ks", "'0,10'"]),
    (["--eval_batch_size", "0"], ["--eval_batch_size", ">= 1", "got 0"]),
    (["--max_seq_length", "0"], ["--max_seq_length", ">= 1"]),
    (["--metric", "ndcg@5", "--ks", "10,50"], ["--metric", "ndcg@5", "ndcg@10", "add its cut-off"]),
    (["--mode", "both"], ["--mode", "transductive | inductive"]),
    (["--hidden_size", "30", "--n_heads", "4"], ["--n_heads", "does not divide"]),
    (["--epoch", "3"], ["--epoch:", "unknown option", "did you mean --epochs?"]),
])
def test_bad_option_is_one_line(argv, needles, capsys):
    with pytest.raises(SystemExit) as e:
        parse((ModelArgs, TrainArgs, _finetune_args()), argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    for n in needles:
        assert n in err, (n, err)


@pytest.mark.parametrize("yaml_text, needles", [
    ("epochs: 1.5\n", ["epochs: expected an integer, got 1.5"]),
    ("metric: ndcg@5\nks: 10,50\n", ["metric: 'ndcg@5' is not computed"]),
    ("eval_batch_size: -1\n", ["eval_batch_size: must be an integer >= 1"]),
])
def test_bad_yaml_value_names_file_and_key(tmp_path, capsys, yaml_text, needles):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml_text)
    with pytest.raises(SystemExit) as e:
        parse((ModelArgs, TrainArgs, _finetune_args()), ["--config", str(cfg)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {cfg}: ")
    for n in needles:
        assert n in err
    if "epochs" not in yaml_text:  # a well-typed value overridden on the command line is fine
        parse((ModelArgs, TrainArgs, _finetune_args()),
              ["--config", str(cfg), "--metric", "ndcg@10", "--ks", "10", "--eval_batch_size", "8"])


def test_metric_not_in_ks_fails_before_training(data, tmp_path):
    out = tmp_path / "o"
    p = _run([FINETUNE, "--data_root", data, "--dataset", "tiny", "--output_dir", out, *SMALL,
              "--metric", "ndcg@5", "--ks", "10,50"])
    _one_error_line(p, "--metric", "ndcg@5")
    assert not out.exists()


def test_abbreviated_option_is_refused(data, tmp_path):
    out = tmp_path / "o"
    p = _run([PRETRAIN, "--data_root", data, "--dataset", "tinypt", "--output_dir", out, "--epoch", "3"])
    _one_error_line(p, "--epoch", "--epochs")
    assert not out.exists()


# ----------------------------------------------------------------------------- data files
def test_empty_valid_split_fails_before_training(data, tmp_path):
    root = _copy_domain(data, tmp_path)
    valid = root / "tiny" / "tiny.valid.inter"
    valid.write_text(valid.read_text().splitlines()[0] + "\n")
    out = tmp_path / "o"
    p = _run([FINETUNE, "--data_root", root, "--dataset", "tiny", "--output_dir", out, *SMALL, "--epochs", "1"])
    _one_error_line(p, valid, "no rows")
    assert not out.exists()


@pytest.mark.parametrize("suffix, line", [("train.inter", 3), ("item2index", 2)])
def test_non_utf8_names_file_and_line(data, tmp_path, suffix, line):
    root = _copy_domain(data, tmp_path)
    path = root / "tiny" / f"tiny.{suffix}"
    lines = path.read_bytes().split(b"\n")
    lines[line - 1] = lines[line - 1].replace(b"\t", b"\xff\xfe\t", 1)
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(CorruptFileError, match=rf"tiny\.{suffix.replace('.', '[.]')}:{line}: not UTF-8"):
        load_dataset(root, "tiny")
    out = tmp_path / "o"
    p = _run([FINETUNE, "--data_root", root, "--dataset", "tiny", "--output_dir", out, *SMALL, "--epochs", "1"])
    _one_error_line(p, f"{path}:{line}", "not UTF-8", "0xff")
    assert not out.exists()


def test_nan_feature_row_is_named_at_training_and_recommend_time(data, tmp_path):
    root = _copy_domain(data, tmp_path)
    feat = root / "tiny" / "tiny.feat1CLS"
    arr = np.fromfile(feat, dtype="<f4").reshape(30, 16)
    arr[7, 3] = np.nan
    arr.tofile(feat)
    out = tmp_path / "o"
    p = _run([FINETUNE, "--data_root", root, "--dataset", "tiny", "--output_dir", out, *SMALL, "--epochs", "1"])
    _one_error_line(p, feat, "non-finite value in row 7")
    assert not out.exists()
    ds = load_dataset(data, "tiny")
    ckpt = _transductive(tmp_path / "ckpt", ds)
    before = _tree(ckpt)
    p = _run(["-m", "missrec.recommend", ckpt, "--data_root", root, "--dataset", "tiny", "--history", "I1", "I2"])
    _one_error_line(p, feat, "row 7")
    assert p.stdout == "" and _tree(ckpt) == before


# ----------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("size", [0, 100])
def test_truncated_model_safetensors_names_the_file(data, tmp_path, size):
    ds = load_dataset(data, "tiny")
    ckpt = _transductive(tmp_path / "ckpt", ds)
    w = ckpt / "model.safetensors"
    w.write_bytes(w.read_bytes()[:size])
    with pytest.raises(CorruptFileError, match="model.safetensors: not a readable safetensors file"):
        from_pretrained(ckpt)
    out = tmp_path / "o"
    p = _run([FINETUNE, "--data_root", data, "--dataset", "tiny", "--output_dir", out, *SMALL,
              "--pretrained", ckpt, "--epochs", "1"])
    _one_error_line(p, w, "truncated or damaged")
    assert not out.exists()
    p = _run(["-m", "missrec.recommend", ckpt, "--data_root", data, "--dataset", "tiny", "--history", "I1"])
    _one_error_line(p, w)


def test_corrupt_config_json_names_the_file(data, tmp_path):
    ckpt = _transductive(tmp_path / "ckpt", load_dataset(data, "tiny"))
    (ckpt / "config.json").write_text('{"hidden_size": 32,\n')
    with pytest.raises(CorruptFileError, match=r"config\.json: not valid JSON"):
        from_pretrained(ckpt)


def _resume(data, run_dir, *extra):
    return _run([PRETRAIN, "--data_root", data, "--dataset", "tinypt", "--output_dir", run_dir, *SMALL,
                 "--epochs", "2", "--resume_from", "latest", *extra])


def _damaged_run(pretrained, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(pretrained, run_dir)
    return run_dir, run_dir / "checkpoint-1"


def test_resume_with_other_hidden_size_names_checkpoint_and_option(data, pretrained, tmp_path):
    run_dir, ckpt = _damaged_run(pretrained, tmp_path)
    before = _tree(run_dir)
    p = _resume(data, run_dir, "--hidden_size", "64")
    _one_error_line(p, ckpt, "--hidden_size 32 (this run: 64)", "--output_dir")
    assert _tree(run_dir) == before  # nothing written, nothing left behind


def test_truncated_optimizer_state_names_the_file(data, pretrained, tmp_path):
    run_dir, ckpt = _damaged_run(pretrained, tmp_path)
    opt = ckpt / "accelerate" / "optimizer.bin"
    assert opt.is_file()
    opt.write_bytes(opt.read_bytes()[: opt.stat().st_size // 2])
    before = _tree(run_dir)
    p = _resume(data, run_dir)
    _one_error_line(p, opt, "truncated or damaged", "delete that checkpoint folder")
    assert _tree(run_dir) == before


def test_corrupt_trainer_state_names_the_file(data, pretrained, tmp_path):
    run_dir, ckpt = _damaged_run(pretrained, tmp_path)
    state = ckpt / "trainer_state.json"
    state.write_text('{"epoch": 1,\n')
    before = _tree(run_dir)
    p = _resume(data, run_dir)
    _one_error_line(p, state, "not valid JSON")
    assert _tree(run_dir) == before


def test_debug_shows_the_traceback(data, pretrained, tmp_path):
    run_dir, ckpt = _damaged_run(pretrained, tmp_path)
    (ckpt / "trainer_state.json").write_text("{")
    for p in (_resume(data, run_dir, "--debug"), _run([PRETRAIN, "--data_root", data, "--dataset", "tinypt",
                                                       "--output_dir", run_dir, *SMALL, "--resume_from", "latest"],
                                                      env=_env(MISSREC_DEBUG="1"))):
        assert p.returncode != 0 and "Traceback" in p.stderr and "CorruptFileError" in p.stderr


# ----------------------------------------------------------------------------- catalogues
def _other_items(data, tmp_path, name="other"):
    """The tiny dataset with the same item count but other item ids."""
    root = tmp_path / "o"
    shutil.copytree(data / "tiny", root / name)
    for p in list((root / name).iterdir()):
        p.rename(p.with_name(p.name.replace("tiny", name)))
    write_index_map(root / name / f"{name}.item2index", [f"J{i}" for i in range(30)])
    return root


def test_transductive_checkpoint_records_and_checks_its_catalogue(data, tmp_path, capsys):
    ds = load_dataset(data, "tiny")
    ckpt = _transductive(tmp_path / "ckpt", ds)
    rec = json.loads((ckpt / "config.json").read_text())["catalogue"]
    assert rec["name"] == "tiny" and rec["n_items"] == 30 and len(rec["items_sha256"]) == 64
    table = from_pretrained(ckpt).item_embedding.weight

    same = from_pretrained(ckpt, dataset=data / "tiny", use_id=True, n_items=30)
    assert torch.equal(same.item_embedding.weight, table)  # its own catalogue: reused
    assert "note:" not in capsys.readouterr().err

    other = _other_items(data, tmp_path) / "other"
    m = from_pretrained(ckpt, dataset=other, use_id=True, n_items=30)
    err = capsys.readouterr().err
    assert "same item count, different items" in err and "starts fresh" in err and str(ckpt) in err
    assert not torch.equal(m.item_embedding.weight, table)
    assert m.config.catalogue["name"] == "other"

    make_domain(tmp_path / "s", "small", n_items=20)
    m = from_pretrained(ckpt, dataset=tmp_path / "s" / "small", use_id=True, n_items=20)
    err = capsys.readouterr().err
    assert "this dataset has 20 items" in err and "starts fresh" in err
    assert m.item_embedding.weight.shape[0] == 21


@pytest.mark.parametrize("case", ["same_count_other_items", "other_count"])
def test_recommend_refuses_another_catalogue(data, tmp_path, case):
    ckpt = _transductive(tmp_path / "ckpt", load_dataset(data, "tiny"))
    if case == "other_count":
        root, name = tmp_path / "s", "small"
        make_domain(root, name, n_items=20)
        hist = "I1"
    else:
        root, name, hist = _other_items(data, tmp_path), "other", "J1"
    p = _run(["-m", "missrec.recommend", ckpt, "--data_root", root, "--dataset", name, "--history", hist])
    _one_error_line(p, ckpt, "item-ID table was trained on tiny (30 items", "finetune on this one")
    assert p.stdout == ""


# ----------------------------------------------------------------------------- recommend
@pytest.mark.parametrize("k", ["0", "-5", "x"])
def test_recommend_k_must_be_positive(data, tmp_path, k):
    ckpt = _transductive(tmp_path / "ckpt", load_dataset(data, "tiny"))
    p = _run(["-m", "missrec.recommend", ckpt, "--data_root", data, "--dataset", "tiny", "--history", "I1",
              "--k", k])
    _one_error_line(p, "--k", "positive integer", repr(k))
    assert p.stdout == ""


def test_exclude_history_never_returns_history_items(data, tmp_path):
    from missrec.recommend import Recommender
    ckpt = _transductive(tmp_path / "ckpt", load_dataset(data, "tiny"))
    rec = Recommender(str(ckpt), str(data), "tiny", device="cpu")
    hist = ["I1", "I2", "I1", "I5"]
    top = rec.recommend(hist, k=100, exclude_history=True)
    assert len(top) == 30 - 3
    assert not {r for r, _ in top} & set(hist)
    assert all(np.isfinite(s) for _, s in top)
    assert len(rec.recommend(hist, k=100)) == 30  # without exclusion: the whole catalogue
    with pytest.raises(UserError, match="--k: must be a positive integer"):
        rec.recommend(hist, k=0)


# ----------------------------------------------------------------------------- sample
def test_sample_root_that_is_a_file(tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    p = _run(["-m", "missrec.recipes.sample", "--root", f, "--no-baselines"])
    _one_error_line(p, "--root", f, "is a file, not a folder")
    assert sorted(x.name for x in tmp_path.iterdir()) == ["afile"] and f.read_text() == "x"


def test_data_format_error_is_a_user_error():
    # Library callers that catch ValueError keep working; cli.run prints these as one line.
    assert issubclass(DataFormatError, UserError) and issubclass(UserError, ValueError)


def test_resume_on_another_catalogue_is_refused(data, tmp_path):
    from missrec.checkpoint import check_resumable
    ds = load_dataset(data, "tiny")
    ckpt = _transductive(tmp_path / "ckpt", ds)
    other = load_dataset(_other_items(data, tmp_path), "other")
    model = from_pretrained(ckpt)
    check_resumable(ckpt, model)  # the same data: fine
    model.config.catalogue = other.catalogue()
    with pytest.raises(UserError, match=r"was trained on tiny \(30 items.*this run's data is other \(30 items"):
        check_resumable(ckpt, model)


# ----------------------------------------------------------------------------- --pretrained that cannot be had
RECOMMEND = ["-m", "missrec.recommend"]
CONVERT, DOWNLOAD = ROOT / "checkpoints" / "convert.py", ROOT / "checkpoints" / "download.py"
EXTRACT = ROOT / "features" / "extract.py"


def _isolated_env(tmp_path, **extra):
    """Download folder, HF cache and temp folder inside tmp_path, so 'nothing written' can be checked."""
    for d in ("dl", "hf", "tmp"):
        (tmp_path / d).mkdir(exist_ok=True)
    return _env(MISSREC_DOWNLOAD_DIR=str(tmp_path / "dl"), HF_HOME=str(tmp_path / "hf"), TMPDIR=str(tmp_path / "tmp"),
                **extra)


def _finetune_then_recommend(data, tmp_path, spec, env):
    """The same --pretrained value through finetune/run.py and missrec.recommend."""
    out = tmp_path / "o"
    ft = _run([FINETUNE, "--data_root", data, "--dataset", "tiny", "--output_dir", out, *SMALL, "--epochs", "1",
               "--pretrained", spec], env=env)
    rec = _run([*RECOMMEND, spec, "--data_root", data, "--dataset", "tiny", "--history", "I1"], env=env)
    assert not out.exists() and rec.stdout == ""
    return ft, rec


def test_pretrained_hub_id_offline_is_one_line(data, tmp_path):
    env = _isolated_env(tmp_path, HF_HUB_OFFLINE="1")
    for p in _finetune_then_recommend(data, tmp_path, "someone/missrec-x", env):
        _one_error_line(p, "'someone/missrec-x'", "HF_HUB_OFFLINE", "huggingface-cli download someone/missrec-x",
                        "--pretrained DIR")
    assert list((tmp_path / "dl").iterdir()) == []
    assert {x.name for x in (tmp_path / "tmp").iterdir()} <= {"missrec-locks"}  # only hub's lock files


def test_pretrained_manual_registry_name_says_where_to_put_the_file(data, tmp_path):
    env = _isolated_env(tmp_path)
    want = tmp_path / "dl" / "MISSRec-FHCKM_mm_full-100.pth"
    for p in _finetune_then_recommend(data, tmp_path, "missrec-fhckm-100", env):
        _one_error_line(p, "'missrec-fhckm-100' cannot be downloaded automatically", "https://drive.google.com/",
                        f"save the file as {want}", "--pretrained /path/to/MISSRec-FHCKM_mm_full-100.pth")
    assert list((tmp_path / "dl").iterdir()) == []

    # A browser's sign-in page saved under that name is refused, and left where the user put it.
    want.write_text("<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title>")
    for p in _finetune_then_recommend(data, tmp_path, "missrec-fhckm-100", env):
        _one_error_line(p, want, "is an HTML page", "delete it")
    assert [x.name for x in (tmp_path / "dl").iterdir()] == [want.name]  # no conversion cache next to it


def _evil_pth(path: Path, marker: Path) -> Path:
    from test_pth import _RunCommand, original_state_dict
    torch.save({"config": _RunCommand(os.system, f"touch {marker}"), "epoch": 1,
                "state_dict": original_state_dict("pretrain")}, path)
    return path


def test_pretrained_evil_pth_is_refused_in_one_line(data, tmp_path):
    marker = tmp_path / "pwned"
    src = tmp_path / "in"
    src.mkdir()
    evil = _evil_pth(src / "evil.pth", marker)
    env = _isolated_env(tmp_path)
    for p in _finetune_then_recommend(data, tmp_path, evil, env):
        line = _one_error_line(p, evil, "refused, nothing in it was run", "system")
        assert "UnsafePickleError" not in p.stderr, line
    assert not marker.exists()
    assert [x.name for x in src.iterdir()] == ["evil.pth"]  # no conversion cache folder
    p = _run([CONVERT, evil, tmp_path / "out"], env=env)
    _one_error_line(p, evil, "refused")
    assert not marker.exists() and not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- checkpoints/convert.py
def test_convert_given_a_folder_says_it_wants_a_pth(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    p = _run([CONVERT, folder, tmp_path / "out"])
    line = _one_error_line(p, folder, "is a folder; expected an original MISSRec .pth file")
    assert "not found" not in line
    assert not (tmp_path / "out").exists()


def test_convert_failures_are_one_line(tmp_path):
    from test_pth import original_state_dict, save_original
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    _one_error_line(_run([CONVERT, tmp_path / "missing.pth", tmp_path / "out"]), "missing.pth", "file not found")
    _one_error_line(_run([CONVERT, junk, tmp_path / "out"]), junk, "not a torch.save checkpoint")
    ft = tmp_path / "ft.pth"
    save_original(ft, original_state_dict("transductive_ft", n_rows=8), "transductive_ft")
    _one_error_line(_run([CONVERT, ft, tmp_path / "out"]), ft, "transductive checkpoint", "--dataset DIR")
    assert not (tmp_path / "out").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    pre = tmp_path / "pre.pth"
    save_original(pre, original_state_dict("pretrain"), "pretrain")
    _one_error_line(_run([CONVERT, pre, mine, "--overwrite"]), mine, "not a checkpoint folder")
    assert _tree(mine) == {"notes.txt": b"keep"}
    _one_error_line(_run([CONVERT, pre, tmp_path / "o2", "--allow-unknwon"]), "--allow-unknwon", "--allow_unknown?")
    assert not (tmp_path / "o2").exists()


# ----------------------------------------------------------------------------- checkpoints/download.py
HTML_PAGE = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Sign in to continue</body></html>\n"


@pytest.mark.parametrize("body, needle", [(b"", "is empty (0 bytes)"), (HTML_PAGE, "is an HTML page"),
                                          (b"Not Found\n", "does not start like a torch.save checkpoint")],
                         ids=["zero-bytes", "html", "text"])
def test_download_without_checksum_keeps_only_a_torch_file(tmp_path, body, needle):
    from test_download import CheckpointServer, TORCH_PAYLOAD
    server = CheckpointServer({"/ckpt.pth": body, "/real.pth": TORCH_PAYLOAD})
    try:
        out = tmp_path / "dl"
        p = _run([DOWNLOAD, server.url("/ckpt.pth"), "--out", out, "--no-progress"])
        _one_error_line(p, server.url("/ckpt.pth"), needle, "nothing was kept")
        assert list(out.iterdir()) == []  # no ckpt.pth, no temp file
        p = _run([DOWNLOAD, server.url("/real.pth"), "--out", out, "--no-progress"])
        assert p.returncode == 0 and (out / "real.pth").read_bytes() == TORCH_PAYLOAD
    finally:
        server.close()


@pytest.mark.parametrize("body", [b"", HTML_PAGE, b"hello\n"], ids=["zero-bytes", "html", "text"])
def test_download_manual_file_that_is_not_a_checkpoint(tmp_path, body):
    reg = tmp_path / "registry.json"
    reg.write_text(json.dumps({"format_version": 1, "checkpoints": {"orig": {
        "format": "missrec-pth", "sha256": None,
        "source": {"type": "manual", "page": "https://example.invalid/page", "filename": "orig.pth"}}}}))
    out = tmp_path / "dl"
    out.mkdir()
    (out / "orig.pth").write_bytes(body)
    p = _run([DOWNLOAD, "orig", "--out", out, "--registry", reg])
    _one_error_line(p, out / "orig.pth", "so it is not 'orig'", "https://example.invalid/page")
    assert p.stdout == "" and _tree(out) == {"orig.pth": body}  # the user's file stays; nothing added


# ----------------------------------------------------------------------------- features/extract.py
def test_extract_non_utf8_text_names_file_and_line(data, tmp_path):
    root = _copy_domain(data, tmp_path)
    text = root / "tiny" / "tiny.text"
    lines = text.read_bytes().split(b"\n")
    lines[4] = lines[4].replace(b"item", b"it\xe9m", 1)  # latin-1 bytes on line 5
    text.write_bytes(b"\n".join(lines))
    before = _tree(root)
    p = _run([EXTRACT, root / "tiny", "--modalities", "text", "--pretrained", "none", "--device", "cpu"])
    _one_error_line(p, f"{text}:5", "not UTF-8", "0xe9", "re-save the file as UTF-8")
    assert _tree(root) == before


# ----------------------------------------------------------------------------- every entry point: one parser
def _mains():
    from missrec import convert, hub, recommend
    from missrec.features import amazon, extract, images
    from missrec.recipes import finetune, pretrain, sample, table
    return {"extract": extract.main, "amazon": amazon.main, "images": images.main, "convert": convert.main,
            "download": hub.main, "table": table.main, "finetune": finetune.main, "pretrain": pretrain.main,
            "recommend": recommend.main, "sample": sample.main}


@pytest.mark.parametrize("tool, argv, needles", [
    ("extract", ["d", "--work", "2"], ["--work: unknown option", "--workers?"]),
    ("amazon", ["--category", "X", "--kc", "5"], ["--kc: unknown option", "--kcore?"]),
    ("amazon", ["--category", "X", "--kcore", "2"], ["--kcore: must be at least 3", "got 2"]),
    ("images", ["d", "--retr", "1"], ["--retr: unknown option", "--retries?"]),
    ("images", [], ["give a dataset folder or --urls FILE"]),
    ("convert", ["a.pth", "out", "--overwr"], ["--overwr: unknown option", "--overwrite?"]),
    ("download", ["x", "--sha", "0"], ["--sha: unknown option", "--sha256?"]),
    ("table", ["--pretrained", "none", "--sett", "id-pt"], ["--sett: unknown option"]),
    ("table", ["--settings", "id-pt"], ["--pretrained", "need --pretrained CHECKPOINT"]),  # --pretrained is optional now
    ("finetune", ["--epoch", "1"], ["--epoch: unknown option", "--epochs?"]),
    ("recommend", ["ck", "--data_root", "r", "--dataset", "d", "--history", "a", "--exclude"],
     ["--exclude: unknown option", "--exclude_history?"]),
])
def test_every_entry_point_refuses_abbreviations_in_one_line(tool, argv, needles, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written, not even into the working folder
    try:  # argparse errors exit; tools whose main returns a status return 2 for the rest
        code = _mains()[tool](argv)
    except SystemExit as e:
        code = e.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    for n in needles:
        assert n in err, (n, err)
    assert list(tmp_path.iterdir()) == []


def test_training_diverged_and_finetune_errors_are_user_errors(data, tmp_path):
    from missrec.trainer import TrainingDivergedError
    assert issubclass(TrainingDivergedError, UserError)
    # finetune's own checks exit 2 with one line like the rest (was SystemExit("error: ...") -> 1)
    cfg = MISSRecConfig(hidden_size=32, n_heads=2, inner_size=32, text_dim=8, image_dim=8)
    ckpt = save_model(tmp_path / "ckpt8", MISSRec(cfg))
    out = tmp_path / "o"
    p = _run([FINETUNE, "--data_root", data, "--dataset", "tiny", "--output_dir", out, *SMALL, "--epochs", "1",
              "--pretrained", ckpt, "--mode", "inductive"])
    _one_error_line(p, ckpt, "dims 8/8", "16/16", "same CLIP model")
    assert not out.exists()


# ----------------------------------------------------------------------------- .pth mapped onto a dataset
def test_converted_transductive_pth_records_its_catalogue(tmp_path):
    from test_pth import make_dataset, original_state_dict, recbole_tables, save_original, RECBOLE_TOKENS
    from missrec.data.atomic import catalogue, read_index_map
    from missrec.pth import convert_pth
    folder = make_dataset(tmp_path)
    text, image = recbole_tables(folder)
    src = tmp_path / "ft.pth"
    save_original(src, original_state_dict("transductive_ft", n_rows=len(RECBOLE_TOKENS), text_table=text,
                                           image_table=image), "transductive_ft")
    out, _ = convert_pth(src, tmp_path / "out", dataset=folder)
    rec = json.loads((out / "config.json").read_text())["catalogue"]
    assert rec == catalogue(folder.name, read_index_map(folder / f"{folder.name}.item2index"))
    assert rec["name"] == "Toy_mm_full" and rec["n_items"] == 7
    assert from_pretrained(out).config.catalogue == rec
    # The recorded catalogue is what later loads compare: its own dataset keeps the ID table ...
    same = from_pretrained(out, dataset=folder, use_id=True, n_items=7)
    assert torch.equal(same.item_embedding.weight, from_pretrained(out).item_embedding.weight)
    # ... another item list with the same count does not (it would have been reused silently before).
    other = tmp_path / "x" / "Toy_mm_full"
    shutil.copytree(folder, other)
    write_index_map(other / "Toy_mm_full.item2index", [f"other{i}" for i in range(7)])
    m = from_pretrained(out, dataset=other, use_id=True, n_items=7)
    assert not torch.equal(m.item_embedding.weight, same.item_embedding.weight)
