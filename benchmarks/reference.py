"""Re-creations of the original MISSRec implementation's hot spots, for side-by-side timing only.

Written for this benchmark after reading the original code (gimpong/MM23-MISSRec: ``missrec.py``,
``data/transform.py``, ``cluster_utils.py``, ``torchpq/clustering/MinibatchKMeans.py``,
``trainer.py``, ``recbole/evaluator/collector.py``); nothing here is imported by the library.
Each function keeps the original's *computational structure* -- what runs in a Python loop,
what gets materialised, which device it runs on, fp32 throughout -- because that is what is
timed. The model pieces run on the weights of one of our :class:`missrec.model.MISSRec` modules,
so ours and the reference compute the same function and their outputs can be cross-checked.

The hot spots:

* interest tokens: a per-sample ``sample.unique()`` loop + ``pad_sequence`` (the padding id 0 is
  kept as a token and masked in attention);
* interest discovery: torchpq's ``MinibatchKMeans`` CPU path as ``cluster_kmeans`` drives it:
  random centres from the first mini-batch, one pass over mini-batches of ``max(2048, 1.1 K)``
  rows (its error is computed after the update, so it is always 0 and the loop stops after that
  pass), a per-cluster Python loop for the means, then a second assignment pass (``predict``);
* fused logits: ``torch.stack([text, img], -1)`` -> ``[B, M, 2]``, softmax weighting, sum;
* pretraining: the dataloader transform on the CPU feature tables, the batch moved to the
  device, then every tensor of the batch re-wrapped in a fresh ``DataLoader`` +
  ``DistributedSampler`` per step (which collates it back sample by sample);
* evaluation: the adaptors re-run over the whole catalogue per batch, the ``[B, N + 1]`` score
  matrix, ``topk`` and RecBole's ``[B, N + 1]`` positive-item matrix.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


# ----------------------------------------------------------------------------- interest tokens
def ref_interest_tokens(text_ids: torch.Tensor, image_ids: torch.Tensor):
    """Per-sample dedup loop of the original; returns (tokens incl. the 0 token, lengths)."""
    all_interest_seq = torch.cat([text_ids, image_ids], dim=-1)
    seqs, lens = [], []
    for sample in all_interest_seq:
        u = sample.unique()
        lens.append(len(u))
        seqs.append(u)
    out = nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=0)
    return out, torch.tensor(lens, device=out.device)


# ----------------------------------------------------------------------------- k-means
class RefMinibatchKMeans:
    """torchpq MinibatchKMeans, euclidean, on the CPU (the path the original's pretraining took).

    Data is ``[d, n]`` (column vectors) as in torchpq. ``memory_budget`` stands in for torchpq's
    "remaining memory" (it assumes 32 GiB on a CPU), which only decides how many row partitions a
    similarity matrix is cut into; the work done is the same.
    """

    def __init__(self, n_clusters: int, memory_budget: int = 2 * 2**30, seed: int = 0):
        self.n_clusters = n_clusters
        self.remaining = memory_budget
        self.centroids = None
        self.n_points_in_clusters = None
        self.error = 1e32
        self.inertia = 1e32
        self.rng = np.random.RandomState(seed)

    @staticmethod
    def euc_sim(a, b):
        # The in-place variant torchpq's get_labels uses: squares then square-roots a and b in
        # place, which leaves |x| behind in both (as in the original).
        y = a.transpose(-2, -1) @ b
        y.mul_(2)
        a.pow_(2)
        b.pow_(2)
        y.sub_(a.sum(dim=0)[..., :, None])
        y.sub_(b.sum(dim=0)[..., None, :])
        a.sqrt_()
        b.sqrt_()
        return y

    def get_labels(self, data, centroids):
        d, m = data.shape
        n = centroids.shape[1]
        n_partitions = 1
        for _ in range(16):
            sub_m = math.ceil(m / n_partitions)
            required = (sub_m * n + max(sub_m, n)) * data.element_size() + m * 8
            if required < self.remaining:
                break
            n_partitions *= 2
        sub_m = math.ceil(m / n_partitions)
        maxsims = torch.zeros(m, device=data.device, dtype=torch.float)
        labels = torch.zeros(m, device=data.device, dtype=torch.long)
        for i in range(n_partitions):
            start = i * sub_m
            if start > m:
                break
            end = min((i + 1) * sub_m, m)
            sub = torch.narrow(data, dim=1, start=start, length=end - start)
            sims = self.euc_sim(sub, centroids)
            s, lab = sims.max(dim=-1)
            labels[start:end] = lab
            maxsims[start:end] = s
        return maxsims, labels

    def compute_centroids_loop(self, data, labels, max_iters: int | None = None):
        """One Python iteration per non-empty cluster (``max_iters`` cuts it short, for timing probes)."""
        centroids = torch.zeros(data.shape[0], self.n_clusters, device=data.device)
        unique_labels, counts = labels.unique(return_counts=True)
        for j, (i, count) in enumerate(zip(unique_labels, counts)):
            if max_iters is not None and j >= max_iters:
                break
            centroids[:, i] = data[:, labels == i].sum(dim=1) / count
        return centroids

    def fit_minibatch(self, data):
        data = data.contiguous()
        assert data.shape[1] >= self.n_clusters, "mini-batch smaller than the number of clusters"
        if self.centroids is None:
            idx = self.rng.choice(data.shape[1], size=[self.n_clusters], replace=False)
            self.centroids = data[:, idx].clone()
        if self.n_points_in_clusters is None:
            self.n_points_in_clusters = torch.ones(self.n_clusters, device=data.device, dtype=torch.float32)
        maxsims, labels = self.get_labels(data, self.centroids)
        c_delta = self.compute_centroids_loop(data, labels)
        weights = 1 / self.n_points_in_clusters[None]
        centroids = self.centroids * (1 - weights) + c_delta * weights
        self.centroids[:] = centroids
        unique_labels, counts = labels.unique(return_counts=True)
        self.n_points_in_clusters[unique_labels] += counts
        self.inertia = (-maxsims).mean().item()
        # Measured after the in-place update above, hence always 0: the original's early stop.
        self.error = ((centroids - self.centroids) ** 2).sum().item()
        return labels

    def predict(self, query):
        return self.get_labels(query, self.centroids)[1]


def ref_batch_size(k: int, batch_size: int = 2048) -> int:
    return int(k * 1.1) if batch_size <= k else batch_size


def ref_cluster_kmeans(all_tokens: torch.Tensor, cluster_num: int, batch_size: int = 2048, niter: int = 5,
                       tol: float = 1e-5, seed: int = 0):
    """``cluster_utils.cluster_kmeans`` on the CPU: returns (labels 0..K-1, centroids [K, D])."""
    all_tokens = all_tokens.detach().to("cpu", torch.float32).clone()  # the original clobbers its input
    batch_size = ref_batch_size(cluster_num, batch_size)
    km = RefMinibatchKMeans(cluster_num, seed=seed)
    n = len(all_tokens)
    for _ in range(niter):
        for ptr in range(0, n, batch_size):
            remaining = n - ptr - batch_size
            offset = batch_size + remaining if remaining <= cluster_num else batch_size
            km.fit_minibatch(all_tokens[ptr:ptr + offset].T)
            if remaining <= cluster_num:
                break
        if km.error < tol:
            break
    labels = torch.cat([km.predict(all_tokens[p:p + batch_size].T) for p in range(0, n, batch_size)])
    return labels, km.centroids.T.clone()


# ----------------------------------------------------------------------------- model pieces
def _gather_indexes(output, gather_index):
    gather_index = gather_index.view(-1, 1, 1).expand(-1, -1, output.shape[-1])
    return output.gather(dim=1, index=gather_index).squeeze(1)


def ref_forward(m, item_seq, item_emb, item_seq_len, interest_seq, interest_emb):
    """``MISSRec.forward`` of the original ('add' sequence fusion, non-causal masks)."""
    src_key_padding_mask = interest_seq == 0
    position_ids = torch.arange(item_seq.size(1), dtype=torch.long, device=item_seq.device)
    dec = item_emb + m.position_embedding(position_ids)
    if m.item_embedding is not None:
        dec = dec + m.item_embedding(item_seq)
    dec = m.dropout(m.LayerNorm(dec))
    tgt_key_padding_mask = item_seq == 0
    memory = m.trm_model.encoder(src=interest_emb, mask=None, src_key_padding_mask=src_key_padding_mask)
    w = (~src_key_padding_mask).unsqueeze(-1).float().mean(1, keepdim=True)
    pooled = (memory * w).sum(1)
    reg = (pooled * pooled).sum() / pooled.shape[1]
    out = m.trm_model.decoder(dec, memory, tgt_mask=None, memory_mask=None,
                              tgt_key_padding_mask=tgt_key_padding_mask,
                              memory_key_padding_mask=src_key_padding_mask)
    return _gather_indexes(out, item_seq_len - 1), reg.mean()


def ref_fused_logits(m, seq_output, text_emb, img_emb, with_id: bool):
    """``_compute_dynamic_fused_logits``: the ``[B, M, 2]`` modality tensor, softmax-weighted, summed."""
    text_emb = F.normalize(text_emb, dim=1)
    img_emb = F.normalize(img_emb, dim=1)
    text_logits = seq_output @ text_emb.transpose(0, 1)
    img_logits = seq_output @ img_emb.transpose(0, 1)
    modality_logits = torch.stack([text_logits, img_logits], dim=-1)
    agg = (modality_logits * F.softmax(modality_logits * m.fusion_factor.unsqueeze(-1), dim=-1)).sum(dim=-1)
    if with_id and m.item_embedding is not None:
        id_logits = seq_output @ F.normalize(m.item_embedding.weight, dim=1).transpose(0, 1)
        agg = (id_logits + agg * 2) / 3
    return agg


class RefTables:
    """The original's per-dataset lookup tables (features, empty masks, interest ids, centroids)."""

    def __init__(self, items, device="cpu"):
        self.text = items.text.detach().float().to(device)
        self.image = items.image.detach().float().to(device)
        self.text_empty = ~self.text.sum(-1).bool()
        self.image_empty = ~self.image.sum(-1).bool()
        self.text_interest = items.text_interest.to(device)
        self.image_interest = items.image_interest.to(device)
        self.interest_embeddings = items.centroids.detach().float().to(device)


def ref_seq_embeddings(m, t: RefTables, item_seq, item_seq_len):
    """``_compute_seq_embeddings`` (finetuning / evaluation): lookups, dedup loop, forward."""
    text_emb = m.text_adaptor(t.text[item_seq])
    _ = t.text_empty[item_seq]  # computed by the original, used only by 'contextual' fusion
    img_emb = m.img_adaptor(t.image[item_seq])
    _ = t.image_empty[item_seq]
    uniq, _lens = ref_interest_tokens(t.text_interest[item_seq], t.image_interest[item_seq])
    out, reg = ref_forward(m, item_seq, text_emb + img_emb, item_seq_len, uniq, t.interest_embeddings[uniq])
    return F.normalize(out, dim=1), reg


def ref_finetune_loss(m, t: RefTables, batch, gamma: float = 1e-4):
    """``calculate_loss`` in a finetuning stage: logits over all N + 1 items (padding is a class)."""
    seq_output, reg = ref_seq_embeddings(m, t, batch["item_id_list"], batch["item_length"])
    logits = ref_fused_logits(m, seq_output, m.text_adaptor(t.text), m.img_adaptor(t.image), with_id=True)
    logits = logits / m.config.temperature
    return F.cross_entropy(logits, batch["item_id"]) + gamma * reg


def ref_full_sort_predict(m, t: RefTables, item_seq, item_seq_len):
    seq_output, _ = ref_seq_embeddings(m, t, item_seq, item_seq_len)
    return ref_fused_logits(m, seq_output, m.text_adaptor(t.text), m.img_adaptor(t.image),
                            with_id=True) / m.config.temperature


def ref_eval_batch(m, t: RefTables, item_seq, item_seq_len, pos_item, topk: int = 50):
    """One RecBole full-sort evaluation batch: scores, padding at -inf, topk, the positives matrix.

    Returns the collected ``[B, topk + 1 + 1]`` int tensor on the CPU (hits in the top list, then
    the number of positives), as RecBole's collector stores it.
    """
    scores = ref_full_sort_predict(m, t, item_seq, item_seq_len)
    scores = scores.view(-1, t.text.shape[0])
    scores[:, 0] = -np.inf
    _, topk_idx = torch.topk(scores, topk + 1, dim=-1)
    pos_matrix = torch.zeros_like(scores, dtype=torch.int)
    pos_matrix[torch.arange(len(pos_item), device=scores.device), pos_item] = 1
    pos_len = pos_matrix.sum(dim=1, keepdim=True)
    pos_idx = torch.gather(pos_matrix, dim=1, index=topk_idx)
    return torch.cat((pos_idx, pos_len), dim=1).cpu().clone()


def metrics_from_topk(collected: torch.Tensor, k: int) -> dict:
    """Hit@k and NDCG@k (one positive per row) from RecBole-style collected rows."""
    hits = collected[:, :k].float()
    gain = 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float))
    return {f"recall@{k}": float(hits.sum(1).clamp_max(1).mean()), f"ndcg@{k}": float((hits * gain).sum(1).mean())}


# ----------------------------------------------------------------------------- pretraining step
def ref_pretrain_transform(t: RefTables, inter: dict, item_drop_ratio: float = 0.2, gen=None) -> dict:
    """``PLMImgInterestEmb.__call__`` (item-drop branch) on the CPU tables of the dataset."""
    item_seq, item_seq_len = inter["item_id_list"], inter["item_length"]
    text_emb_seq = t.text[item_seq]
    img_emb_seq = t.image[item_seq]
    text_empty_seq = t.text_empty[item_seq]
    img_empty_seq = t.image_empty[item_seq]
    text_interest_seq = t.text_interest[item_seq]
    img_interest_seq = t.image_interest[item_seq]
    uniq, uniq_len = ref_interest_tokens(text_interest_seq, img_interest_seq)
    uniq_emb = t.interest_embeddings[uniq]
    pos = inter["item_id"]
    pos_text_emb, pos_img_emb = t.text[pos], t.image[pos]

    mask_p = torch.full_like(item_seq, 1 - item_drop_ratio, dtype=torch.float)
    mask = torch.bernoulli(mask_p, generator=gen).to(torch.bool)
    # Item drop (the branch taken 90% of the time; the 10% word-drop branch needs .feat2CLS).
    mask = torch.logical_or(mask, item_seq.eq(0))
    mask[:, 0] = True
    drop_index = torch.cumsum(mask, dim=1) - 1
    item_seq_aug = torch.zeros_like(item_seq).scatter(dim=-1, index=drop_index, src=item_seq)
    item_seq_len_aug = torch.gather(drop_index, 1, (item_seq_len - 1).unsqueeze(1)).squeeze() + 1
    text_emb_seq_aug = t.text[item_seq_aug]
    text_empty_seq_aug = t.text_empty[item_seq_aug]
    text_interest_seq_aug = t.text_interest[item_seq_aug]
    uniq_aug, uniq_len_aug = ref_interest_tokens(text_interest_seq_aug, img_interest_seq)
    uniq_emb_aug = t.interest_embeddings[uniq_aug]
    out = dict(inter)
    out.update({
        "text_emb_list": text_emb_seq, "text_emb_empty_mask_list": text_empty_seq,
        "img_emb_list": img_emb_seq, "img_emb_empty_mask_list": img_empty_seq,
        "pos_text_emb": pos_text_emb, "pos_img_emb": pos_img_emb,
        "item_id_list_aug": item_seq_aug, "item_length_aug": item_seq_len_aug,
        "text_emb_list_aug": text_emb_seq_aug, "text_emb_empty_mask_list_aug": text_empty_seq_aug,
        "unique_interest_list": uniq, "unique_interest_emb_list": uniq_emb, "unique_interest_len": uniq_len,
        "unique_interest_list_aug": uniq_aug, "unique_interest_emb_list_aug": uniq_emb_aug,
        "unique_interest_len_aug": uniq_len_aug,
    })
    return out


def ref_trans_dataload(inter: dict) -> dict:
    """``_trans_dataload`` of the DDP trainers: a new DataLoader + DistributedSampler per tensor, per step."""
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    def sub_trans(dataset):
        loader = DataLoader(dataset=dataset, batch_size=dataset.shape[0],
                            sampler=DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=False))
        for data in loader:
            batch_data = data
        return batch_data

    return {k: sub_trans(v) for k, v in inter.items()}


def ref_pretrain_loss(m, inter: dict, lam: float = 1e-3, gamma: float = 1e-4):
    """``MISSRec.pretrain``: seq->item on fused in-batch logits + lam seq->seq + gamma regularisers."""
    tau = m.config.temperature
    img_emb = m.img_adaptor(inter["img_emb_list"])
    seq_output, reg = ref_forward(m, inter["item_id_list"], m.text_adaptor(inter["text_emb_list"]) + img_emb,
                                  inter["item_length"], inter["unique_interest_list"],
                                  inter["unique_interest_emb_list"])
    seq_output = F.normalize(seq_output, dim=1)
    labels = torch.arange(seq_output.shape[0], device=seq_output.device)
    logits = ref_fused_logits(m, seq_output, m.text_adaptor(inter["pos_text_emb"]),
                              m.img_adaptor(inter["pos_img_emb"]), with_id=False) / tau
    loss_si = F.cross_entropy(logits, labels)
    seq_aug, reg_aug = ref_forward(m, inter["item_id_list_aug"], m.text_adaptor(inter["text_emb_list_aug"]) + img_emb,
                                   inter["item_length_aug"], inter["unique_interest_list_aug"],
                                   inter["unique_interest_emb_list_aug"])
    seq_aug = F.normalize(seq_aug, dim=1)
    loss_ss = F.cross_entropy(seq_output @ seq_aug.transpose(0, 1) / tau, labels)
    return loss_si + lam * loss_ss + gamma * (reg + reg_aug)
