import pytest
import torch

from missrec.config import MISSRecConfig
from missrec.items import ItemTable
from missrec.model import MISSRec
from missrec.objectives import FinetuneObjective, PretrainObjective

N, D, H = 20, 8, 16


def _setup():
    torch.manual_seed(0)
    model = MISSRec(MISSRecConfig(hidden_size=H, n_heads=2, inner_size=16, dropout=0.0, max_seq_length=6,
                                  text_dim=D, image_dim=D))
    g = torch.Generator().manual_seed(0)
    items = ItemTable(torch.randn(N + 1, D, generator=g), torch.randn(N + 1, D, generator=g),
                      torch.randn(N + 1, D, generator=g), hidden_size=H)
    items.discover_interests(model, 0.3, seed=0)
    seq = torch.tensor([[1, 2, 3, 0, 0, 0], [4, 5, 0, 0, 0, 0], [6, 7, 8, 9, 0, 0], [2, 0, 0, 0, 0, 0]])
    batch = {"seq": seq, "length": torch.tensor([3, 2, 4, 1]), "target": torch.tensor([10, 11, 10, 12]),
             "keep": torch.ones(4, 6, dtype=torch.bool)}
    return model, items, batch


def test_false_negative_masking_changes_only_duplicate_targets():
    model, items, batch = _setup()
    plain, _ = PretrainObjective(model, augmentation="item_drop")(batch, items)
    masked, _ = PretrainObjective(model, augmentation="item_drop", mask_false_negatives=True)(batch, items)
    assert masked < plain  # rows 0 and 2 share a target: removing that negative lowers their loss
    unique = dict(batch, target=torch.tensor([10, 11, 13, 12]))
    a, _ = PretrainObjective(model, augmentation="item_drop")(unique, items)
    b, _ = PretrainObjective(model, augmentation="item_drop", mask_false_negatives=True)(unique, items)
    assert torch.equal(a, b)


def test_word_drop_view_uses_feat2cls_and_needs_it():
    model, items, batch = _setup()
    with torch.no_grad():
        u, _ = model(batch["seq"], batch["length"], items)
        u_aug, _ = model(batch["seq"], batch["length"], items, text_table=items.text_aug)
    assert not torch.allclose(u, u_aug)
    items.text_aug = None
    with pytest.raises(ValueError, match="feat2CLS"):
        PretrainObjective(model, augmentation="word_drop")(batch, items)


def test_finetune_loss_is_full_softmax_without_padding():
    model, items, batch = _setup()
    loss, logs = FinetuneObjective(model, gamma_reg=0.0)(batch, items)
    u, _ = model(batch["seq"], batch["length"], items)
    logits = model.logits(u, model.item_reps(items, torch.arange(1, N + 1)))
    assert logits.shape == (4, N)  # padding item 0 is not a class
    ref = torch.nn.functional.cross_entropy(logits, batch["target"] - 1)
    assert torch.allclose(loss, ref)


def test_pretraining_with_all_items_as_negatives_is_a_full_softmax():
    model, items, batch = _setup()
    model.eval()  # no dropout: both forwards see the same user vectors
    obj = PretrainObjective(model, augmentation="item_drop", lambda_seq=0.0, gamma_reg=0.0, negatives="all_items")
    loss, logs = obj(batch, items)
    u, _ = model(batch["seq"], batch["length"], items)
    logits = model.logits(u, model.item_reps(items, torch.arange(1, N + 1)))
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(logits, batch["target"] - 1))
    assert torch.allclose(logs["loss_seq_item"], loss)
    # In-batch negatives score only the batch's own targets: another loss on the same batch.
    in_batch, _ = PretrainObjective(model, augmentation="item_drop", lambda_seq=0.0, gamma_reg=0.0)(batch, items)
    assert not torch.allclose(in_batch, loss)
    with pytest.raises(ValueError, match="in_batch|all_items"):
        PretrainObjective(model, negatives="everything")
