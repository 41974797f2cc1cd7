"""Features stage: raw Amazon catalogues -> atomic dataset folders, item images, CLIP features.

- ``features.prepare_amazon``: review + metadata dumps (Amazon 2018 or 2023 release) -> dataset
  folder or multi-domain pretraining corpus (5-core, chronological, leave-one-out).
- ``features.fetch_images``: one image per item, downloaded concurrently and validated.
- ``features.extract``: open_clip text/image features (``.feat1CLS``/``.feat3CLS``/``.feat2CLS``),
  resumable in shards; ``features.text_encoder`` adds a Hugging Face text encoder option.
"""
