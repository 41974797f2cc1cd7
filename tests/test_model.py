import torch
import torch.nn.functional as F

from missrec.checkpoint import save_model
from missrec.config import MISSRecConfig
from missrec.factory import from_pretrained
from missrec.items import ItemTable
from missrec.model import MISSRec, MISSRecScorer

H, D, N = 32, 16, 40


def _setup(use_id=False, seed=0, dropout=0.0):
    torch.manual_seed(seed)
    cfg = MISSRecConfig(hidden_size=H, n_heads=2, inner_size=24, dropout=dropout, max_seq_length=10,
                        text_dim=D, image_dim=D, use_id=use_id, n_items=N if use_id else 0)
    model = MISSRec(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    text = torch.randn(N + 1, D, generator=g); text[0] = 0
    image = torch.randn(N + 1, D, generator=g); image[0] = 0; image[5] = 0
    items = ItemTable(text, image, hidden_size=H)
    with torch.no_grad():
        model.fusion_factor.fill_(0.7)
    items.discover_interests(model, 0.2, seed=0)
    return model, items


def _batch(g, B=6, L=10):
    length = torch.randint(1, L + 1, (B,), generator=g)
    seq = torch.randint(1, N + 1, (B, L), generator=g) * (torch.arange(L)[None] < length[:, None])
    return seq, length


ORIGINAL_KEYS = {
    "position_embedding.weight", "LayerNorm.weight", "LayerNorm.bias", "fusion_factor",
    "text_adaptor.weight", "text_adaptor.bias", "img_adaptor.weight", "img_adaptor.bias",
    "trm_model.encoder.norm.weight", "trm_model.encoder.norm.bias",
    "trm_model.decoder.norm.weight", "trm_model.decoder.norm.bias",
    *[f"trm_model.encoder.layers.0.{k}" for k in (
        "self_attn.in_proj_weight", "self_attn.in_proj_bias", "self_attn.out_proj.weight", "self_attn.out_proj.bias",
        "linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias",
        "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias")],
    *[f"trm_model.decoder.layers.0.{k}" for k in (
        "self_attn.in_proj_weight", "self_attn.in_proj_bias", "self_attn.out_proj.weight", "self_attn.out_proj.bias",
        "multihead_attn.in_proj_weight", "multihead_attn.in_proj_bias", "multihead_attn.out_proj.weight",
        "multihead_attn.out_proj.bias", "linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias",
        "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "norm3.weight", "norm3.bias")],
}


def test_parameter_names_are_the_originals():
    model, _ = _setup()
    assert set(model.state_dict()) == ORIGINAL_KEYS
    model, _ = _setup(use_id=True)
    assert set(model.state_dict()) == ORIGINAL_KEYS | {"item_embedding.weight"}
    assert model.state_dict()["fusion_factor"].dim() == 0


def test_exactness_settings():
    model, _ = _setup()
    for m in model.modules():
        if isinstance(m, torch.nn.LayerNorm):
            assert m.eps == 1e-12
    layer = model.trm_model.encoder.layers[0]
    assert layer.norm_first is False
    assert layer.activation is F.gelu or layer.activation_relu_or_gelu == 2


def _reference_user(model, items, seq, length):
    """Step-by-step re-statement of MISSRec.forward (missrec/model.py), one row at a time."""
    outs = []
    for s, n in zip(seq, length):
        s = s[:n].unsqueeze(0)
        x = model.text_adaptor(items.text[s]) + model.img_adaptor(items.image[s]) + model.position_embedding.weight[:n]
        if model.item_embedding is not None:
            x = x + model.item_embedding(s)
        x = model.LayerNorm(x)
        ids = sorted(set(items.text_interest[s].flatten().tolist()) | set(items.image_interest[s].flatten().tolist()))
        mem = model.trm_model.encoder(items.centroids[torch.tensor([ids])])
        out = model.trm_model.decoder(x, mem)
        outs.append(F.normalize(out[0, -1], dim=-1))
    return torch.stack(outs)


def test_batched_forward_matches_per_row_reference():
    for use_id in (False, True):
        model, items = _setup(use_id=use_id)
        seq, length = _batch(torch.Generator().manual_seed(1))
        with torch.no_grad():
            u, reg = model(seq, length, items)
            ref = _reference_user(model, items, seq, length)
        assert torch.allclose(u, ref, atol=1e-5)
        assert torch.allclose(u.norm(dim=1), torch.ones(len(u)))
        assert reg.dim() == 0 and reg >= 0


def test_fusion_matches_explicit_softmax():
    model, items = _setup(use_id=True)
    seq, length = _batch(torch.Generator().manual_seed(2))
    scorer = MISSRecScorer(model, items)
    u = scorer.encode(seq, length)
    ids = torch.arange(1, N + 1)
    got = scorer.score(u, ids)
    t = F.normalize(model.text_adaptor(items.text[ids]), dim=-1)
    v = F.normalize(model.img_adaptor(items.image[ids]), dim=-1)
    e = F.normalize(model.item_embedding(ids), dim=-1)
    st, sv = u @ t.T, u @ v.T
    both = torch.stack([st, sv], -1)
    w = torch.softmax(both * model.fusion_factor, -1)
    ref = ((u @ e.T) + 2 * (both * w).sum(-1)) / 3 / 0.07
    assert torch.allclose(got, ref, atol=1e-5)
    pairs = scorer.score_pairs(u, ids[: len(u)])
    assert torch.allclose(pairs, got[torch.arange(len(u)), torch.arange(len(u))], atol=1e-5)


def test_padding_columns_do_not_change_the_user_vector():
    model, items = _setup()
    seq, length = _batch(torch.Generator().manual_seed(3), L=6)
    wide = torch.cat([seq, torch.zeros(seq.shape[0], 4, dtype=seq.dtype)], 1)
    with torch.no_grad():
        a, _ = model(seq, length, items)
        b, _ = model(wide, length, items)
    assert torch.allclose(a, b, atol=1e-5)


def test_save_load_roundtrip(tmp_path):
    model, items = _setup(use_id=True)
    save_model(tmp_path / "ckpt", model, items)
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == {"config.json", "model.safetensors", "interest.safetensors",
                                                         "README.md"}
    back = from_pretrained(tmp_path / "ckpt")
    for k, v in model.state_dict().items():
        assert torch.equal(v, back.state_dict()[k])
    items2 = ItemTable(items.text, items.image, hidden_size=H)
    items2.load_interest(tmp_path / "ckpt" / "interest.safetensors")
    assert torch.equal(items2.centroids, items.centroids)
    # Inductive load of a transductive checkpoint drops the ID table; a new catalogue gets a fresh one.
    assert from_pretrained(tmp_path / "ckpt", use_id=False, n_items=0).item_embedding is None
    assert from_pretrained(tmp_path / "ckpt", use_id=True, n_items=7).item_embedding.weight.shape == (8, H)


def test_peft_switch():
    model, _ = _setup(use_id=True)
    trainable, total = model.set_peft(True)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names == {"text_adaptor.weight", "text_adaptor.bias", "img_adaptor.weight", "img_adaptor.bias",
                     "LayerNorm.weight", "LayerNorm.bias", "fusion_factor", "item_embedding.weight"}
    assert trainable < total
    assert model.set_peft(False)[0] == total
