"""Converters for published pretrained weights: not implemented yet (see the open issues)."""
