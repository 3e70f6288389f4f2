"""Losses: adversarial objectives and feature matching (SemGAN trains G on the latter)."""

import jax
import jax.numpy as jnp
import optax


def d_bce_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """Discriminator binary cross-entropy: real → 1, fake → 0, averaged over each batch."""
  real = optax.sigmoid_binary_cross_entropy(real_logits, jnp.ones_like(real_logits))
  fake = optax.sigmoid_binary_cross_entropy(fake_logits, jnp.zeros_like(fake_logits))
  return real.mean() + fake.mean()


def g_non_saturating_loss(fake_logits: jax.Array) -> jax.Array:
  """Generator's non-saturating loss -log D(G(z)) (Goodfellow et al.)."""
  return optax.sigmoid_binary_cross_entropy(fake_logits, jnp.ones_like(fake_logits)).mean()


def feature_matching_loss(real_features: jax.Array, fake_features: jax.Array) -> jax.Array:
  """Salimans et al.'s feature matching: ||E f(x) - E f(G(z))||², per feature (mean, not sum).

  The expectation is over the batch; real features are a fixed target (no gradient). Averaging
  over feature dimensions rather than summing keeps the scale independent of the layer's size.

  Args:
    real_features: (B, ...) discriminator features of real samples.
    fake_features: (B, ...) the same layer's features of generated samples.

  Returns:
    A scalar.
  """
  real_mean = jax.lax.stop_gradient(real_features).astype(jnp.float32).mean(axis=0)
  fake_mean = fake_features.astype(jnp.float32).mean(axis=0)
  return jnp.mean(jnp.square(real_mean - fake_mean))
