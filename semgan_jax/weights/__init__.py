"""Converters of published weights (FID Inception-v3, VGG19, ERFNet) to our `.npz`, torch-free.

Each converter reads the published file without torch and without general unpickling
(`torch_archive`), validates the architecture, and writes a flat `.npz` (`npz_io`) that training
and evaluation load with `allow_pickle=False`.
"""
