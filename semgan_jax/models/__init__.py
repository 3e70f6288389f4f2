"""Pure Flax modules: generators, discriminators and the layers they share."""

from semgan_jax.models.discriminators import DCGANDiscriminator
from semgan_jax.models.generators import HEADS, LatentToLabelGenerator

__all__ = ['DCGANDiscriminator', 'HEADS', 'LatentToLabelGenerator']
