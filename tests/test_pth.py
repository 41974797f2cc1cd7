"""Import of original MISSRec .pth checkpoints: restricted unpickling, key mapping, item order.

Over 500 lines on purpose: the malicious-pickle cases (each built byte by byte) are the security
argument of missrec/unpickle.py and stay beside the conversion tests that use the same fixtures.
"""
from __future__ import annotations

import collections
import enum
import json
import os
import pickle
import struct
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from missrec import pth
from missrec.data.atomic import write_features, write_index_map
from missrec.fsutil import sha256_file

H, HEADS, INNER, MAX_LEN, DT, DV = 8, 2, 6, 5, 12, 10
FAKE_MODULES = ("recbole", "recbole.config", "recbole.config.configurator", "recbole.utils",
                "recbole.utils.enum_type")


# ----------------------------------------------------------------------------- building original files
def _fake_recbole():
    """Classes that exist only while the test pickles them, under RecBole's module names."""
    mods = {n: types.ModuleType(n) for n in FAKE_MODULES}

    class Config:  # what RecBole's Config pickles as: an object whose __dict__ holds the dicts
        def __init__(self, final):
            self.final_config_dict = final
            self.parameters = {"General": ["seed"]}

    class ModelType(enum.Enum):
        SEQUENTIAL = 2

    Config.__module__, Config.__qualname__ = "recbole.config.configurator", "Config"
    ModelType.__module__, ModelType.__qualname__ = "recbole.utils.enum_type", "ModelType"
    mods["recbole.config.configurator"].Config = Config
    mods["recbole.utils.enum_type"].ModelType = ModelType
    return mods, Config, ModelType


def original_state_dict(stage: str, n_rows: int = 0, k: int = 3, seed: int = 0,
                        text_table=None, image_table=None) -> collections.OrderedDict:
    """A state_dict with the original MISSRec's key names and shapes (small sizes)."""
    g = torch.Generator().manual_seed(seed)
    trm = torch.nn.Transformer(d_model=H, nhead=HEADS, num_encoder_layers=1, num_decoder_layers=1,
                               dim_feedforward=INNER, batch_first=True)
    sd = collections.OrderedDict()
    sd["position_embedding.weight"] = torch.randn(MAX_LEN, H, generator=g)
    for name, v in trm.state_dict().items():
        sd[f"trm_model.{name}"] = torch.randn(v.shape, generator=g)
    sd["LayerNorm.weight"] = torch.randn(H, generator=g)
    sd["LayerNorm.bias"] = torch.randn(H, generator=g)
    sd["fusion_factor"] = torch.tensor(0.37)
    sd["text_adaptor.weight"] = torch.randn(H, DT, generator=g)
    sd["text_adaptor.bias"] = torch.randn(H, generator=g)
    sd["img_adaptor.weight"] = torch.randn(H, DV, generator=g)
    sd["img_adaptor.bias"] = torch.randn(H, generator=g)
    if stage == "transductive_ft":
        sd["item_embedding.weight"] = torch.randn(n_rows, H, generator=g)
    if stage != "pretrain":
        text = text_table if text_table is not None else torch.randn(n_rows, DT, generator=g)
        image = image_table if image_table is not None else torch.randn(n_rows, DV, generator=g)
        sd["plm_embedding.weight"] = text
        sd["plm_embedding_empty_mask"] = ~text.sum(-1).bool()
        sd["plm_interest_lookup_table"] = torch.randint(0, k + 1, (n_rows,), generator=g)
        sd["img_embedding.weight"] = image
        sd["img_embedding_empty_mask"] = ~image.sum(-1).bool()
        sd["img_interest_lookup_table"] = torch.randint(0, k + 1, (n_rows,), generator=g)
        sd["interest_embeddings"] = torch.randn(k + 1, H, generator=g)
    # A real state_dict carries torch's _metadata attribute; keep that path exercised.
    sd._metadata = collections.OrderedDict({"": {"version": 1}})
    return sd


def save_original(path: Path, sd, stage: str, legacy: bool = False, extra_config: dict | None = None) -> None:
    """torch.save a dict laid out like RecBole's trainer checkpoint, then forget the fake classes."""
    mods, Config, ModelType = _fake_recbole()
    final = {"model": "MISSRec", "dataset": "Toy_mm_full", "n_layers": 2, "n_heads": HEADS, "hidden_size": H,
             "inner_size": INNER, "hidden_dropout_prob": 0.25, "attn_dropout_prob": 0.5, "hidden_act": "gelu",
             "layer_norm_eps": 1e-12, "initializer_range": 0.02, "temperature": 0.05, "train_stage": stage,
             "id_type": "id", "modal_type": "img_text", "seq_mm_fusion": "add", "item_mm_fusion": "dynamic_shared",
             "plm_size": DT, "img_size": DV, "MAX_ITEM_LIST_LENGTH": MAX_LEN, "device": torch.device("cuda", 0),
             "MODEL_TYPE": ModelType.SEQUENTIAL, "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}}, "topk": [10, 50]}
    final.update(extra_config or {})
    params = [torch.nn.Parameter(v.clone().float()) for v in sd.values() if v.is_floating_point()][:4]
    opt = torch.optim.Adam(params, lr=1e-3)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    state = {"config": Config(final), "epoch": 42, "cur_step": 7, "best_valid_score": np.float64(0.0753),
             "state_dict": sd, "other_parameter": {}, "optimizer": opt.state_dict()}
    saved = {n: sys.modules.get(n) for n in FAKE_MODULES}
    sys.modules.update(mods)
    try:
        torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m
    assert "recbole.config.configurator" not in sys.modules  # reading must not rely on the class


# A tiny dataset whose RecBole order we derive by hand from the rule documented in
# recbole_item_tokens: targets of train, valid, test rows (in that order), then all history tokens.
INTER = {
    "train": ["0\t3 1\t5", "1\t6\t3"],
    "valid": ["0\t3 1 5\t0"],
    "test": ["0\t3 1 5 0\t2"],
}
RECBOLE_TOKENS = ["[PAD]", "5", "3", "0", "2", "1", "6"]  # item 4 never occurs
N_ITEMS = 7


def make_dataset(root: Path, name: str = "Toy_mm_full", seed: int = 0) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    for split, rows in INTER.items():
        (folder / f"{name}.{split}.inter").write_text(
            "user_id:token\titem_id_list:token_seq\titem_id:token\n" + "\n".join(rows) + "\n")
    write_index_map(folder / f"{name}.item2index", [f"raw{i}" for i in range(N_ITEMS)])
    rng = np.random.default_rng(seed)
    write_features(folder / f"{name}.feat1CLS", rng.normal(size=(N_ITEMS, DT)).astype(np.float32))
    write_features(folder / f"{name}.feat3CLS", rng.normal(size=(N_ITEMS, DV)).astype(np.float32))
    return folder


def recbole_tables(folder: Path, name: str = "Toy_mm_full"):
    """The feature tables as the original's dataset class builds them: row r = feat[int(token_r)]."""
    text = np.fromfile(folder / f"{name}.feat1CLS", dtype=np.float32).reshape(-1, DT)
    image = np.fromfile(folder / f"{name}.feat3CLS", dtype=np.float32).reshape(-1, DV)
    t = torch.zeros(len(RECBOLE_TOKENS), DT)
    v = torch.zeros(len(RECBOLE_TOKENS), DV)
    for r, tok in enumerate(RECBOLE_TOKENS[1:], start=1):
        t[r] = torch.from_numpy(text[int(tok)])
        v[r] = torch.from_numpy(image[int(tok)])
    return t, v


MODEL_KEYS_EXCLUDED = {"plm_embedding.weight", "img_embedding.weight", "plm_embedding_empty_mask",
                       "img_embedding_empty_mask", "plm_interest_lookup_table", "img_interest_lookup_table",
                       "interest_embeddings", "item_embedding.weight"}


# ----------------------------------------------------------------------------- reading
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_pretrain_checkpoint_converts_and_loads_equal(tmp_path, legacy):
    sd = original_state_dict("pretrain")
    src = tmp_path / "MISSRec-Toy-10.pth"
    save_original(src, sd, "pretrain", legacy=legacy)
    assert zipfile.is_zipfile(src) != legacy

    out, conv = pth.convert_pth(src, tmp_path / "converted")
    assert "recbole" not in sys.modules  # nothing was imported to read the file
    weights = load_file(str(out / "model.safetensors"))
    assert set(weights) == set(sd)
    for k, v in sd.items():
        assert torch.equal(weights[k], v), k
    assert not (out / "interest.safetensors").exists()

    cfg = json.loads((out / "config.json").read_text())
    # Shapes give sizes; the pickled RecBole Config gives what shapes cannot (n_heads, dropout, tau).
    assert (cfg["hidden_size"], cfg["n_heads"], cfg["inner_size"], cfg["max_seq_length"]) == (H, HEADS, INNER, MAX_LEN)
    assert (cfg["num_encoder_layers"], cfg["num_decoder_layers"], cfg["text_dim"], cfg["image_dim"]) == (1, 1, DT, DV)
    assert cfg["dropout"] == 0.25 and cfg["temperature"] == 0.05 and cfg["fusion"] == "dynamic_shared"
    assert cfg["use_id"] is False and cfg["n_items"] == 0 and cfg["model_type"] == "missrec"
    assert cfg["source"]["sha256"] == sha256_file(src) and cfg["source"]["epoch"] == 42
    assert cfg["source"]["original_dataset"] == "Toy_mm_full"
    assert cfg["source"]["extra"] == {"cur_step": 7, "best_valid_score": 0.0753}
    assert cfg["source"]["original_config"]["device"] == "cuda:0"
    assert cfg["source"]["original_config"]["MODEL_TYPE"].startswith("recbole.utils.enum_type.ModelType(2")

    # ... and it loads into our model with the same tensors.
    from missrec.factory import from_pretrained
    model = from_pretrained(out)
    own = model.state_dict()
    for k, v in sd.items():
        assert torch.equal(own[k], v), k


def test_reads_everything_in_the_file(tmp_path):
    sd = original_state_dict("pretrain")
    src = tmp_path / "o.pth"
    save_original(src, sd, "pretrain")
    obj = pth.load_pth(src)
    assert obj["epoch"] == 42 and obj["cur_step"] == 7 and obj["best_valid_score"] == 0.0753
    cfg = obj["config"]
    assert isinstance(cfg, pth.Placeholder) and cfg.pickle_name == "recbole.config.configurator.Config"
    state = pth.placeholder_state(cfg)
    assert state["parameters"] == {"General": ["seed"]} and state["final_config_dict"]["n_heads"] == HEADS
    assert obj["state_dict"]._metadata == {"": {"version": 1}}
    assert set(obj["optimizer"]["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    with pytest.raises(pth.UnsafePickleError, match="refusing to call"):
        type(cfg)()  # a placeholder type cannot be called, even by us


def test_same_tensors_as_torch_weights_only(tmp_path):
    base = torch.arange(24.0).reshape(4, 6)
    sd = collections.OrderedDict(w=torch.randn(3, 5), i=torch.arange(7), b=torch.tensor([True, False]),
                                 h=torch.randn(4).half(), view=base[1:3, ::2], t=base.t(), empty=torch.zeros(0, 3),
                                 scalar=torch.tensor(2.5))
    src = tmp_path / "sd.pth"
    torch.save(sd, src)
    ours, ref = pth.load_pth(src), torch.load(src, weights_only=True)
    assert list(ours) == list(ref)
    for k in ref:
        assert ours[k].dtype == ref[k].dtype and ours[k].shape == ref[k].shape, k
        assert ours[k].stride() == ref[k].stride() and torch.equal(ours[k], ref[k]), k


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    p = tmp_path / "x.pth"
    p.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(pth.PthFormatError, match="not a torch.save"):
        pth.load_pth(p)
    p.write_bytes(b"garbage")
    with pytest.raises(pth.PthFormatError, match=str(p)):
        pth.load_pth(p)
    torch.save({"model": {"w": torch.ones(2)}, "epoch": 3}, p)
    with pytest.raises(pth.PthFormatError, match="state_dict"):
        pth.read_original(p)


def test_out_of_bounds_view_is_rejected(tmp_path):
    src = tmp_path / "sd.pth"
    torch.save({"w": torch.arange(4.0)}, src)
    with zipfile.ZipFile(src) as z:
        names = {n: z.read(n) for n in z.namelist()}
    pkl = [n for n in names if n.endswith("data.pkl")][0]
    # size (4,) -> (40,): the tensor would read past its 4-element storage
    assert names[pkl].count(b"K\x04\x85") == 1
    names[pkl] = names[pkl].replace(b"K\x04\x85", b"K\x28\x85")
    bad = tmp_path / "bad.pth"
    with zipfile.ZipFile(bad, "w") as z:
        for n, data in names.items():
            z.writestr(n, data)
    with pytest.raises(pth.PthFormatError, match="storage of 4 elements"):
        pth.load_pth(bad)


# ----------------------------------------------------------------------------- refusing code
class _RunCommand:
    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return (self.fn, (self.arg,))


def _payloads(marker: Path):
    cmd = f"touch {marker}"
    yield "os.system protocol 2", pickle.dumps({"state_dict": _RunCommand(os.system, cmd)}, protocol=2)
    yield "os.system protocol 0", pickle.dumps(_RunCommand(os.system, cmd), protocol=0)
    yield "os.system protocol 5", pickle.dumps([_RunCommand(os.system, cmd)], protocol=5)
    yield "eval", pickle.dumps(_RunCommand(eval, f"__import__('os').system({cmd!r})"), protocol=2)
    yield "exec", pickle.dumps(_RunCommand(exec, f"import os; os.system({cmd!r})"), protocol=4)
    import subprocess
    yield "subprocess", pickle.dumps(_RunCommand(subprocess.call, ["touch", str(marker)]), protocol=2)
    nested = {"state_dict": collections.OrderedDict(w=torch.zeros(1)),
              "other_parameter": [(1, {"hook": _RunCommand(subprocess.Popen, ["touch", str(marker)])})]}
    yield "subprocess.Popen nested", pickle.dumps(nested, protocol=4)
    yield "INST opcode", f"(S'{cmd}'\nios\nsystem\n.".encode()
    # getattr(os.path, "system")(cmd), assembled by hand
    yield "getattr chain", (b"\x80\x02cbuiltins\ngetattr\ncos\npath\nX\x06\x00\x00\x00system\x86R"
                            + b"X" + struct.pack("<I", len(cmd)) + cmd.encode() + b"\x85R.")


def test_malicious_pickles_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    for label, payload in _payloads(marker):
        plain = tmp_path / "plain.pth"
        plain.write_bytes(payload)
        with pytest.raises(pth.UnsafePickleError, match="refusing to call"):
            pth.load_pth(plain)
        with pytest.raises(pth.UnsafePickleError):
            pth.restricted_loads(payload)
        assert not marker.exists(), label


def test_malicious_zip_checkpoint_is_refused_and_never_runs(tmp_path, capsys):
    marker = tmp_path / "pwned"
    sd = original_state_dict("pretrain")
    evil = tmp_path / "evil.pth"
    torch.save({"config": _RunCommand(os.system, f"touch {marker}"), "epoch": 1, "state_dict": sd}, evil)
    with zipfile.ZipFile(evil) as z:
        assert b"system" in z.read([n for n in z.namelist() if n.endswith("data.pkl")][0])
    with pytest.raises(pth.UnsafePickleError, match=r"posix\.system|os\.system|nt\.system"):
        pth.read_original(evil)
    from missrec.convert import main
    assert main([str(evil), str(tmp_path / "out")]) == 2
    assert "refused" in capsys.readouterr().err
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_calling_a_placeholder_class_is_refused_but_building_one_is_inert():
    # NEWOBJ + BUILD of an unknown class (how plain objects are pickled) gives an inert record ...
    data = (b"\x80\x02csome.module\nThing\n)\x81}\x8c\x01a\x4b\x01sb.")
    obj = pth.restricted_loads(data)
    assert isinstance(obj, pth.Placeholder) and obj.pickle_name == "some.module.Thing" and obj.state == {"a": 1}
    # ... but calling the same class (REDUCE) with arguments is refused.
    with pytest.raises(pth.UnsafePickleError, match="some.module.Thing"):
        pth.restricted_loads(b"\x80\x02csome.module\nThing\nK\x01\x85R.")
    # BUILD on a real object (not a placeholder) is refused too.
    with pytest.raises(pth.UnsafePickleError, match="BUILD"):
        pth.restricted_loads(b"\x80\x02]}b.")


class _Reduce:
    """Pickles as an arbitrary (callable, args[, state]) triple."""

    def __init__(self, *reduce_value):
        self.reduce_value = reduce_value

    def __reduce__(self):
        return self.reduce_value


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_nested_popen_in_a_torch_file_is_refused_and_never_runs(tmp_path, legacy):
    import subprocess
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    inner = {"final_config_dict": {"callbacks": [_RunCommand(subprocess.Popen, ["touch", str(marker)])]}}
    torch.save({"state_dict": original_state_dict("pretrain"), "config": inner}, evil,
               _use_new_zipfile_serialization=not legacy)
    assert zipfile.is_zipfile(evil) != legacy
    with pytest.raises(pth.UnsafePickleError, match=r"refusing to call subprocess\.Popen"):
        pth.load_pth(evil)
    assert not marker.exists()


def test_allow_listed_callables_cannot_smuggle_a_call(tmp_path):
    marker = tmp_path / "pwned"
    cmd = f"touch {marker}"
    # A tensor-subclass rebuild whose "rebuild function" is os.system.
    smuggled = _Reduce(torch._tensor._rebuild_from_type_v2, (os.system, torch.Tensor, (cmd,), {}))
    with pytest.raises(pth.UnsafePickleError, match="system"):
        pth.restricted_loads(pickle.dumps(smuggled, protocol=2))
    # A state_dict whose `items` attribute would shadow the method read_original calls.
    shadow = _Reduce(collections.OrderedDict, (), {"items": _RunCommand(os.system, cmd)})
    with pytest.raises(pth.UnsafePickleError):
        pth.restricted_loads(pickle.dumps(shadow, protocol=2))
    shadow = _Reduce(collections.OrderedDict, (), {"items": os.system})
    with pytest.raises(pth.UnsafePickleError, match="BUILD"):
        pth.restricted_loads(pickle.dumps(shadow, protocol=2))
    assert not marker.exists()


def test_extension_registry_cannot_bypass_find_class(tmp_path):
    import copyreg
    marker = tmp_path / "pwned"
    code = 240  # copyreg reserves 240..255 for private use
    copyreg.add_extension(os.system.__module__, "system", code)
    try:
        payload = pickle.dumps(_RunCommand(os.system, f"touch {marker}"), protocol=2)
        assert pickle.EXT1 + bytes([code]) in payload
        # A plain unpickler resolving the code (without calling it) leaves the real os.system in
        # copyreg's process-wide cache, where the next EXT1 would find it without find_class.
        assert pickle.loads(pickle.PROTO + b"\x02" + pickle.EXT1 + bytes([code]) + pickle.STOP) is os.system
        with pytest.raises(pth.UnsafePickleError, match="EXT1"):
            pth.restricted_loads(payload)
    finally:
        copyreg.remove_extension(os.system.__module__, "system", code)
    assert not marker.exists()


def test_find_class_never_imports():
    assert "antigravity" not in sys.modules  # importing it would open a web browser
    obj = pth.restricted_loads(b"\x80\x02cantigravity\nfly\n.")
    assert obj.pickle_name == "antigravity.fly" and "antigravity" not in sys.modules


# ----------------------------------------------------------------------------- finetuned checkpoints
def test_recbole_item_order_matches_hand_derivation(tmp_path):
    folder = make_dataset(tmp_path)
    assert pth.recbole_item_tokens(folder) == RECBOLE_TOKENS


def test_transductive_checkpoint_needs_dataset(tmp_path):
    folder = make_dataset(tmp_path)
    text, image = recbole_tables(folder)
    sd = original_state_dict("transductive_ft", n_rows=len(RECBOLE_TOKENS), text_table=text, image_table=image)
    src = tmp_path / "ft.pth"
    save_original(src, sd, "transductive_ft")
    with pytest.raises(pth.PthConversionError, match="--dataset"):
        pth.convert_pth(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_transductive_checkpoint_rows_are_permuted_to_our_order(tmp_path):
    folder = make_dataset(tmp_path)
    text, image = recbole_tables(folder)
    sd = original_state_dict("transductive_ft", n_rows=len(RECBOLE_TOKENS), text_table=text, image_table=image)
    src = tmp_path / "ft.pth"
    save_original(src, sd, "transductive_ft")
    out, conv = pth.convert_pth(src, tmp_path / "out", dataset=folder)
    assert any("checked: plm_embedding.weight" in n for n in conv.notes)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["use_id"] is True and cfg["n_items"] == N_ITEMS

    weights = load_file(str(out / "model.safetensors"))
    assert set(weights) == (set(sd) - MODEL_KEYS_EXCLUDED) | {"item_embedding.weight"}
    for k in set(sd) - MODEL_KEYS_EXCLUDED:
        assert torch.equal(weights[k], sd[k]), k
    ids = weights["item_embedding.weight"]
    assert ids.shape == (N_ITEMS + 1, H)
    assert torch.equal(ids[0], sd["item_embedding.weight"][0])
    for r, tok in enumerate(RECBOLE_TOKENS[1:], start=1):  # RecBole row r -> our id file_index + 1
        assert torch.equal(ids[int(tok) + 1], sd["item_embedding.weight"][r]), tok
    assert torch.equal(ids[4 + 1], torch.zeros(H))  # item 4 never occurs: the original had no row

    interest = load_file(str(out / "interest.safetensors"))
    assert torch.equal(interest["interest_embeddings"], sd["interest_embeddings"])
    for ours, orig in (("text_interest", "plm_interest_lookup_table"), ("image_interest", "img_interest_lookup_table")):
        assert interest[ours].shape == (N_ITEMS + 1,) and interest[ours].dtype == torch.long
        for r, tok in enumerate(RECBOLE_TOKENS[1:], start=1):
            assert interest[ours][int(tok) + 1] == sd[orig][r]

    from missrec.factory import from_pretrained
    model = from_pretrained(out)
    assert torch.equal(model.state_dict()["item_embedding.weight"], ids)


def test_feature_check_catches_the_wrong_dataset(tmp_path):
    folder = make_dataset(tmp_path)
    text, image = recbole_tables(folder)
    sd = original_state_dict("transductive_ft", n_rows=len(RECBOLE_TOKENS), text_table=text, image_table=image)
    src = tmp_path / "ft.pth"
    save_original(src, sd, "transductive_ft")
    other = make_dataset(tmp_path / "other", seed=1)  # same interactions, different features
    with pytest.raises(pth.PthConversionError, match="does not match"):
        pth.convert_pth(src, tmp_path / "out", dataset=other)
    out, conv = pth.convert_pth(src, tmp_path / "out", dataset=other, skip_feature_check=True)
    assert any("skipped" in n for n in conv.notes)


def test_item_count_mismatch_is_an_error(tmp_path):
    folder = make_dataset(tmp_path)
    sd = original_state_dict("transductive_ft", n_rows=len(RECBOLE_TOKENS) + 2)
    src = tmp_path / "ft.pth"
    save_original(src, sd, "transductive_ft")
    with pytest.raises(pth.PthConversionError, match="not the dataset it was trained on"):
        pth.convert_pth(src, tmp_path / "out", dataset=folder)


def test_inductive_without_dataset_keeps_model_drops_interest(tmp_path):
    sd = original_state_dict("inductive_ft", n_rows=len(RECBOLE_TOKENS))
    src = tmp_path / "ind.pth"
    save_original(src, sd, "inductive_ft", extra_config={"id_type": "none"})
    out, conv = pth.convert_pth(src, tmp_path / "out")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["use_id"] is False and cfg["n_items"] == len(RECBOLE_TOKENS) - 1
    assert not (out / "interest.safetensors").exists()
    assert any("interest state not converted" in n for n in conv.notes)
    assert set(load_file(str(out / "model.safetensors"))) == set(sd) - MODEL_KEYS_EXCLUDED


def test_unknown_keys_are_listed_or_dropped_on_request(tmp_path):
    sd = original_state_dict("pretrain")
    sd["moe_adaptor.weight"] = torch.zeros(2)
    src = tmp_path / "u.pth"
    save_original(src, sd, "pretrain")
    with pytest.raises(pth.PthConversionError, match="moe_adaptor.weight"):
        pth.convert_pth(src, tmp_path / "out")
    out, conv = pth.convert_pth(src, tmp_path / "out", allow_unknown=True)
    assert "moe_adaptor.weight" not in load_file(str(out / "model.safetensors"))
    assert any("moe_adaptor.weight" in n for n in conv.notes)


def test_shape_errors_name_the_key(tmp_path):
    sd = original_state_dict("pretrain")
    sd["trm_model.decoder.layers.0.linear2.weight"] = torch.zeros(H, INNER + 1)
    src = tmp_path / "s.pth"
    save_original(src, sd, "pretrain")
    with pytest.raises(pth.PthConversionError, match=r"decoder\.layers\.0\.linear2\.weight"):
        pth.convert_pth(src, tmp_path / "out")


def test_convert_cli(tmp_path, capsys):
    from missrec.convert import main
    sd = original_state_dict("pretrain")
    src = tmp_path / "p.pth"
    save_original(src, sd, "pretrain")
    assert main([str(src), str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "out")
    assert main([str(src), str(tmp_path / "out")]) == 2  # exists: needs --overwrite
    assert main([str(src), str(tmp_path / "out"), "--overwrite"]) == 0
    (tmp_path / "notckpt").mkdir()
    (tmp_path / "notckpt" / "keep.txt").write_text("mine")
    assert main([str(src), str(tmp_path / "notckpt"), "--overwrite"]) == 2
    assert (tmp_path / "notckpt" / "keep.txt").read_text() == "mine"
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--dataset" in capsys.readouterr().out
