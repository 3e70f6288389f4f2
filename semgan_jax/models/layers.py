"""Shared layer helpers: DCGAN-style initialisers and normalisation factories."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

# DCGAN (Radford et al.) and both papers initialise every weight from N(0, 0.02).
conv_init = nn.initializers.normal(stddev=0.02)


def norm_scale_init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
  """Norm-layer scales drawn from N(1, 0.02), the DCGAN convention for BatchNorm gammas."""
  return 1.0 + 0.02 * jax.random.normal(key, shape, dtype)


def batch_norm(train: bool, *, momentum: float, dtype, param_dtype, name: str | None = None):
  """A BatchNorm that uses batch statistics in training and running averages otherwise.

  Under `jax.jit` with a batch sharded over a `data` mesh axis, the batch mean and variance are
  reductions over the *global* batch (XLA inserts the all-reduce), so the statistics are the same
  on 1 or N devices without an `axis_name`.
  """
  return nn.BatchNorm(
    use_running_average=not train,
    momentum=momentum,
    epsilon=1e-5,
    dtype=dtype,
    param_dtype=param_dtype,
    scale_init=norm_scale_init,
    name=name,
  )


leaky_relu = functools.partial(nn.leaky_relu, negative_slope=0.2)
