"""Import an original MISSRec ``.pth`` checkpoint into our folder format, without running its code.

    python checkpoints/convert.py IN.pth OUT_DIR [--dataset DIR] [--allow-unknown]

The file is read by a restricted unpickler (missrec/unpickle.py): tensors are rebuilt from the raw
storages, RecBole's pickled Config becomes an inert placeholder whose values we read, and any
attempt to call something else (os.system, eval, ...) stops the import with an error. Nothing
from RecBole is needed.

Pretraining checkpoints convert as they are. Finetuned *transductive* checkpoints carry an
item-ID table in RecBole's internal item order; ``--dataset`` (the dataset folder they were
trained on) lets us recover that order and write the rows in ours (id = file index + 1). When
the checkpoint also stores the dataset's feature tables, they are compared with the dataset's
``.feat1CLS``/``.feat3CLS`` to prove the order is right.
"""
from __future__ import annotations

import argparse
import sys

from missrec.cli import ArgumentParser, run
from missrec.pth import convert_original, read_original, write_converted


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="missrec-convert",
        description="Convert an original MISSRec/RecBole .pth checkpoint into our checkpoint folder "
                    "(config.json + model.safetensors [+ interest.safetensors]) without executing anything "
                    "from the file.")
    p.add_argument("input", metavar="IN.pth", help="the original checkpoint (torch.save zip or legacy format)")
    p.add_argument("output", metavar="OUT_DIR", help="folder to create (written to a temp folder, then renamed)")
    p.add_argument("--dataset", metavar="DIR", default=None,
                   help="the dataset folder the checkpoint was finetuned on (e.g. .../Scientific_mm_full, holding "
                        "<name>.train/valid/test.inter and <name>.item2index): required for transductive "
                        "checkpoints (item-ID table), optional for inductive ones (keeps their interest clusters), "
                        "not needed for pretraining checkpoints")
    p.add_argument("--allow_unknown", action="store_true",
                   help="drop state_dict keys that MISSRec does not have (listed in the report) instead of failing")
    p.add_argument("--skip_feature_check", action="store_true",
                   help="do not compare the checkpoint's stored feature tables with the dataset's feature files "
                        "(only for datasets whose features were re-extracted)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUT_DIR if it already holds a checkpoint folder")
    return p


def main(argv: list[str] | None = None) -> int:
    """``missrec-convert``: exit status 0, or 2 after one ``error:`` line (a refused or damaged file too)."""
    return run(_main, argv, exit=False)


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    orig = read_original(args.input)
    conv = convert_original(orig, dataset=args.dataset, allow_unknown=args.allow_unknown,
                            skip_feature_check=args.skip_feature_check)
    out = write_converted(conv, args.output, overwrite=args.overwrite)
    c = conv.config
    print(f"read {orig.path.name} (sha256 {orig.sha256[:16]}..., epoch {orig.epoch}, "
          f"stage {c['source']['train_stage']})", file=sys.stderr)
    print(f"model: hidden {c['hidden_size']}, heads {c['n_heads']}, ffn {c['inner_size']}, "
          f"layers {c['num_encoder_layers']}+{c['num_decoder_layers']}, max_len {c['max_seq_length']}, "
          f"use_id {c['use_id']}, n_items {c['n_items']}, fusion {c['fusion']}; "
          f"{len(conv.model)} tensors{', + interest state' if conv.interest is not None else ''}", file=sys.stderr)
    for note in conv.notes:
        print(f"  note: {note}", file=sys.stderr)
    print(out)
    return 0

