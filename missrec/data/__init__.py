"""Dataset formats (atomic files), in-memory sequence datasets and the embedded sample generator."""
from .atomic import (  # noqa: F401
    FEATURE_SUFFIXES, INTER_HEADER, MAX_LEN, SPLITS, TEXT_HEADER, AtomicDataset, DataFormatError, Split,
    load_dataset, read_features, read_index_map, read_inter, read_meta, read_text, write_dataset,
    write_features, write_index_map, write_inter, write_meta, write_text,
)
