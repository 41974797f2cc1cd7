"""MISSRec: multi-modal interest-aware sequence representations, pretrained and transferred."""

__version__ = "0.1.0"
