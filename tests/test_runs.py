"""Output folders and resume state (issue 19 items 1-2, issue 16 items 1c-1d).

A run never mixes with another one in its --output_dir, resumes only from complete state with the
same settings, and a failed checkpoint write leaves the previous checkpoint and best/ as they
were. Each refusal: exit status 2, one `error:` line naming the file or option, nothing written or
changed. The recipes' main() runs in this process (through missrec.cli.run, as the entry points
call it): much faster than a subprocess per case.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest

from _tiny import make_domain
from missrec.cli import run
from missrec.recipes import finetune, pretrain

SMALL = ["--hidden_size", "32", "--n_heads", "2", "--inner_size", "32", "--progress", "false",
         "--train_batch_size", "64"]
# tiny: 95 training rows in batches of 64 -> 2 steps per epoch; tinypt: 4 steps per epoch.


def _finetune(data, out, *extra):
    return run(finetune.finetune, ["--data_root", str(data), "--dataset", "tiny", "--output_dir", str(out),
                               *SMALL, "--plot", "false", *extra], exit=False)


def _pretrain(data, out, *extra):
    return run(pretrain.pretrain, ["--data_root", str(data), "--dataset", "tinypt", "--output_dir", str(out),
                               *SMALL, *extra], exit=False)


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory):
    """A finished 1-epoch finetuning run (best/, checkpoint-1, results, train_log.jsonl) to copy."""
    out = tmp_path_factory.mktemp("ft") / "run"
    res = _finetune(data, out, "--epochs", "1", "--log_every", "1")
    assert isinstance(res, dict)
    return out


@pytest.fixture
def used(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _error(rc, capsys, *needles) -> str:
    """Exit status 2 and exactly one `error:` line holding every needle."""
    err = capsys.readouterr().err
    assert rc == 2, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    for n in needles:
        assert str(n) in lines[0], (n, lines[0])
    return lines[0]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".tmp", ".old")))


# ----------------------------------------------------------------------------- output folders
def test_a_second_run_into_a_used_folder_is_refused(data, used, capsys):
    before = _tree(used)
    rc = _finetune(data, used, "--epochs", "1")
    _error(rc, capsys, f"--output_dir {used}: already holds a run", "--resume_from latest", "--overwrite_output_dir")
    assert _tree(used) == before


def test_overwrite_output_dir_moves_the_old_run_aside(data, used, capsys):
    before = _tree(used)
    res = _finetune(data, used, "--max_steps", "1", "--overwrite_output_dir")
    assert isinstance(res, dict)
    moved = [p for p in used.parent.iterdir() if p.name.startswith("run.old-")]
    assert len(moved) == 1
    assert _tree(moved[0]) == before  # the first run, whole
    assert f"moved the previous contents of {used}" in capsys.readouterr().out
    assert (used / "best").is_dir() and not (used / "checkpoint-1").exists()
    assert json.loads((used / "results.json").read_text())["epochs_run"] == 0


def test_overwrite_output_dir_with_resume_is_refused(data, used, capsys):
    before = _tree(used)
    rc = _finetune(data, used, "--overwrite_output_dir", "--resume_from", "latest")
    _error(rc, capsys, "--overwrite_output_dir: ", "--resume_from")
    assert _tree(used) == before


def test_output_dir_that_is_a_file_is_refused_before_training(data, tmp_path, capsys):
    out = tmp_path / "out"
    out.write_text("my notes")
    with pytest.raises(SystemExit) as e:  # refused while the options are parsed
        _finetune(data, out, "--epochs", "1")
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --output_dir: is an existing file (or inside one)"), err
    assert out.read_text() == "my notes" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert "epoch 0" not in capsys.readouterr().out


@pytest.mark.parametrize("resume", [False, True])
def test_a_run_into_a_locked_folder_fails_at_once(data, used, capsys, resume):
    from filelock import FileLock
    from missrec.rundir import LOCK_NAME
    lock = FileLock(str(used / LOCK_NAME))
    with lock:  # another run holds the folder
        before = _tree(used)
        extra = ["--resume_from", "latest", "--epochs", "2"] if resume else ["--overwrite_output_dir"]
        rc = _finetune(data, used, *extra)
        _error(rc, capsys, f"--output_dir {used}: another run is using this folder now")
        assert _tree(used) == before and [p.name for p in used.parent.iterdir()] == ["run"]


def test_the_lock_is_released_when_a_run_ends(data, used, capsys):
    from filelock import FileLock
    from missrec.rundir import LOCK_NAME
    assert _finetune(data, used, "--epochs", "2", "--resume_from", "latest") != 2
    FileLock(str(used / LOCK_NAME), timeout=0).acquire()  # free again


def test_resume_latest_without_checkpoint_refuses_foreign_files(data, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text("{}")
    rc = _finetune(data, out, "--resume_from", "latest", "--epochs", "1")
    _error(rc, capsys, f"--output_dir {out}: --resume_from latest: holds no training checkpoint", "results.json")
    assert _tree(out) == {"results.json": b"{}"}


# ----------------------------------------------------------------------------- run settings
@pytest.mark.parametrize("option, needle", [
    (["--metric", "recall@50"], "--metric ndcg@10 (this run: recall@50)"),
    (["--ks", "10,50"], "--ks 10,20,50 (this run: 10,50)"),
    (["--mode", "inductive"], "--mode transductive (this run: inductive)"),
    (["--learning_rate", "0.01"], "--learning_rate 0.001 (this run: 0.01)"),
    (["--dropout", "0.1"], "--dropout 0.5 (this run: 0.1)"),
])
def test_resume_with_other_settings_names_them(data, used, capsys, option, needle):
    before = _tree(used)
    rc = _finetune(data, used, "--epochs", "2", "--resume_from", "latest", *option)
    _error(rc, capsys, f"{used / 'checkpoint-1'}: was trained with {needle}", "--output_dir")
    assert _tree(used) == before


def test_resume_with_another_dataset_is_refused(data, tmp_path, used, capsys):
    make_domain(data, name="tiny2", seed=1)
    before = _tree(used)
    rc = run(finetune.finetune, ["--data_root", str(data), "--dataset", "tiny2", "--output_dir", str(used), *SMALL,
                             "--plot", "false", "--epochs", "2", "--resume_from", "latest"], exit=False)
    _error(rc, capsys, "--dataset tiny (this run: tiny2)")
    assert _tree(used) == before


# ----------------------------------------------------------------------------- trainer_state.json
def _edit_state(folder: Path, fn) -> Path:
    path = folder / "checkpoint-1" / "trainer_state.json"
    d = json.loads(path.read_text())
    path.write_text(json.dumps(fn(d)))
    return path


@pytest.mark.parametrize("edit, needle", [
    (lambda d: {k: v for k, v in d.items() if k != "global_step"}, "global_step: must be an integer >= 0, missing"),
    (lambda d: {**d, "global_step": "2"}, 'global_step: must be an integer >= 0, got "2"'),
    (lambda d: {**d, "surprise": 1}, "unknown key 'surprise'"),
    (lambda d: {**d, "step_in_epoch": 999}, "step_in_epoch: 999 is beyond the epoch's 2 steps"),
    (lambda d: {**d, "epoch": 5}, "global_step: 2 does not match epoch 5"),
    (lambda d: {**d, "epoch_started": "yes"}, "epoch_started: must be true or false"),
    (lambda d: {**d, "best_epoch": -7}, "best_epoch: must be an integer >= -1"),
    (lambda d: {**d, "history": 5}, "history: must be a list of objects"),
    (lambda d: {k: v for k, v in d.items() if k != "done"}, "done: missing"),
    (lambda d: [d], "expected a JSON object"),
])
def test_bad_trainer_state_is_one_line_naming_file_and_key(data, used, capsys, edit, needle):
    path = _edit_state(used, edit)
    before = _tree(used)
    rc = _finetune(data, used, "--epochs", "2", "--resume_from", "latest")
    _error(rc, capsys, f"{path}: {needle}")
    assert _tree(used) == before  # best/ included: a damaged checkpoint never costs it


# ----------------------------------------------------------------------------- resume files
@pytest.mark.parametrize("name, damage, needle", [
    ("accelerate/random_states_0.pkl", "delete", "missing: without it the resumed run would not be the same"),
    ("accelerate/random_states_0.pkl", b"garbage", "truncated or damaged"),
    ("accelerate/random_states_0.pkl", "half", "truncated or damaged"),
    ("interest.safetensors", "delete", "missing: without it the resumed run would not be the same"),
    ("accelerate/scheduler.bin", "delete", "missing: cannot resume from this checkpoint"),
    ("accelerate/optimizer.bin", "half", "truncated or damaged"),
    ("accelerate/model.safetensors", "half", "not a readable safetensors file"),
])
def test_incomplete_resume_state_is_refused_before_any_work(data, used, capsys, name, damage, needle):
    path = used / "checkpoint-1" / name
    if damage == "delete":
        path.unlink()
    elif damage == "half":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(damage)
    before = _tree(used)
    rc = _finetune(data, used, "--epochs", "2", "--resume_from", "latest")
    line = _error(rc, capsys, f"{path}: {needle}", "delete that checkpoint folder")
    assert ("--resume_inexact" in line) == (name.endswith((".pkl", "interest.safetensors")))
    assert _tree(used) == before
    assert "epoch 1" not in capsys.readouterr().out


def test_rng_state_accelerate_cannot_load_is_refused(data, used, capsys):
    # A well-formed torch.save file that is not an RNG state: accelerate skips it with a log line only.
    acc = used / "checkpoint-1" / "accelerate"
    shutil.copy(acc / "scheduler.bin", acc / "random_states_0.pkl")
    before = _tree(used)
    rc = _finetune(data, used, "--epochs", "2", "--resume_from", "latest")
    _error(rc, capsys, f"{acc / 'random_states_0.pkl'}: accelerate could not restore the random states",
           "--resume_inexact")
    assert _tree(used) == before


def test_resume_inexact_says_what_is_lost_and_continues(data, used, capsys):
    (used / "checkpoint-1" / "accelerate" / "random_states_0.pkl").unlink()
    (used / "checkpoint-1" / "interest.safetensors").unlink()
    res = _finetune(data, used, "--epochs", "2", "--resume_from", "latest", "--resume_inexact")
    assert isinstance(res, dict) and res["epochs_run"] == 2
    out = capsys.readouterr().out
    assert "note: --resume_inexact:" in out and "random_states_0.pkl: missing; the random streams" in out
    assert "interest.safetensors: missing; the interest clusters" in out
    assert (used / "checkpoint-2" / "accelerate" / "random_states_0.pkl").is_file()


# ----------------------------------------------------------------------------- disk full
def _fail_writes(monkeypatch, marker: str, exc):
    """safetensors' writer, failing half-way through any file under a folder named ``marker``."""
    import missrec.fsutil as ckpt  # every checkpoint file goes through fsutil.save_safetensors
    real = ckpt.save_file

    def save_file(tensors, filename, metadata=None):
        if marker in str(filename):
            Path(filename).write_bytes(b"\0" * 64)  # what a full disk leaves: a cut file
            raise exc(filename)
        return real(tensors, filename, metadata=metadata)
    monkeypatch.setattr(ckpt, "save_file", save_file)


def _enospc(filename):
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(filename))


def _safetensor_error(filename):
    from safetensors import SafetensorError
    return SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                           'message: "No space left on device" })')


@pytest.mark.parametrize("exc, needle", [(_enospc, "No space left on device"), (_safetensor_error, "StorageFull")])
def test_disk_full_writing_a_checkpoint_keeps_the_previous_one(data, used, capsys, monkeypatch, exc, needle):
    ckpt1 = _tree(used / "checkpoint-1")
    _fail_writes(monkeypatch, ".checkpoint-2.tmp", exc)
    rc = _finetune(data, used, "--epochs", "2", "--resume_from", "latest")
    _error(rc, capsys, f"{used / 'checkpoint-2'}: could not be written", needle, "--resume_from latest")
    assert _leftovers(used) == [] and not (used / "checkpoint-2").exists()
    assert _tree(used / "checkpoint-1") == ckpt1
    assert sorted(p.name for p in (used / "best").iterdir()) == [
        "README.md", "config.json", "interest.safetensors", "model.safetensors"]
    monkeypatch.undo()
    res = _finetune(data, used, "--epochs", "2", "--resume_from", "latest")  # space freed: it continues
    assert isinstance(res, dict) and res["epochs_run"] == 2


@pytest.mark.parametrize("exc, needle", [(_enospc, "No space left on device"), (_safetensor_error, "StorageFull")])
def test_disk_full_writing_best_keeps_the_previous_best(data, used, capsys, monkeypatch, exc, needle):
    _edit_state(used, lambda d: {**d, "best_metric": -1.0})  # epoch 1 is certain to be the new best
    before = _tree(used)
    _fail_writes(monkeypatch, ".best.tmp", exc)
    rc = _finetune(data, used, "--epochs", "2", "--resume_from", "latest")
    _error(rc, capsys, f"{used / 'best'}: could not be written", needle)
    assert _leftovers(used) == []
    after = _tree(used)
    assert {k: v for k, v in after.items() if k != "train_log.jsonl"} == \
           {k: v for k, v in before.items() if k != "train_log.jsonl"}


# ----------------------------------------------------------------------------- logging, --max_steps
def test_log_lines_on_stdout_and_in_train_log_jsonl(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert isinstance(_finetune(data, out, "--epochs", "1", "--log_every", "1"), dict)
    stdout = capsys.readouterr().out
    lines = [ln for ln in stdout.splitlines() if ln.startswith("step ")]
    assert len(lines) == 2 and lines[0].startswith("step 1/2 (epoch 1): loss ")
    assert "(loss_ce " in lines[0] and ", lr 0.001, " in lines[0] and lines[0].endswith(" sequences/s")
    rows = [json.loads(ln) for ln in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in rows] == ["step", "step", "epoch"]
    assert [r["step"] for r in rows] == [1, 2, 2]
    assert {"epoch", "loss", "loss_ce", "lr", "sequences_per_s"} <= set(rows[0])
    assert rows[0]["sequences_per_s"] > 0 and rows[2]["valid_ndcg@10"] >= 0


def test_progress_bar_on_keeps_stdout_quiet_but_still_logs_jsonl(data, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--data_root", str(data), "--dataset", "tiny", "--output_dir", str(out), *SMALL, "--plot", "false",
            "--progress", "true",
            "--epochs", "1", "--log_every", "1"]
    assert isinstance(run(finetune.finetune, argv, exit=False), dict)
    assert not [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("step ")]
    assert len((out / "train_log.jsonl").read_text().splitlines()) == 3


def test_resumed_log_drops_the_lines_after_the_checkpoint(tmp_path):
    from missrec.rundir import TrainLog
    log = TrainLog(tmp_path, None)
    for step in (1, 2, 3, 4):
        log.write({"kind": "step", "step": step})
    log.close()
    with open(tmp_path / "train_log.jsonl", "a") as f:
        f.write('{"kind": "st')  # cut by a kill
    log = TrainLog(tmp_path, 2)
    log.write({"kind": "step", "step": 3})
    log.close()
    assert [json.loads(ln)["step"] for ln in (tmp_path / "train_log.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_max_steps_inside_the_first_epoch_still_writes_best(data, tmp_path, capsys):
    out = tmp_path / "run"
    res = _finetune(data, out, "--max_steps", "1")
    assert isinstance(res, dict), capsys.readouterr().err
    assert (out / "best" / "model.safetensors").is_file() and (out / "checkpoint-step1").is_dir()
    assert res["best_epoch"] == 1 and res["history"][0]["partial_steps"] == 1
    assert "epoch 1 (its first 1 of 2 steps: --max_steps)" in capsys.readouterr().out
    # The short run continues: the partial validation did not count against patience.
    res = _finetune(data, out, "--max_steps", "4", "--resume_from", "latest", "--patience", "1")
    assert isinstance(res, dict) and res["epochs_run"] == 2


@pytest.mark.parametrize("steps, folder", [(2, "checkpoint-step2"), (4, "checkpoint-1")])
def test_pretraining_with_max_steps_writes_its_final_checkpoint(data, tmp_path, steps, folder):
    out = tmp_path / "pt"
    state = _pretrain(data, out, "--max_steps", str(steps))
    assert state.global_step == steps
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint")) == [folder]
    assert json.loads((out / folder / "trainer_state.json").read_text())["global_step"] == steps


def test_pretraining_resume_with_other_lambda_is_refused(data, tmp_path, capsys):
    out = tmp_path / "pt"
    _pretrain(data, out, "--max_steps", "2")
    before = _tree(out)
    rc = _pretrain(data, out, "--max_steps", "4", "--resume_from", "latest", "--lambda_seq", "0.5")
    _error(rc, capsys, "checkpoint-step2: was trained with --lambda_seq 0.001 (this run: 0.5)")
    assert _tree(out) == before


def test_graph_baseline_refuses_a_used_folder_and_overwrite_moves_it(tmp_path, capsys):
    from missrec.recipes import baselines
    make_domain(tmp_path / "d", n_users=25)
    argv = ["--data_root", str(tmp_path / "d"), "--dataset", "tiny", "--model", "lightgcn", "--epochs", "1",
            "--output_dir", str(tmp_path / "out"), "--progress", "false", "--plot", "false", "--ks", "10,20"]
    assert isinstance(run(baselines.run_baseline, argv, exit=False), dict)
    before = _tree(tmp_path / "out")
    _error(run(baselines.run_baseline, argv, exit=False), capsys, f"--output_dir {tmp_path / 'out'}: already holds a run")
    assert _tree(tmp_path / "out") == before
    assert isinstance(run(baselines.run_baseline, argv + ["--overwrite_output_dir"], exit=False), dict)
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("out.old-")]
    assert len(moved) == 1 and _tree(moved[0]) == before


@pytest.mark.parametrize("model", ["sasrec", "gru4rec"])
def test_an_id_only_model_resumes_without_interest_state(data, tmp_path, model):
    """ID-only models keep no interest clusters: their checkpoints resume exactly like MISSRec's."""
    out = tmp_path / "run"
    argv = ["--data_root", str(data), "--dataset", "tiny", "--output_dir", str(out), "--model", model,
            "--hidden_size", "32", "--progress", "false", "--train_batch_size", "64", "--plot", "false"]
    first = run(finetune.finetune, argv + ["--epochs", "1"], exit=False)
    assert isinstance(first, dict) and not (out / "checkpoint-1" / "interest.safetensors").exists()
    again = run(finetune.finetune, argv + ["--epochs", "2", "--resume_from", "latest"], exit=False)
    assert isinstance(again, dict) and again["epochs_run"] == 2
    assert [h["epoch"] for h in again["history"]] == [1, 2]
