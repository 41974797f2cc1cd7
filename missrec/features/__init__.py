"""Features stage: raw Amazon catalogues -> atomic dataset folders, item images, CLIP features.

- ``amazon``: review + metadata dumps (Amazon 2018 or 2023 release) -> dataset folder or
  multi-domain pretraining corpus (5-core, chronological, leave-one-out).
- ``images``: one image per item, downloaded concurrently and validated.
- ``extract``: text/image features (``.feat1CLS``/``.feat3CLS``/``.feat2CLS``), resumable in shards,
  with the encoders of ``clip`` (open_clip) and ``text_encoder`` (a Hugging Face text model).

Entry scripts: features/prepare_amazon.py, features/fetch_images.py, features/extract.py.
"""
