"""Pure Flax modules: generators, discriminators, residual blocks, ERFNet and their layers."""

from semgan_jax.models.blocks import BLOCKS
from semgan_jax.models.discriminators import (
  DCGANDiscriminator,
  MultiScaleDiscriminator,
  PatchGANDiscriminator,
)
from semgan_jax.models.erfnet import ERFNet
from semgan_jax.models.generators import HEADS, LabelToPhotoGenerator, LatentToLabelGenerator

__all__ = [
  'BLOCKS',
  'DCGANDiscriminator',
  'ERFNet',
  'HEADS',
  'LabelToPhotoGenerator',
  'LatentToLabelGenerator',
  'MultiScaleDiscriminator',
  'PatchGANDiscriminator',
]
