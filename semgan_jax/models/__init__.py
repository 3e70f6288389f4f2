"""Pure Flax modules: generators, discriminators, residual blocks and the layers they share."""

from semgan_jax.models.blocks import BLOCKS
from semgan_jax.models.discriminators import (
  DCGANDiscriminator,
  MultiScaleDiscriminator,
  PatchGANDiscriminator,
)
from semgan_jax.models.generators import HEADS, LabelToPhotoGenerator, LatentToLabelGenerator

__all__ = [
  'BLOCKS',
  'DCGANDiscriminator',
  'HEADS',
  'LabelToPhotoGenerator',
  'LatentToLabelGenerator',
  'MultiScaleDiscriminator',
  'PatchGANDiscriminator',
]
