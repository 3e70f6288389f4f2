"""semgan_jax: SemGAN (latent → label map) and SemanticGAN (label map → photo) in JAX/Flax."""

__version__ = '0.1.0'
