"""The GAN train state: both networks, both optimizers, norm statistics and the rng, one pytree."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import struct

from semgan_jax.models import DCGANDiscriminator, LatentToLabelGenerator
from semgan_jax.train import optim

PyTree = Any


@struct.dataclass
class GANState:
  """Everything a SemGAN step reads and writes (magvit-style `g_` / `d_` names).

  The modules and optimizers are static (not pytree leaves): they define the computation and are
  rebuilt from the config, while every array the run depends on lives in the leaves, so a
  checkpoint of the leaves resumes a run exactly.
  """

  step: jax.Array
  g_params: PyTree
  g_batch_stats: PyTree
  g_opt_state: PyTree
  d_params: PyTree
  d_batch_stats: PyTree
  d_opt_state: PyTree
  rng: jax.Array  # Typed key; per-step keys are fold_in(rng, step).
  generator: nn.Module = struct.field(pytree_node=False)
  discriminator: nn.Module = struct.field(pytree_node=False)
  g_tx: optax.GradientTransformation = struct.field(pytree_node=False)
  d_tx: optax.GradientTransformation = struct.field(pytree_node=False)
  # Exponential moving average of g_params, used for sampling; None when g_ema_decay == 0.
  g_ema_params: PyTree = None
  # BatchNorm running statistics of the averaged weights (SemGAN's G; None without EMA): the
  # live G's statistics do not fit the averaged network, whose samples they would ruin.
  g_ema_batch_stats: PyTree = None
  latent_dim: int = struct.field(pytree_node=False, default=100)
  g_ema_decay: float = struct.field(pytree_node=False, default=0.0)
  # Parameters of frozen networks a loss runs (VGG19 for the perceptual loss, a segmenter for
  # SIPL). Leaves, so the compiled step takes them as arguments instead of baking ~100 MB of
  # constants into the program; not checkpointed: they are reloaded from their weight files.
  frozen_params: PyTree = None

  @classmethod
  def create(
    cls,
    *,
    generator: nn.Module,
    discriminator: nn.Module,
    g_variables: PyTree,
    d_variables: PyTree,
    g_tx: optax.GradientTransformation,
    d_tx: optax.GradientTransformation,
    rng: jax.Array,
    g_ema_decay: float = 0.0,
    latent_dim: int = 0,
    frozen_params: PyTree = None,
  ) -> 'GANState':
    """A step-0 state from both networks' initial variables ({'params', 'batch_stats'?})."""
    g_params, d_params = g_variables['params'], d_variables['params']
    return cls(
      step=jnp.zeros((), jnp.int32),
      g_params=g_params,
      g_batch_stats=g_variables.get('batch_stats', {}),
      g_opt_state=g_tx.init(g_params),
      d_params=d_params,
      d_batch_stats=d_variables.get('batch_stats', {}),
      d_opt_state=d_tx.init(d_params),
      rng=rng,
      g_ema_params=g_params if g_ema_decay > 0 else None,
      g_ema_batch_stats=g_variables.get('batch_stats', {}) if g_ema_decay > 0 else None,
      generator=generator,
      discriminator=discriminator,
      g_tx=g_tx,
      d_tx=d_tx,
      latent_dim=latent_dim,
      g_ema_decay=g_ema_decay,
      frozen_params=frozen_params if frozen_params is not None else {},
    )

  def apply_d_gradients(self, grads: PyTree) -> tuple[PyTree, PyTree]:
    """D's optimizer step: the new (d_params, d_opt_state); the state itself is unchanged."""
    updates, opt_state = self.d_tx.update(grads, self.d_opt_state, self.d_params)
    return optax.apply_updates(self.d_params, updates), opt_state

  def apply_g_gradients(self, grads: PyTree) -> tuple[PyTree, PyTree, PyTree]:
    """G's optimizer step: the new (g_params, g_opt_state, g_ema_params or None)."""
    updates, opt_state = self.g_tx.update(grads, self.g_opt_state, self.g_params)
    params = optax.apply_updates(self.g_params, updates)
    ema = self.g_ema_params
    if ema is not None:
      ema = ema_update(ema, params, self.g_ema_decay)
    return params, opt_state, ema


def ema_update(ema_params: PyTree, new_params: PyTree, decay: float) -> PyTree:
  """One step of the exponential moving average of G's weights: decay·ema + (1 - decay)·new."""
  return jax.tree.map(lambda ema, new: decay * ema + (1.0 - decay) * new, ema_params, new_params)


def map_size(data: ml_collections.ConfigDict) -> tuple[int, int]:
  """(height, width) of `config.data`'s maps: `image_size` square, or `height` × `width`."""
  return (data.image_size,) * 2 if 'image_size' in data else (data.height, data.width)


def build_models(config: ml_collections.ConfigDict) -> tuple[nn.Module, nn.Module]:
  """Maps `config.model` / `config.data` to plain module fields (modules never see the config)."""
  m, d = config.model, config.data
  dtype = jnp.dtype(m.dtype)
  height, width = map_size(d)
  generator = LatentToLabelGenerator(
    num_classes=d.num_classes,
    image_size=height,
    width=width,
    base_features=m.g_base_features,
    kernel_size=m.kernel_size,
    head=m.head,
    bn_momentum=m.bn_momentum,
    dtype=dtype,
    remat=m.remat,
  )
  discriminator = DCGANDiscriminator(
    image_size=height,
    width=width,
    base_features=m.d_base_features,
    kernel_size=m.kernel_size,
    bn_momentum=m.bn_momentum,
    dtype=dtype,
  )
  return generator, discriminator


def create_train_state(
  config: ml_collections.ConfigDict, rng: jax.Array, tx: optax.GradientTransformation | None = None
) -> GANState:
  """Initialises both networks and optimizers.

  Args:
    config: the experiment config (`model`, `data`, `optim` sections).
    rng: a typed PRNG key; split for G init, D init and the training rng.
    tx: the optimizer of each network (one instance, two states); default: `config.optim`'s over
      `config.train.num_steps` steps (`semgan_jax.train.optim`).

  Returns:
    A `GANState` at step 0 (on the default device; the loop replicates it over the mesh).
  """
  if tx is None:
    schedule = optim.build_schedule(config.optim, num_steps=config.train.num_steps)
    tx = optim.build_optimizer(config.optim, schedule)
  generator, discriminator = build_models(config)
  g_key, d_key, train_key = jax.random.split(rng, 3)
  latent_dim = config.model.latent_dim
  z = jnp.zeros((2, latent_dim), jnp.float32)
  x = jnp.zeros((2, *map_size(config.data), generator.out_channels), jnp.float32)
  g_vars = generator.init(g_key, z, train=False)
  d_vars = discriminator.init(d_key, x, train=False)
  return GANState.create(
    generator=generator,
    discriminator=discriminator,
    g_variables=g_vars,
    d_variables=d_vars,
    g_tx=tx,
    d_tx=tx,
    rng=train_key,
    g_ema_decay=config.model.g_ema_decay,
    latent_dim=latent_dim,
  )
