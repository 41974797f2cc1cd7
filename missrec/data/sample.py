"""Embedded sample data: a seeded, small, multi-modal, multi-domain catalogue with real structure.

Why it is learnable (and why pretraining helps), in one paragraph. All domains share one latent
space (``latent_dim`` = 32) with ``n_topics`` topic centres (24, in 6 groups of 4 related topics),
one topic-to-topic transition map ``A`` and one pair of feature projections ``W_t``/``W_v``. An
item's latent is ``z = centre(topic) + noise``; its CLIP-like text feature is ``W_t z + noise``
and its image feature ``W_v z + noise`` (512-d, norms ~10 like unnormalised CLIP outputs). A
user's next item is, with the largest share, drawn near ``A z_last`` (weighted by item
popularity): the next item depends on the *last item's latent*, which the features reveal through
the shared ``W``. The rest of the steps come from the user's own topic preference, from global
popularity and, for a small share, uniformly at random. So popularity beats random (Zipf
popularity), "most frequent successor of the last item" beats popularity (the transition), a
feature-based sequence model can beat the successor counts on sparse items (it can generalise
``A`` through the features), and a model pretrained on the large source domains has already
learned ``A`` and ``W`` when it meets a small target domain.

What is written (the atomic-file formats of missrec/data/atomic.py), under ``<root>``:

* ``sample_a/``, ``sample_b/``: the small *target* domains, each a single-domain dataset folder
  (``.train/.valid/.test.inter``, ``.item2index``, ``.user2index``, ``.text``, ``.feat1CLS``
  text, ``.feat3CLS`` image, ``.feat2CLS`` = the text feature plus extra noise, standing in for
  the feature of the text with words dropped, ``.meta.json``) plus ``images/<raw_id>.png``
  (32x32, colour and pattern driven by the latent; none for image-missing items).
* ``sample_pt/``: the pretraining corpus of the *source* domains ``sample_s0..`` with
  ``sample_pt.pt_datasets``, ``sample_pt.{train,valid,test}.inter`` (``"<domain>-<idx>"`` tokens)
  and per-domain ``sample_s*.item2index/.user2index/.text/.feat1CLS/.feat2CLS/.feat3CLS``.

A share of items (``missing_share``, default 5%) lacks one modality: half of them have no text
(empty title, zero text rows), half no image (zero image row, no PNG).

Same seed and sizes => byte-identical files on the same platform. :func:`ensure_sample` builds the
default sample on first use under ``$MISSREC_DATA_ROOT`` (or ``./data``) ``/sample``.

Longer than ~500 lines on purpose: it is one generator whose steps draw from one seeded random
stream in a fixed order (world, then each domain, then the files); kept in one file so that the
order, which the byte-identical guarantee depends on, reads top to bottom. The command line
(``missrec-sample``) is missrec/recipes/sample.py.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from filelock import FileLock

from ..errors import MissingFileError, OptionError, UserError
from ..fsutil import atomic_dir, atomic_write_json, atomic_write_text, sha256_file
from .split import leave_one_out, padded
from .atomic import (FEATURE_SUFFIXES, MAX_LEN, Split, write_dataset, write_features,
                     write_index_map, write_inter, write_text)

GENERATOR_VERSION = 1
MARKER = ".missrec_sample.json"
TARGET_PREFIX = "sample_"
SOURCE_PREFIX = "sample_s"
CORPUS = "sample_pt"


@dataclass(frozen=True)
class SampleConfig:
    """Sizes and behaviour of the generated catalogue (defaults: the shipped sample)."""

    n_sources: int = 5
    n_targets: int = 2
    source_items: int = 1000
    source_users: int = 1200
    target_items: int = 500
    target_users: int = 300
    min_len: int = 5
    max_len: int = 30
    mean_extra_len: float = 5.0  # length = min_len + Geometric(mean ~ this), capped at max_len
    n_topics: int = 24
    topics_per_group: int = 4
    latent_dim: int = 32
    feat_dim: int = 512
    item_noise: float = 0.4  # item-specific latent spread around its topic centre (topics are ~1.1 apart)
    text_noise: float = 0.35  # feature noise, relative to the signal's per-dim scale
    image_noise: float = 0.5
    aug_noise: float = 0.25  # extra noise of the "word-dropped" text feature (.feat2CLS)
    missing_share: float = 0.05
    zipf: float = 1.1  # within-topic popularity exponent
    kernel_width: float = 0.2  # how tightly the next latent follows A z_last (latent distance units)
    p_transition: float = 0.6  # mixture of the next-item choice (the rest is uniform random)
    p_preference: float = 0.22
    p_popularity: float = 0.12
    user_concentration: float = 0.3  # Dirichlet concentration of a user's topic preference
    image_size: int = 32
    target_images: bool = True
    source_images: bool = False

    def __post_init__(self):
        groups = -(-self.n_topics // self.topics_per_group)
        if self.latent_dim < self.n_topics + groups:
            raise OptionError(f"latent_dim ({self.latent_dim}) must be >= n_topics + topic groups "
                             f"({self.n_topics} + {groups})")
        if not 3 <= self.min_len <= self.max_len:
            raise OptionError(f"need 3 <= min_len <= max_len (each user needs train/valid/test items), "
                             f"got {self.min_len}..{self.max_len}")
        if min(self.p_transition, self.p_preference, self.p_popularity) < 0 or \
                self.p_transition + self.p_preference + self.p_popularity > 1:
            raise OptionError("p_transition, p_preference, p_popularity must be >= 0 and sum to <= 1")
        if self.n_targets > 26:
            raise OptionError("at most 26 target domains (named sample_a .. sample_z)")
        for f in ("n_sources", "n_targets"):
            if getattr(self, f) < 0:
                raise OptionError(f, "must be >= 0")
        for f in ("source_items", "source_users", "target_items", "target_users"):
            if getattr(self, f) < 2:
                raise OptionError(f, "must be >= 2")
        # Bounded before anything is allocated: the transition kernel is [items x items] per domain
        # (float64, a few copies) and every domain's features are held until written.
        for f, most in LIMITS.items():
            if getattr(self, f) > most:
                raise OptionError(f, f"{getattr(self, f):,} is too large: at most {most:,} (the generator keeps "
                                     f"{LIMIT_WHY[f]} in memory)")
        total = self.n_sources * self.source_items + self.n_targets * self.target_items
        if total > MAX_TOTAL_ITEMS:
            raise OptionError(f"n_sources x source_items + n_targets x target_items is {total:,} items; at most "
                              f"{MAX_TOTAL_ITEMS:,} (their features are held in memory until written)")


# Largest sizes the generator accepts (peak memory stays within a few GB at these).
LIMITS = {"source_items": 10_000, "target_items": 10_000, "source_users": 1_000_000, "target_users": 1_000_000,
          "n_sources": 100}
LIMIT_WHY = {"source_items": "an items x items transition matrix", "target_items": "an items x items transition matrix",
             "source_users": "every user's history and topic mix", "target_users": "every user's history and topic mix",
             "n_sources": "every domain's features"}
MAX_TOTAL_ITEMS = 200_000


def target_names(n_targets: int) -> list[str]:
    return [f"{TARGET_PREFIX}{chr(ord('a') + i)}" for i in range(n_targets)]


def source_names(n_sources: int) -> list[str]:
    return [f"{SOURCE_PREFIX}{i}" for i in range(n_sources)]


# ----------------------------------------------------------------------------- words
# Six topic groups of four topics. Topics of one group share the group's words, so titles of
# related topics overlap (as related products do), and each topic adds its own words.
_GROUPS = [
    ("Lab", "Laboratory", "Specimen", "Reagent", "Sample", "Analytical"),
    ("Kitchen", "Cooking", "Food-Grade", "Dishwasher-Safe", "Chef", "Pantry"),
    ("Music", "Instrument", "Musician", "Stage", "Studio", "Tuning"),
    ("Office", "Desk", "Stationery", "Business", "School", "Filing"),
    ("Art", "Craft", "Artist", "Hobby", "Handmade", "Creative"),
    ("Outdoor", "Camping", "Trail", "Weatherproof", "Garden", "Adventure"),
]
_TOPICS = [
    ("Borosilicate", "Beaker", "Flask", "Graduated", "Glass", "Cylinder"),
    ("Microscope", "Slide", "Lens", "Magnifier", "Optical", "Cover-Slip"),
    ("Multimeter", "Probe", "Digital", "Voltage", "Sensor", "Calibration"),
    ("Nitrile", "Gloves", "Goggles", "Safety", "Lab-Coat", "Protective"),
    ("Baking", "Whisk", "Silicone", "Mold", "Rolling-Pin", "Cookie"),
    ("Coffee", "Espresso", "Grinder", "Tea", "Kettle", "Pour-Over"),
    ("Spice", "Organic", "Seasoning", "Pepper", "Herb", "Jar"),
    ("Skillet", "Cast-Iron", "Nonstick", "Saucepan", "Dutch-Oven", "Lid"),
    ("Guitar", "Strings", "Acoustic", "Pick", "Capo", "Fretboard"),
    ("Keyboard", "Piano", "Sustain", "Pedal", "Digital", "Keys"),
    ("Drum", "Sticks", "Snare", "Cymbal", "Percussion", "Drumhead"),
    ("Microphone", "Audio", "Interface", "Headphones", "XLR", "Monitor"),
    ("Notebook", "Ruled", "Paper", "Spiral", "Journal", "Dotted"),
    ("Gel", "Pen", "Ink", "Fine-Point", "Rollerball", "Refill"),
    ("Organizer", "Tray", "Stapler", "Binder", "Clip", "Drawer"),
    ("Label", "Printer", "Toner", "Cartridge", "Laminator", "Tape"),
    ("Acrylic", "Paint", "Brush", "Canvas", "Palette", "Watercolor"),
    ("Sketch", "Pencil", "Charcoal", "Eraser", "Drawing", "Sketchbook"),
    ("Yarn", "Knitting", "Needle", "Crochet", "Thread", "Sewing"),
    ("Clay", "Sculpting", "Pottery", "Glaze", "Kiln", "Modeling"),
    ("Tent", "Sleeping-Bag", "Lantern", "Backpack", "Camp", "Stove"),
    ("Seeds", "Trowel", "Planter", "Pruning", "Hose", "Soil"),
    ("Bike", "Helmet", "Pump", "Cycling", "Saddle", "Chain"),
    ("Fishing", "Rod", "Reel", "Lure", "Tackle", "Line"),
]
_SPECS = ("250 ml", "500 ml", "Pack of 6", "Set of 12", "Large", "Compact", "2-Pack", "10 Pieces",
          "Professional", "Starter Kit", "Heavy Duty", "Travel Size", "Deluxe", "Mini", "XL", "Refill Pack")
_BRAND_A = ("Vel", "Nor", "Ast", "Cor", "Lum", "Tera", "Quin", "Bri", "Zen", "Oru", "Pax", "Mira")
_BRAND_B = ("tra", "ova", "ex", "ion", "ara", "ix", "olo", "enza", "ite", "umo")


# ----------------------------------------------------------------------------- the shared world
@dataclass
class _World:
    centres: np.ndarray  # [K, D]
    group_of: np.ndarray  # [K]
    A: np.ndarray  # [D, D] latent transition (orthogonal)
    W_t: np.ndarray  # [F, D]
    W_v: np.ndarray  # [F, D]
    m_t: np.ndarray  # [F] modality offsets (CLIP embeddings of one modality share a mean direction)
    m_v: np.ndarray
    colour: np.ndarray  # [3, D] latent -> RGB for the PNGs
    word_dirs: np.ndarray  # [K, n_words, D] direction of each word of a topic (item noise picks words)
    scale: tuple[float, float]  # per-dim rms of W_t z, W_v z (noise is relative to it)
    norm: tuple[float, float]  # final multipliers giving feature norms ~10


def _make_world(cfg: SampleConfig, rng: np.random.Generator) -> _World:
    K, D, F, tpg = cfg.n_topics, cfg.latent_dim, cfg.feat_dim, cfg.topics_per_group
    G = -(-K // tpg)
    group_of = np.arange(K) // tpg
    Q, _ = np.linalg.qr(rng.standard_normal((D, D)))
    # Centres in an orthonormal basis: a shared group axis + an own topic axis, so topics of a
    # group are closer to each other than to other topics.
    coords = np.zeros((K, D))
    coords[np.arange(K), group_of] = 0.6
    coords[np.arange(K), G + np.arange(K)] = 0.8
    centres = coords @ Q.T
    # Topic transition: groups follow one cycle (never stay in the group), topics inside a group
    # are permuted. P maps basis axes accordingly; the unused axes get a random rotation, so
    # A = Q P Q^T is orthogonal and A @ centre(k) = centre(pi(k)) exactly.
    cycle = rng.permutation(G)
    sigma = np.empty(G, dtype=np.int64)
    sigma[cycle] = np.roll(cycle, -1)
    P = np.zeros((D, D))
    P[sigma, np.arange(G)] = 1.0
    pi = np.empty(K, dtype=np.int64)
    for g in range(G):
        members = np.flatnonzero(group_of == g)
        dest = np.flatnonzero(group_of == sigma[g])
        m = min(len(members), len(dest))
        pi[members[:m]] = dest[rng.permutation(len(dest))[:m]]
        # Groups of unequal size (n_topics not a multiple of topics_per_group): wrap around.
        pi[members[m:]] = dest[rng.integers(0, len(dest), len(members) - m)]
    P[G + pi, G + np.arange(K)] = 1.0
    rest = D - G - K
    if rest:
        R, _ = np.linalg.qr(rng.standard_normal((rest, rest)))
        P[G + K:, G + K:] = R
    # With pi not a bijection (unequal groups) P is not orthogonal; it still maps centres right.
    A = Q @ P @ Q.T
    W_t = rng.standard_normal((F, D)) / np.sqrt(D)
    W_v = rng.standard_normal((F, D)) / np.sqrt(D)
    # Per-dim signal scale of W z for a typical item latent, from a fixed probe of latents.
    probe = centres[rng.integers(0, K, 4096)] + cfg.item_noise * rng.standard_normal((4096, D)) / np.sqrt(D)
    st, sv = np.sqrt(((probe @ W_t.T) ** 2).mean()), np.sqrt(((probe @ W_v.T) ** 2).mean())
    # Embeddings of one CLIP modality share a large common direction (random pairs have cosine
    # ~0.5): an offset as large as the signal.
    m_t = rng.standard_normal(F) * st
    m_v = rng.standard_normal(F) * sv
    # Final scale: norms ~10, like unnormalised CLIP ViT-B/32 outputs.
    nt = 10.0 / np.sqrt(F * st ** 2 * (2 + cfg.text_noise ** 2))
    nv = 10.0 / np.sqrt(F * sv ** 2 * (2 + cfg.image_noise ** 2))
    colour = rng.standard_normal((3, D)) * 2.0
    n_words = len(_GROUPS[0]) + len(_TOPICS[0])
    word_dirs = rng.standard_normal((K, n_words, D))
    return _World(centres, group_of, A, W_t, W_v, m_t, m_v, colour, word_dirs, (st, sv), (nt, nv))


# ----------------------------------------------------------------------------- one domain
@dataclass
class _Domain:
    name: str
    raw_ids: list[str]
    user_ids: list[str]
    topic: np.ndarray  # [n_items]
    z: np.ndarray  # [n_items, D]
    text: np.ndarray  # [n_items, F] float32
    text_aug: np.ndarray
    image: np.ndarray
    missing_text: np.ndarray  # [n_items] bool
    missing_image: np.ndarray
    titles: list[str]
    seqs: np.ndarray  # [n_users, max_len] 0-based item indices, -1 padding
    lens: np.ndarray  # [n_users]


class _Rows:
    """Many categorical distributions (one per row), sampled by inverse CDF all at once.

    Offsetting row r of the CDF by r makes the flattened matrix globally sorted, so a single
    ``searchsorted`` draws for every requested row (no per-row Python work).
    """

    def __init__(self, weights: np.ndarray):
        weights = np.atleast_2d(weights)
        cdf = np.cumsum(weights, axis=1)
        cdf /= cdf[:, -1:]
        cdf[:, -1] = 1.0
        self.n = cdf.shape[1]
        self.flat = (cdf + np.arange(cdf.shape[0])[:, None]).ravel()

    def sample(self, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.flat, rows + u, side="right") - rows * self.n


def _make_domain(cfg: SampleConfig, world: _World, name: str, n_items: int, n_users: int,
                 first_item: int, first_user: int, rng: np.random.Generator) -> _Domain:
    K, D = world.centres.shape
    # Item catalogue: the domain favours some topics (its "category mix").
    topic_mix = rng.dirichlet(np.full(K, 1.0))
    topic = rng.choice(K, size=n_items, p=topic_mix)
    z = world.centres[topic] + cfg.item_noise * rng.standard_normal((n_items, D)) / np.sqrt(D)
    # Zipf popularity inside each topic, in a random order of the topic's items.
    order = rng.permutation(n_items)
    rank = np.empty(n_items, dtype=np.int64)
    for k in range(K):
        members = order[topic[order] == k]
        rank[members] = np.arange(len(members))
    pop = (rank + 1.0) ** -cfg.zipf

    # Transition kernel: next item near A z_last, weighted by popularity; never the same item.
    mu = z @ world.A.T
    d2 = (mu ** 2).sum(1)[:, None] + (z ** 2).sum(1)[None, :] - 2 * mu @ z.T
    logits = -np.maximum(d2, 0) / (2 * cfg.kernel_width ** 2)
    np.fill_diagonal(logits, -np.inf)  # before the max, so every row keeps a weight of exactly pop_j > 0
    logits -= logits.max(1, keepdims=True)
    trans = np.exp(logits) * pop[None, :]
    trans_rows = _Rows(trans)
    onehot = np.zeros((K, n_items))
    onehot[topic, np.arange(n_items)] = pop
    empty = onehot.sum(1) == 0
    onehot[empty] = pop  # a topic without items falls back to the domain's popularity
    topic_items = _Rows(onehot)
    popular = _Rows(pop)

    # Users: a sparse topic preference inside the domain's mix; lengths with a long tail.
    pref = rng.dirichlet(np.full(K, cfg.user_concentration), size=n_users) * topic_mix[None, :]
    prefs = _Rows(pref + 1e-12)
    extra = rng.geometric(1.0 / (1.0 + cfg.mean_extra_len), size=n_users) - 1
    lens = np.minimum(cfg.min_len + extra, cfg.max_len)
    seqs = np.full((n_users, cfg.max_len), -1, dtype=np.int64)
    users = np.arange(n_users)
    first_topic = prefs.sample(users, rng.random(n_users))
    seqs[:, 0] = topic_items.sample(first_topic, rng.random(n_users))
    p = np.cumsum([cfg.p_transition, cfg.p_preference, cfg.p_popularity])
    for t in range(1, cfg.max_len):
        act = users[lens > t]
        last = seqs[act, t - 1]
        kind = np.searchsorted(p, rng.random(len(act)), side="right")  # 0 trans, 1 pref, 2 pop, 3 random
        u = rng.random(len(act))
        nxt = rng.integers(0, n_items, len(act))
        m = kind == 0
        nxt[m] = trans_rows.sample(last[m], u[m])
        m = kind == 1
        tp = prefs.sample(act[m], rng.random(int(m.sum())))
        nxt[m] = topic_items.sample(tp, u[m])
        m = kind == 2
        nxt[m] = popular.sample(np.zeros(int(m.sum()), dtype=np.int64), u[m])
        seqs[act, t] = nxt

    # Features: the shared projections of the latent + a shared modality offset + noise; all the
    # scales are world constants, so the same latent gives the same feature in every domain.
    F = cfg.feat_dim
    st, sv = world.scale
    text = z @ world.W_t.T + world.m_t + cfg.text_noise * st * rng.standard_normal((n_items, F))
    image = z @ world.W_v.T + world.m_v + cfg.image_noise * sv * rng.standard_normal((n_items, F))
    text_aug = text + cfg.aug_noise * st * rng.standard_normal((n_items, F))
    text, text_aug, image = text * world.norm[0], text_aug * world.norm[0], image * world.norm[1]
    n_missing = int(round(cfg.missing_share * n_items))
    missing = rng.permutation(n_items)[:n_missing]
    missing_text = np.zeros(n_items, dtype=bool)
    missing_image = np.zeros(n_items, dtype=bool)
    missing_text[missing[: n_missing // 2]] = True
    missing_image[missing[n_missing // 2:]] = True
    text[missing_text] = 0.0
    text_aug[missing_text] = 0.0
    image[missing_image] = 0.0

    titles = _titles(world, topic, z, missing_text, rng)
    raw_ids = [f"A{first_item + i:07d}" for i in range(n_items)]
    user_ids = [f"U{first_user + i:07d}" for i in range(n_users)]
    return _Domain(name, raw_ids, user_ids, topic, z, text.astype(np.float32), text_aug.astype(np.float32),
                   image.astype(np.float32), missing_text, missing_image, titles, seqs, lens)


def _titles(world: _World, topic, z, missing_text, rng) -> list[str]:
    """Readable fake product titles: brand, two topic words and a group word chosen by the item's
    own latent (similar items share words), and a spec."""
    noise = z - world.centres[topic]
    n_group = len(_GROUPS[0])
    affinity = np.einsum("nwd,nd->nw", world.word_dirs[topic], noise)  # [n_items, n_words]
    g_word = affinity[:, :n_group].argmax(1)
    t_words = np.argsort(-affinity[:, n_group:], axis=1)[:, :2]
    brands = rng.integers(0, len(_BRAND_A), len(topic)), rng.integers(0, len(_BRAND_B), len(topic))
    specs = rng.integers(0, len(_SPECS), len(topic))
    out = []
    for i, k in enumerate(topic.tolist()):
        if missing_text[i]:
            out.append("")
            continue
        g = int(world.group_of[k])
        tw = _TOPICS[k % len(_TOPICS)]
        title = (f"{_BRAND_A[brands[0][i]]}{_BRAND_B[brands[1][i]]} {tw[t_words[i, 0]]} {tw[t_words[i, 1]]} "
                 f"{_GROUPS[g % len(_GROUPS)][g_word[i]]}, {_SPECS[specs[i]]}")
        out.append(title.replace("-", " "))
    return out


def _images(world: _World, z: np.ndarray, topic: np.ndarray, size: int) -> np.ndarray:
    """[n, size, size, 3] uint8: colour from the latent, stripe orientation from the topic,
    stripe frequency from the topic group, phase from the item's own latent."""
    n = len(z)
    rgb = 1.0 / (1.0 + np.exp(-(z @ world.colour.T)))  # [n, 3]
    K = world.centres.shape[0]
    angle = np.pi * topic / K
    freq = 2.0 + world.group_of[topic]
    phase = 2 * np.pi * (rgb.sum(1) % 1.0)
    yy, xx = np.mgrid[0:size, 0:size] / size
    proj = np.cos(angle)[:, None, None] * xx + np.sin(angle)[:, None, None] * yy
    wave = 0.5 + 0.5 * np.sin(2 * np.pi * freq[:, None, None] * proj + phase[:, None, None])
    img = rgb[:, None, None, :] * (0.35 + 0.65 * wave[..., None]) + (1 - rgb[:, None, None, :]) * 0.25 * (1 - wave[..., None])
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8).reshape(n, size, size, 3)


def _write_pngs(folder: Path, raw_ids, pixels: np.ndarray, skip: np.ndarray) -> int:
    """One PNG per item not in ``skip``; the folder appears complete or not at all."""
    from PIL import Image

    n = 0
    with atomic_dir(folder) as tmp:
        for rid, px, s in zip(raw_ids, pixels, skip):
            if s:
                continue
            Image.fromarray(px).save(tmp / f"{rid}.png", format="PNG")
            n += 1
    return n


# ----------------------------------------------------------------------------- splits
def _splits(seqs: np.ndarray, lens: np.ndarray, offset: int, max_hist: int = MAX_LEN) -> dict[str, Split]:
    """The leave-one-out splits (missrec/data/split.py) of the padded sequences ``seqs[u, :lens[u]]``;
    ``offset`` turns 0-based indices into ids."""
    items = seqs[np.arange(seqs.shape[1])[None, :] < lens[:, None]]
    out = {}
    for split, rows in leave_one_out(np.concatenate([[0], np.cumsum(lens)]), max_hist).items():
        seq, length, target = padded(items, rows, max_hist, offset)
        out[split] = Split(user=rows.user, seq=seq, length=length, target=target)
    return out


# ----------------------------------------------------------------------------- generate
def generate(root: str | os.PathLike, seed: int = 0, *, progress: bool = False, **sizes) -> dict:
    """Write the sample catalogue under ``root`` and return a summary dict.

    ``sizes`` are :class:`SampleConfig` fields (e.g. ``n_sources=5, target_users=800``). The
    result lists every domain with its items, users, interactions and density.
    """
    cfg = SampleConfig(**sizes)
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    ss = np.random.SeedSequence(int(seed))
    world_ss, *domain_ss = ss.spawn(1 + cfg.n_sources + cfg.n_targets)
    world = _make_world(cfg, np.random.default_rng(world_ss))
    encoder = {"name": "synthetic", "generator": "missrec.data.sample", "version": GENERATOR_VERSION,
               "seed": int(seed), "latent_dim": cfg.latent_dim}
    summary = {"generator_version": GENERATOR_VERSION, "seed": int(seed), "config": asdict(cfg), "domains": []}
    first_item = first_user = 0
    specs = [(n, "source", cfg.source_items, cfg.source_users) for n in source_names(cfg.n_sources)] + \
            [(n, "target", cfg.target_items, cfg.target_users) for n in target_names(cfg.n_targets)]
    domains = []
    for (name, role, n_items, n_users), dss in zip(specs, domain_ss):
        t0 = time.perf_counter()
        dom = _make_domain(cfg, world, name, n_items, n_users, first_item, first_user, np.random.default_rng(dss))
        first_item += n_items
        first_user += n_users
        domains.append((dom, role))
        summary["domains"].append(_domain_stats(dom, role))
        if progress:
            print(f"  generated {name} in {time.perf_counter() - t0:.2f}s", file=sys.stderr)

    for dom, role in domains:
        if role != "target":
            continue
        splits = _splits(dom.seqs, dom.lens, offset=1)
        for s in splits.values():
            s.user = s.user.astype(str).astype(object)
        write_dataset(root, dom.name, item_ids=dom.raw_ids, user_ids=dom.user_ids, splits=splits,
                      texts=dom.titles,
                      features={"text": dom.text, "text_aug": dom.text_aug, "image": dom.image},
                      encoder=encoder,
                      extra_meta={"sample": {"role": "target", "n_missing_text": int(dom.missing_text.sum()),
                                             "n_missing_image": int(dom.missing_image.sum())}})
        if cfg.target_images:
            _write_pngs(root / dom.name / "images", dom.raw_ids,
                        _images(world, dom.z, dom.topic, cfg.image_size), dom.missing_image)

    sources = [dom for dom, role in domains if role == "source"]
    if sources:
        _write_corpus(root, sources, world, cfg, encoder)
    return summary


def _write_corpus(root: Path, sources: list[_Domain], world: _World, cfg: SampleConfig, encoder: dict) -> None:
    folder = root / CORPUS
    folder.mkdir(parents=True, exist_ok=True)
    domain_items = [len(d.raw_ids) for d in sources]
    offsets = np.concatenate([[0], np.cumsum(domain_items)])
    per_split: dict[str, list[Split]] = {}
    for di, dom in enumerate(sources):
        for name, s in _splits(dom.seqs, dom.lens, offset=1 + int(offsets[di])).items():
            s.user = np.char.add(f"{di}-", s.user.astype(str)).astype(object)
            per_split.setdefault(name, []).append(s)
        write_index_map(folder / f"{dom.name}.item2index", dom.raw_ids)
        write_index_map(folder / f"{dom.name}.user2index", dom.user_ids)
        write_text(folder / f"{dom.name}.text", dom.raw_ids, dom.titles)
        for key, arr in (("text", dom.text), ("text_aug", dom.text_aug), ("image", dom.image)):
            write_features(folder / f"{dom.name}.{FEATURE_SUFFIXES[key]}", arr)
        if cfg.source_images:
            _write_pngs(folder / "images" / dom.name, dom.raw_ids,
                        _images(world, dom.z, dom.topic, cfg.image_size), dom.missing_image)
    for name, parts in per_split.items():
        merged = Split(user=np.concatenate([p.user for p in parts]), seq=np.concatenate([p.seq for p in parts]),
                       length=np.concatenate([p.length for p in parts]),
                       target=np.concatenate([p.target for p in parts]))
        write_inter(folder / f"{CORPUS}.{name}.inter", merged, domain_items=domain_items)
    atomic_write_text(folder / f"{CORPUS}.pt_datasets", ",".join(d.name for d in sources) + "\n")
    sums = {f"{d.name}.{suf}": sha256_file(folder / f"{d.name}.{suf}")
            for d in sources for suf in FEATURE_SUFFIXES.values()}
    atomic_write_json(folder / f"{CORPUS}.meta.json", {
        "format": "missrec-atomic/1", "name": CORPUS, "domains": [d.name for d in sources],
        "domain_items": domain_items, "n_items": int(sum(domain_items)),
        "n_users": int(sum(len(d.user_ids) for d in sources)),
        "dims": {suf: cfg.feat_dim for suf in FEATURE_SUFFIXES.values()}, "sha256": sums,
        "encoder": encoder})


def _domain_stats(dom: _Domain, role: str) -> dict:
    n_items, n_users = len(dom.raw_ids), len(dom.user_ids)
    inter = int(dom.lens.sum())
    return {"name": dom.name, "role": role, "items": n_items, "users": n_users, "interactions": inter,
            "density": inter / (n_items * n_users), "missing_text": int(dom.missing_text.sum()),
            "missing_image": int(dom.missing_image.sum())}


# ----------------------------------------------------------------------------- default location
def target_domains(root: str | os.PathLike) -> list[str]:
    """Names of the single-domain target folders (``sample_a``, ...) under ``root``."""
    return sorted(p.name for p in Path(root).iterdir()
                  if p.is_dir() and p.name.startswith(TARGET_PREFIX) and (p / f"{p.name}.item2index").is_file()
                  and not (p / f"{p.name}.pt_datasets").exists())


def default_root() -> Path:
    return Path(os.environ.get("MISSREC_DATA_ROOT", "./data"))


def ensure_sample(root: str | os.PathLike | None = None, seed: int = 0, *, force: bool = False,
                  progress: bool = False, **sizes) -> Path:
    """Return ``<root>/sample`` (root: argument, else ``$MISSREC_DATA_ROOT``, else ``./data``),
    generating it first if it is absent, half-written, or from another seed/version/size.

    The whole folder is generated beside its final place and renamed in, with the marker file
    (generator version, seed, sizes) written last, so an interrupted run leaves no sample that looks
    complete. Concurrent callers (several processes of one launch) serialise on a lock file.
    """
    where = "--root" if root is not None else ("MISSREC_DATA_ROOT" if "MISSREC_DATA_ROOT" in os.environ else "./data")
    root = Path(root) if root is not None else default_root()
    target = root / "sample"
    for p in (root, *root.parents):
        if p.exists() and not p.is_dir():
            raise UserError(f"{where} {root}", f"{p} is a file, not a folder; give a folder (the sample goes "
                                               "to ROOT/sample)")
    if target.exists() and not target.is_dir():
        raise UserError(target, "is a file, not a folder; move it away or give another --root")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 32:
        raise OptionError("--seed", f"must be a whole number in 0..{2 ** 32 - 1}, got {seed!r}")
    want = {"generator_version": GENERATOR_VERSION, "seed": int(seed), "config": asdict(SampleConfig(**sizes))}
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / ".sample.lock")):
        if not force and _marker_matches(target / MARKER, want):
            return target
        # Temp folders of runs killed mid-way (we hold the lock, so none is in use).
        for stale in root.glob(".sample.*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
        with atomic_dir(target) as tmp:
            summary = generate(tmp, seed, progress=progress, **sizes)
            atomic_write_json(tmp / MARKER, {**want, "domains": summary["domains"]})
    return target


def _marker_matches(path: Path, want: dict) -> bool:
    try:
        have = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(have, dict) and all(have.get(k) == v for k, v in want.items())


def read_summary(sample_dir: str | os.PathLike) -> dict:
    """The marker written by :func:`ensure_sample` (version, seed, sizes, per-domain stats)."""
    path = Path(sample_dir) / MARKER
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise MissingFileError(f"{path}: no complete sample here ({e})") from None


def format_summary(domains: Sequence[dict]) -> str:
    lines = [f"{'domain':<12}{'role':<8}{'items':>7}{'users':>7}{'interactions':>14}{'density':>9}"
             f"{'no text':>9}{'no image':>9}"]
    for d in domains:
        lines.append(f"{d['name']:<12}{d['role']:<8}{d['items']:>7}{d['users']:>7}{d['interactions']:>14}"
                     f"{d['density']:>9.4f}{d['missing_text']:>9}{d['missing_image']:>9}")
    return "\n".join(lines)
