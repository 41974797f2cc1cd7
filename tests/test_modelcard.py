"""Model cards written with checkpoints, and missrec-push against a stubbed HfApi (no network)."""
from __future__ import annotations

import json

import pytest

from missrec import push as push_mod
from missrec.data.atomic import write_meta
from missrec.modelcard import card_metadata, read_card_metadata
from tests._tiny import make_domain

ENCODER = {"model": "ViT-B-32", "pretrained": "openai",
           "files": {"feat1CLS": {"source": "all-MiniLM-L6-v2", "pooling": "mean"}, "feat3CLS": {"model": "ViT-B-32"}}}


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    from missrec.recipes.finetune import finetune

    root = tmp_path_factory.mktemp("card")
    folder = make_domain(root, "tiny")
    write_meta(folder, "tiny", n_items=30, encoder=ENCODER)
    out = root / "out"
    res = finetune(["--data_root", str(root), "--dataset", "tiny", "--epochs", "2", "--hidden_size", "32",
                    "--n_heads", "2", "--inner_size", "32", "--train_batch_size", "32", "--output_dir", str(out),
                    "--progress", "false", "--plot", "false"])
    return out, res


def test_best_checkpoint_has_a_card_with_the_test_metrics(finetuned):
    out, res = finetuned
    meta = read_card_metadata(out / "best" / "README.md")
    assert meta["library_name"] == "missrec"
    assert "missrec" in meta["tags"] and "sequential-recommendation" in meta["tags"]
    assert meta["datasets"] == ["tiny"]
    assert meta["feature_encoder"] == "ViT-B-32 + all-MiniLM-L6-v2"
    metrics = {m["type"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]
               if "(test" in m["name"]}
    assert metrics == {k: round(v, 4) for k, v in res["test"].items()}
    text = (out / "best" / "README.md").read_text()
    assert "| test | " + " | ".join(f"{v:.4f}" for v in res["test"].values()) + " |" in text
    assert '"hidden_size": 32' in text


def test_training_checkpoints_get_a_card_without_metrics(finetuned):
    out, _ = finetuned
    ckpt = sorted(out.glob("checkpoint-*"))[-1]
    meta = read_card_metadata(ckpt / "README.md")
    assert meta["library_name"] == "missrec" and "model-index" not in meta and "datasets" not in meta


def test_sasrec_card_tags():
    meta = card_metadata({"model_type": "sasrec"}, {"dataset": "ml", "test": {"recall@10": 0.5}})
    assert "sasrec" in meta["tags"] and "multimodal" not in meta["tags"] and meta["metrics"] == ["recall"]


class FakeApi:
    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", repo_id, kw))

    def upload_folder(self, *, folder_path, repo_id, **kw):
        from pathlib import Path
        files = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
        self.calls.append(("upload_folder", repo_id, kw, files))
        return type("Info", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc"})()


@pytest.mark.parametrize("which", ["out", "best"])
def test_push_uploads_model_files_card_and_results_only(finetuned, monkeypatch, capsys, which):
    out, res = finetuned
    api = FakeApi()
    monkeypatch.setattr(push_mod, "HfApi", lambda: api)
    target = out if which == "out" else out / "best"
    assert push_mod.main([str(target), "me/tiny-missrec", "--private"]) == 0
    assert "https://huggingface.co/me/tiny-missrec/commit/abc" in capsys.readouterr().out
    (c1, repo, kw), (c2, repo2, kw2, files) = api.calls
    assert (c1, repo, kw["private"], kw["exist_ok"], kw["repo_type"]) == ("create_repo", "me/tiny-missrec", True, True, "model")
    assert c2 == "upload_folder" and repo2 == "me/tiny-missrec" and kw2["repo_type"] == "model"
    assert sorted(files) == ["README.md", "config.json", "interest.safetensors", "model.safetensors", "results.json"]
    assert files["model.safetensors"] == (out / "best" / "model.safetensors").read_bytes()
    assert json.loads(files["results.json"])["dataset"] == "tiny"
    assert b"model-index" in files["README.md"]


def test_push_errors_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(push_mod, "HfApi", lambda: pytest.fail("no upload expected"))
    assert push_mod.main([str(tmp_path), "me/x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "not a checkpoint folder" in err and "\n" not in err


def test_push_network_failure_is_one_line(finetuned, monkeypatch, capsys):
    out, _ = finetuned

    class Offline(FakeApi):
        def create_repo(self, repo_id, **kw):
            raise ConnectionError("Failed to resolve 'huggingface.co'")

    monkeypatch.setattr(push_mod, "HfApi", Offline)
    assert push_mod.main([str(out), "me/x"]) == 1
    err = capsys.readouterr().err.strip()
    assert "upload to me/x failed (ConnectionError" in err and "HF_TOKEN" in err and "\n" not in err
