"""Checkpoint files read before a model exists: config.json (MISSRec and SASRec), interest.safetensors
and original .pth files end in one `error: <file>: ...` line, exit 2, and nothing written (issue 19).

Entry points run in-process through their `cli`/`main` (the same `missrec.cli.run` error path the
console scripts use), so each case costs milliseconds, not a Python start-up.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from _tiny import make_domain
from missrec import recommend
from missrec.checkpoint import save_model
from missrec.config import MISSRecConfig
from missrec.convert import main as convert_main
from missrec.data.atomic import load_dataset
from missrec.items import ItemTable
from missrec.model import MISSRec
from missrec.sasrec import SASRec, SASRecConfig


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_domain(root)
    return root


@pytest.fixture(scope="module")
def checkpoints(data, tmp_path_factory):
    """A MISSRec checkpoint with its interest state, and a SASRec one, for the tiny domain."""
    base = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    model = MISSRec(MISSRecConfig(hidden_size=32, n_heads=2, inner_size=32, text_dim=16, image_dim=16)).eval()
    items = ItemTable.from_dataset(load_dataset(data, "tiny", splits=()), 32)
    items.discover_interests(model, 0.5)
    save_model(base / "missrec", model, items)
    save_model(base / "sasrec", SASRec(SASRecConfig(n_items=30, hidden_size=16, n_heads=2, inner_size=16)))
    return base


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _recommend_fails(folder: Path, data: Path, capsys, *needles) -> str:
    """missrec.recommend on `folder`: exit 2, one `error:` line naming every needle, nothing printed
    on stdout, the folder unchanged."""
    before = _tree(folder)
    assert recommend.main([str(folder), "--data_root", str(data), "--dataset", "tiny", "--history", "I1", "I2",
                           "--device", "cpu"]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert str(n) in lines[0], (n, lines[0])
    assert _tree(folder) == before
    return lines[0]


def _with_config(src: Path, dst: Path, **changes) -> Path:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update(changes)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


# ----------------------------------------------------------------------------- config.json
BAD_CONFIGS = [
    ({"n_heads": 0}, ["'n_heads' = 0", "between 1 and"]),
    ({"hidden_size": -32}, ["'hidden_size' = -32", "between 1 and"]),
    ({"hidden_size": 32.0}, ["'hidden_size' = 32.0", "whole number"]),
    ({"dropout": 1.5}, ["'dropout' = 1.5", "[0.0, 1.0)"]),
    ({"dropout": "0.1"}, ["'dropout' = '0.1'", "finite number"]),
    ({"num_encoder_layers": 1000000}, ["'num_encoder_layers' = 1000000", "between 1 and 256"]),
    ({"max_seq_length": True}, ["'max_seq_length' = True", "whole number"]),
    ({"hidden_act": "swish"}, ["'hidden_act' = 'swish'", "'gelu', 'relu'"]),
    ({"source": [1]}, ["'source' = [1]", "JSON object"]),
    # 2**40 items x 32: 140 TB of parameters, refused from the sizes alone, before any allocation.
    ({"use_id": True, "n_items": 1 << 40}, ["parameters", "available memory"]),
    ({"hidden_size": 65536, "n_heads": 2, "num_encoder_layers": 200}, ["parameters", "available memory"]),
]


@pytest.mark.parametrize("changes, needles", BAD_CONFIGS, ids=[json.dumps(c) for c, _ in BAD_CONFIGS])
def test_bad_missrec_config_is_one_line_naming_file_and_key(checkpoints, data, tmp_path, capsys, changes, needles):
    folder = _with_config(checkpoints / "missrec", tmp_path / "ckpt", **changes)
    _recommend_fails(folder, data, capsys, folder / "config.json", *needles)  # (a million layers: hours before)


@pytest.mark.parametrize("changes, needles", [
    ({"n_heads": 0}, ["'n_heads' = 0"]),
    ({"hidden_size": 16.0}, ["'hidden_size' = 16.0", "whole number"]),
    ({"dropout": 1.5}, ["'dropout' = 1.5"]),
    ({"num_layers": 1000000}, ["'num_layers' = 1000000", "between 1 and 256"]),
    ({"n_items": 1 << 40}, ["SASRec model", "available memory"]),
])
def test_bad_sasrec_config_is_one_line_naming_file_and_key(checkpoints, data, tmp_path, capsys, changes, needles):
    folder = _with_config(checkpoints / "sasrec", tmp_path / "ckpt", **changes)
    _recommend_fails(folder, data, capsys, folder / "config.json", *needles)


def test_config_checks_run_before_anything_is_built(monkeypatch):
    # The memory estimate is the model's exact parameter count (so the refusal is not a guess) ...
    for cfg in (MISSRecConfig(), MISSRecConfig(use_id=True, n_items=50, num_encoder_layers=2, num_decoder_layers=3)):
        assert cfg.n_parameters() == sum(p.numel() for p in MISSRec(cfg).parameters())
    cfg = SASRecConfig(n_items=40, num_layers=3)
    assert cfg.n_parameters() == sum(p.numel() for p in SASRec(cfg).parameters())
    # ... compared with what the machine has left (here: pretend 1 GiB).
    import missrec.config
    monkeypatch.setattr(missrec.config, "available_memory", lambda: 1 << 30)
    MISSRecConfig(use_id=True, n_items=8_000_000, hidden_size=32, n_heads=2)  # 1 GiB of ID table: fits
    with pytest.raises(ValueError, match=r"320,080,993 parameters, 1\.2 GiB .* available memory \(1\.0 GiB\)"):
        MISSRecConfig(use_id=True, n_items=10_000_000, hidden_size=32, n_heads=2)


# ----------------------------------------------------------------------------- interest.safetensors
def _with_interest(src: Path, dst: Path, edit) -> Path:
    shutil.copytree(src, dst)
    path = dst / "interest.safetensors"
    state = load_file(str(path))
    edit(state)
    save_file(state, str(path))
    return dst


def _negative(s):
    s["text_interest"][3] = -2


def _too_large(s):
    s["image_interest"][5] = s["interest_embeddings"].shape[0] + 7


def _narrow(s):
    s["interest_embeddings"] = s["interest_embeddings"][:, :20].contiguous()


def _float_ids(s):
    s["text_interest"] = s["text_interest"].float()


@pytest.mark.parametrize("edit, needles", [
    (_negative, ["'text_interest' holds ids from -2", "outside 0.."]),
    (_too_large, ["'image_interest' holds ids", "outside 0.."]),
    (_narrow, ["are 20 wide, the model's hidden size is 32"]),
    (_float_ids, ["'text_interest' must be a 1-D integer tensor"]),
], ids=["negative", "out-of-range", "centroid-width", "float-ids"])
def test_bad_interest_state_is_one_line_naming_the_file(checkpoints, data, tmp_path, capsys, edit, needles):
    folder = _with_interest(checkpoints / "missrec", tmp_path / "ckpt", edit)
    line = _recommend_fails(folder, data, capsys, folder / "interest.safetensors", *needles)
    assert "run interest discovery" not in line


def test_good_checkpoints_still_recommend(checkpoints, data, capsys):
    for name in ("missrec", "sasrec"):
        assert recommend.main([str(checkpoints / name), "--data_root", str(data), "--dataset", "tiny", "--history",
                               "I1", "--k", "3", "--device", "cpu"]) == 0
        assert len(capsys.readouterr().out.strip().splitlines()) == 3


# ----------------------------------------------------------------------------- original .pth files
def _convert_fails(src: Path, out: Path, capsys, *needles) -> str:
    assert convert_main([str(src), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {src}: "), err
    for n in needles:
        assert n in err, (n, err)
    assert not out.exists()
    return err


def test_pth_with_a_repeating_view_is_refused(tmp_path, capsys):
    from test_pth import original_state_dict
    sd = original_state_dict("pretrain")
    sd["position_embedding.weight"] = torch.zeros(1).expand(100_000, 8)  # 3 MB once copied, 4 bytes stored
    src = tmp_path / "expand.pth"
    torch.save({"state_dict": sd}, src)
    _convert_fails(src, tmp_path / "out", capsys, "repeats elements of its storage", "stride (0, 0)")


def test_pth_entries_sharing_one_tensor_are_refused(tmp_path, capsys):
    from test_pth import original_state_dict
    sd = original_state_dict("pretrain")
    big = torch.zeros(2048, 8)
    for i in range(400):  # 400 layers, all the same 64 KB tensor: 26 MB to write from a ~100 KB file
        sd[f"extra.{i}.weight"] = big
    src = tmp_path / "shared.pth"
    torch.save({"state_dict": sd}, src)
    _convert_fails(src, tmp_path / "out", capsys, "repeat the same data")


def test_legacy_pth_claiming_a_huge_storage_is_one_clean_line(tmp_path, capsys):
    src = tmp_path / "huge.pth"
    torch.save({"state_dict": {"w": torch.arange(4.0)}}, src, _use_new_zipfile_serialization=False)
    data = src.read_bytes()
    # the storage's element count (BININT1 4 after its location 'cpu') -> 2**42 as an 8-byte LONG1
    huge = b"\x8a\x08" + (1 << 42).to_bytes(8, "little")
    data, n = re.subn(rb"(X\x03\x00\x00\x00cpu(?:q.|\x94))K\x04N", lambda m: m.group(1) + huge + b"N", data)
    assert n == 1
    src.write_bytes(data)
    err = _convert_fails(src, tmp_path / "out", capsys, "storages claim 17592186044416 bytes",
                         "more than the whole file")
    assert "%ld" not in err


def test_pth_with_shared_references_in_its_extra_fields_converts_quickly(tmp_path):
    from test_pth import original_state_dict
    x: object = [1]
    for _ in range(8):
        x = [x] * 200  # 200**8 values if walked naively; a few KB of pickle
    src = tmp_path / "shared.pth"
    torch.save({"state_dict": original_state_dict("pretrain"), "cur_step": x, "epoch": 3}, src)
    assert convert_main([str(src), str(tmp_path / "out")]) == 0  # (hung before, then MemoryError)
    cfg = (tmp_path / "out" / "config.json").read_text()
    assert len(cfg) < 1_000_000
    assert json.loads(cfg)["source"]["extra"]["cur_step"][0][0][0]


def test_pth_whose_recbole_config_is_out_of_range_names_the_file(tmp_path, capsys):
    from test_pth import original_state_dict, save_original
    src = tmp_path / "p.pth"
    save_original(src, original_state_dict("pretrain"), "pretrain", extra_config={"hidden_dropout_prob": 1.5})
    _convert_fails(src, tmp_path / "out", capsys, "'dropout' = 1.5")
