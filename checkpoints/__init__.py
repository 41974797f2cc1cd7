"""Released checkpoints: the registry (``registry.json``), the downloader and the converter.

``python checkpoints/download.py NAME_OR_URL`` (or ``missrec-download``) fetches and verifies a
checkpoint; ``python checkpoints/convert.py IN.pth OUT_DIR`` (or ``missrec-convert``) imports an
original MISSRec ``.pth``. Downloaded files land in ``checkpoints/downloads/`` (git-ignored).
"""
