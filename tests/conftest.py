import os

# Tests never touch the network: make hub look-ups fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _private_missrec_cache(tmp_path_factory):
    """Converted .pth checkpoints go to $MISSREC_CACHE_DIR (missrec/hub.py): keep the tests' out of ~/.cache."""
    if "MISSREC_CACHE_DIR" not in os.environ:
        os.environ["MISSREC_CACHE_DIR"] = str(tmp_path_factory.mktemp("missrec-cache"))
    yield


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny target domain ("tiny") and a tiny pretraining corpus ("tinypt") under one root, made
    once per test module (tests/_tiny.py); a module may define its own ``data`` instead."""
    from _tiny import make_corpus, make_domain
    root = tmp_path_factory.mktemp("data")
    make_domain(root)
    make_corpus(root)
    return root
