"""Packed (real tokens only) vs padded (nn.Transformer) sequence encoding: same numbers.

And the interest regulariser's two forms, the original one against a transcription of the
original code's formula (per-sample ``unique`` incl. the padding id, ``pad_sequence``,
memory pooled over every slot with the fraction of real tokens, summed over the batch).
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from missrec.config import MISSRecConfig
from missrec.interest import interest_tokens, interest_tokens_packed
from missrec.items import ItemTable
from missrec.model import MISSRec
from missrec.objectives import FinetuneObjective, PretrainObjective

N_ITEMS, DIM, H, L = 60, 24, 32, 50
TOL = 1e-5


def _setup(use_id=True, dropout=0.1, interest_reg="mean", k=17, seed=0, layers=1):
    torch.manual_seed(seed)
    cfg = MISSRecConfig(hidden_size=H, n_heads=4, inner_size=48, dropout=dropout, text_dim=DIM, image_dim=DIM,
                        max_seq_length=L, use_id=use_id, n_items=N_ITEMS if use_id else 0,
                        interest_reg=interest_reg, num_encoder_layers=layers, num_decoder_layers=layers)
    model = MISSRec(cfg)
    with torch.no_grad():
        model.fusion_factor.fill_(0.7)  # make the fusion weights matter
    g = torch.Generator().manual_seed(seed)
    text = torch.randn(N_ITEMS + 1, DIM, generator=g)
    text[0] = 0
    image = torch.randn(N_ITEMS + 1, DIM, generator=g)
    image[0] = 0
    items = ItemTable(text, image, text_aug=text + 0.1 * torch.randn(text.shape, generator=g), hidden_size=H)
    items.set_interests(torch.randint(1, k + 1, (N_ITEMS,), generator=g),
                        torch.randint(1, k + 1, (N_ITEMS,), generator=g), torch.randn(k, H, generator=g))
    return model, items


# Every real-tokens-only attention implementation must equal the padded reference.
PACKED_IMPLS = ["packed", "jagged"]


def _pair(model, impl="packed"):
    pad, pk = copy.deepcopy(model), copy.deepcopy(model)
    pad.config.attention_impl, pk.config.attention_impl = "padded", impl
    return pad, pk


def _batch(lengths, seed=1, width=L):
    g = torch.Generator().manual_seed(seed)
    length = torch.tensor(lengths)
    seq = torch.randint(1, N_ITEMS + 1, (len(lengths), width), generator=g)
    seq = seq * (torch.arange(width).unsqueeze(0) < length.unsqueeze(1))
    target = torch.randint(1, N_ITEMS + 1, (len(lengths),), generator=g)
    keep = torch.rand(len(lengths), width, generator=g) < 0.8
    return {"seq": seq, "length": length, "target": target, "keep": keep}


_rng = torch.Generator().manual_seed(123)
BATCHES = {
    "all_1": [1] * 8,
    "all_2": [2] * 8,
    "all_50": [50] * 6,  # every row full
    "one_length_1": [1],
    "mix_uniform": torch.randint(1, 51, (24,), generator=_rng).tolist(),
    "mix_short": (torch.distributions.Geometric(probs=torch.tensor(0.3)).sample((32,)).long() + 1).clamp_max(50).tolist(),
    "mix_1_2_50": [1, 50, 2, 1, 50, 2, 7],
}


def _close(a, b, what):
    """Within 1e-5, relative to the magnitude where that exceeds 1 (the original regulariser sums
    over the batch and reaches ~100, where 1e-5 is about one float32 ulp)."""
    assert a.shape == b.shape, what
    err = (a - b).abs().max().item()
    scale = max(1.0, a.abs().max().item())
    assert err <= TOL * scale, f"{what}: max abs difference {err:.3g} (scale {scale:.3g})"


@pytest.mark.parametrize("impl", PACKED_IMPLS)
@pytest.mark.parametrize("reg", ["mean", "original"])
@pytest.mark.parametrize("name", list(BATCHES))
def test_eval_outputs_equal(name, reg, impl):
    model, items = _setup(interest_reg=reg)
    pad, pk = _pair(model, impl)
    pad.eval(), pk.eval()
    b = _batch(BATCHES[name])
    with torch.no_grad():
        u1, r1 = pad(b["seq"], b["length"], items)
        u2, r2 = pk(b["seq"], b["length"], items)
        _close(u1, u2, "user vectors")
        _close(r1, r2, "regulariser")
        assert r1.item() > 0
        _close(pad.logits(u1, pad.item_reps(items)), pk.logits(u2, pk.item_reps(items)), "scores")
        # A batch trimmed to its longest history encodes the same in both paths.
        w = max(BATCHES[name])
        u3, r3 = pk(b["seq"][:, :w], b["length"], items)
        _close(u1, u3, "trimmed batch")
        _close(r1, r3, "trimmed batch regulariser")


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("impl", PACKED_IMPLS)
@pytest.mark.parametrize("reg", ["mean", "original"])
@pytest.mark.parametrize("name", ["all_1", "all_50", "one_length_1", "mix_uniform", "mix_1_2_50"])
def test_train_mode_losses_and_gradients_equal(name, reg, impl):
    model, items = _setup(dropout=0.0, interest_reg=reg)
    pad, pk = _pair(model, impl)
    b = _batch(BATCHES[name])
    out = {}
    for tag, m in (("padded", pad), ("packed", pk)):
        m.train()
        ft = FinetuneObjective(m, gamma_reg=0.5)  # a large weight so the regulariser's gradient shows
        loss, _ = ft(b, items)
        loss.backward()
        g_ft = _grads(m)
        m.zero_grad()
        pt = PretrainObjective(m, gamma_reg=0.5, augmentation="both")
        loss2, logs = pt(b, items)
        loss2.backward()
        out[tag] = (loss.detach(), g_ft, loss2.detach(), logs["loss_seq_seq"], _grads(m))
    (l1, g1, p1, s1, h1), (l2, g2, p2, s2, h2) = out["padded"], out["packed"]
    _close(l1, l2, "finetune loss")
    _close(p1, p2, "pretrain loss")
    _close(s1, s2, "seq-seq loss")
    for grads_a, grads_b, what in ((g1, g2, "finetune"), (h1, h2, "pretrain")):
        assert grads_a.keys() == grads_b.keys()
        assert any(k.startswith("trm_model.encoder.") for k in grads_a)  # the regulariser reaches the encoder
        for k in grads_a:
            _close(grads_a[k], grads_b[k], f"{what} gradient of {k}")


@pytest.mark.parametrize("impl", PACKED_IMPLS)
def test_two_layers_and_inductive(impl):
    model, items = _setup(use_id=False, layers=2, interest_reg="original")
    pad, pk = _pair(model, impl)
    pad.eval(), pk.eval()
    b = _batch(BATCHES["mix_uniform"])
    with torch.no_grad():
        u1, r1 = pad(b["seq"], b["length"], items)
        u2, r2 = pk(b["seq"], b["length"], items)
    _close(u1, u2, "user vectors")
    _close(r1, r2, "regulariser")


def test_packed_interest_tokens_are_the_padded_sets():
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, 9, (7, 12), generator=g)
    v = torch.randint(0, 9, (7, 12), generator=g)
    length = torch.tensor([12, 1, 5, 3, 12, 2, 8])
    mask = torch.arange(12).unsqueeze(0) < length.unsqueeze(1)
    t, v = t * mask, v * mask
    dense = interest_tokens(t, v)
    row = torch.arange(7).repeat_interleave(length)
    tok, tok_row, n = interest_tokens_packed(t[mask], v[mask], row, 7, 9)
    for r in range(7):
        want = dense[r][dense[r] != 0]
        assert torch.equal(tok[tok_row == r], want)
        assert n[r] == want.numel()


def _original_regulariser(model, items, seq):
    """Transcribed from the original: tokens = per-sample unique of the padded [B, 2L] ids (the
    padding id kept), padded with 0; memory pooled over ALL slots with weight = fraction of real
    slots; squared norms summed over the batch; / hidden size."""
    all_ids = torch.cat([items.text_interest[seq], items.image_interest[seq]], dim=-1)
    toks = nn.utils.rnn.pad_sequence([s.unique() for s in all_ids], batch_first=True, padding_value=0)
    pad_mask = toks == 0
    memory = model.trm_model.encoder(items.centroids[toks], src_key_padding_mask=pad_mask)
    weight = (~pad_mask).unsqueeze(-1).float().mean(1, keepdim=True)
    pooled = (memory * weight).sum(1)
    return (pooled * pooled).sum() / pooled.shape[1]


@pytest.mark.parametrize("impl", ["padded", *PACKED_IMPLS])
@pytest.mark.parametrize("name", ["all_1", "all_50", "one_length_1", "mix_uniform", "mix_1_2_50"])
def test_original_regulariser_matches_the_original_formula(name, impl):
    model, items = _setup(interest_reg="original")
    model.config.attention_impl = impl
    model.eval()
    # The original's batches were always max_seq_length wide.
    b = _batch(BATCHES[name])
    with torch.no_grad():
        _, reg = model(b["seq"], b["length"], items)
        want = _original_regulariser(model, items, b["seq"])
    assert abs(reg.item() - want.item()) <= 1e-5 * max(1.0, want.item()), (reg.item(), want.item())
    # It is not the clean form: padding slots and the batch sum make it larger.
    model.config.interest_reg = "mean"
    with torch.no_grad():
        _, mean_reg = model(b["seq"], b["length"], items)
    assert abs(mean_reg.item() - want.item()) > 1e-3 * want.item()


def test_config_rejects_unknown_choices():
    with pytest.raises(ValueError, match="attention_impl"):
        MISSRecConfig(attention_impl="flash")
    with pytest.raises(ValueError, match="interest_reg"):
        MISSRecConfig(interest_reg="sum")


@pytest.mark.parametrize("impl", PACKED_IMPLS)
@pytest.mark.parametrize("reg", ["mean", "original"])
def test_packed_runs_under_bf16_autocast(reg, impl):
    """The mixed-precision path of training (here CPU autocast; CUDA autocast takes the same ops)."""
    model, items = _setup(dropout=0.0, interest_reg=reg)
    model.config.attention_impl = impl
    b = _batch(BATCHES["mix_1_2_50"])
    ft = FinetuneObjective(model, gamma_reg=1e-4)
    with torch.no_grad():
        want, _ = ft(b, items)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = ft(b, items)
    loss.backward()
    assert torch.isfinite(loss) and abs(loss.item() - want.item()) < 0.05 * abs(want.item())
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("impl", PACKED_IMPLS)
def test_no_interest_tokens_is_a_clear_error(impl):
    model, items = _setup()
    model.config.attention_impl = impl
    items.text_interest.zero_(), items.image_interest.zero_()
    b = _batch([3, 1])
    with pytest.raises(ValueError, match="interest discovery"):
        model(b["seq"], b["length"], items)


@pytest.mark.parametrize("impl", PACKED_IMPLS)
def test_packed_dropout_is_inverted_dropout(impl):
    from missrec.packed import dropout
    torch.manual_seed(0)
    y = dropout(torch.ones(200_000), 0.3, True)
    assert abs((y == 0).float().mean().item() - 0.3) < 0.01
    assert abs(y.mean().item() - 1.0) < 0.01
    assert torch.equal(dropout(torch.ones(5), 0.3, False), torch.ones(5))
    # A model in train mode with dropout > 0 really drops on the packed path.
    model, items = _setup(dropout=0.5)
    model.config.attention_impl = impl
    b = _batch(BATCHES["mix_1_2_50"])
    model.train()
    with torch.no_grad():
        u1, _ = model(b["seq"], b["length"], items)
        u2, _ = model(b["seq"], b["length"], items)
    assert (u1 - u2).abs().max() > 1e-3


@pytest.mark.parametrize("impl", PACKED_IMPLS)
def test_recommend_scores_equal_padded(tmp_path, impl):
    """missrec.recommend encodes through the configured path: its scores equal the padded path's."""
    from _tiny import make_domain

    from missrec.checkpoint import save_model
    from missrec.data.atomic import load_dataset
    from missrec.recommend import Recommender

    make_domain(tmp_path / "data")
    ds = load_dataset(tmp_path / "data", "tiny")
    cfg = MISSRecConfig(hidden_size=32, n_heads=2, inner_size=32, text_dim=16, image_dim=16, use_id=True,
                        n_items=ds.n_items, catalogue=ds.catalogue(), attention_impl=impl)
    torch.manual_seed(0)
    save_model(tmp_path / "ckpt", MISSRec(cfg))
    rec = Recommender(str(tmp_path / "ckpt"), str(tmp_path / "data"), "tiny", device="cpu")
    assert rec.model.config.attention_impl == impl
    for history in (["I1"], ["I3", "I7", "I1", "I12", "I5"], [f"I{i % 30}" for i in range(60)]):
        got = dict(rec.recommend(history, k=ds.n_items))
        rec.model.config.attention_impl = "padded"
        want = dict(rec.recommend(history, k=ds.n_items))
        rec.model.config.attention_impl = impl
        assert got.keys() == want.keys() and len(got) == ds.n_items
        _close(torch.tensor([got[k] for k in want]), torch.tensor(list(want.values())), f"scores of {history[:3]}")


# ----------------------------------------------------------------------------- fast-path specifics
# Batches big enough that runs of equal lengths become views (missrec/packed.py, _VIEW_MIN_ROWS)
# next to gathered buckets, as at MovieLens lengths (most rows full) and Amazon lengths (short).
_g = torch.Generator().manual_seed(7)
BIG = {
    "movielens_like": [50] * 30 + torch.randint(1, 50, (10,), generator=_g).tolist(),
    "amazon_like": (torch.distributions.Geometric(probs=torch.tensor(0.35)).sample((48,)).long() + 1)
    .clamp_max(50).tolist(),
}


@pytest.mark.parametrize("impl", PACKED_IMPLS)
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("reg", ["mean", "original"])
@pytest.mark.parametrize("name", list(BIG))
def test_view_blocks_and_last_position_decoder_equal_padded(name, reg, layers, impl):
    """Row sorting, view blocks, the last-position final decoder layer (all layers before it in
    full) and the text-only image broadcast: losses and gradients equal the padded path's."""
    model, items = _setup(dropout=0.0, interest_reg=reg, layers=layers, k=5)
    items.image = torch.zeros_like(items.image)  # text-only data
    assert items.image_is_zero()
    pad, pk = _pair(model, impl)
    b = _batch(BIG[name], seed=3)
    out = {}
    for tag, m in (("padded", pad), ("packed", pk)):
        m.train()
        loss, _ = FinetuneObjective(m, gamma_reg=0.5)(b, items)
        loss2, _ = PretrainObjective(m, gamma_reg=0.5, augmentation="both")(b, items)
        (loss + loss2).backward()
        out[tag] = (loss.detach(), loss2.detach(), _grads(m))
    (l1, p1, g1), (l2, p2, g2) = out["padded"], out["packed"]
    _close(l1, l2, "finetune loss")
    _close(p1, p2, "pretrain loss")
    assert g1.keys() == g2.keys()
    for k in g1:
        _close(g1[k], g2[k], f"gradient of {k}")


def test_text_only_item_reps_equal_the_full_table():
    """A zero image table is adapted once and broadcast: same reps, logits and gradients."""
    model, items = _setup()
    items.image = torch.zeros_like(items.image)
    u = torch.nn.functional.normalize(torch.randn(5, H), dim=-1)
    rt, rv, re = model.item_reps(items)
    assert rv.stride(0) == 0 and rv.shape == rt.shape
    full_rv = torch.nn.functional.normalize(model.img_adaptor(items.image[1:]), dim=-1)
    _close(rv, full_rv, "image reps")
    got = model.logits(u, (rt, rv, re))
    got.square().sum().backward()
    g_got = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    want = model.logits(u, (rt.detach(), full_rv, re.detach()))  # the same graph, unbroadcast
    rt, _, re = model.item_reps(items)
    want = model.logits(u, (rt, torch.nn.functional.normalize(model.img_adaptor(items.image[1:]), dim=-1), re))
    want.square().sum().backward()
    g_want = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    _close(got.detach(), want.detach(), "logits")
    assert g_got.keys() == g_want.keys()
    for k in g_want:
        _close(g_got[k], g_want[k], f"gradient of {k}")
    items.image[3, 0] = 1.0  # an in-place change is noticed
    assert not items.image_is_zero()


def _naive_attention(q, k, v, qs, ql, ks, kl):
    out = torch.empty_like(q)
    for r in range(len(ql)):
        qr, kr, vr = (t[s:s + n].transpose(0, 1) for t, s, n in ((q, qs[r], ql[r]), (k, ks[r], kl[r]), (v, ks[r], kl[r])))
        out[qs[r]:qs[r] + ql[r]] = torch.softmax(qr @ kr.transpose(-1, -2) / q.shape[-1] ** 0.5, -1).matmul(vr).transpose(0, 1)
    return out


@pytest.mark.parametrize("case", ["sorted_runs", "shuffled_rows", "one_query_per_row", "rows_out_of_layout_order"])
def test_plan_attention_equals_per_row_attention(case):
    """Every plan shape (views, buckets, segment softmax, rows laid out in any order) against a
    loop over rows. Every query and key token belongs to one row, as in the model."""
    from missrec import packed
    g = torch.Generator().manual_seed(0)
    kl = torch.tensor([50] * 12 + [7] * 9 + [3, 9, 1, 20, 2])
    if case == "shuffled_rows":
        kl = kl[torch.randperm(len(kl), generator=g)]
    ql = torch.ones_like(kl) if case == "one_query_per_row" else kl.clone()
    ks, qs = torch.cumsum(kl, 0) - kl, torch.cumsum(ql, 0) - ql
    if case == "rows_out_of_layout_order":  # row r's tokens anywhere; queries and keys in other orders
        for lens, starts in ((kl, ks), (ql, qs)):
            lay = torch.randperm(len(lens), generator=g)
            starts[lay] = torch.cumsum(lens[lay], 0) - lens[lay]
    nq, nk = int(ql.sum()), int(kl.sum())
    q, k, v = (torch.randn(n, 4, 8, generator=g, dtype=torch.float64, requires_grad=True) for n in (nq, nk, nk))
    plan = packed.plan_attention(qs, ql, ks, kl)
    if case == "one_query_per_row":
        assert isinstance(plan, packed.SegmentPlan)
    elif case == "sorted_runs":
        assert any(isinstance(b, packed.View) for b in plan.blocks) and plan.buckets
    got = packed.varlen_attention(q, k, v, plan)
    want = _naive_attention(q, k, v, qs.tolist(), ql.tolist(), ks.tolist(), kl.tolist())
    real = torch.zeros(nq, dtype=torch.bool)
    for s, n in zip(qs.tolist(), ql.tolist()):
        real[s:s + n] = True
    assert (got[real] - want[real]).abs().max() < 1e-10
    gg = torch.autograd.grad(got[real].sum(), (q, k, v))
    gw = torch.autograd.grad(want[real].sum(), (q, k, v))
    for a, b in zip(gg, gw):
        assert (a - b).abs().max() < 1e-10


@pytest.mark.parametrize("p", [0.0, 0.1, 0.2, 0.5, 1.0])
def test_keep_scale_is_inverted_dropout(p):
    from missrec.packed import keep_scale
    torch.manual_seed(0)
    m = keep_scale((400_000,), p)
    vals = torch.unique(m).tolist()
    if p == 1.0:
        assert vals == [0.0]
        return
    assert vals[-1] == pytest.approx(1 / (1 - p), rel=1e-4) and (len(vals) == 1 or vals == [0.0, vals[-1]])
    assert abs((m == 0).float().mean().item() - p) < 0.004  # ~5 standard errors
    assert abs(m.mean().item() - 1.0) < 0.01
    torch.manual_seed(0)
    assert torch.equal(keep_scale((400_000,), p), m)  # reproducible under torch.manual_seed
