"""SemGAN's pure train step: a BCE update of D, then a feature-matching update of G."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from semgan_jax import losses
from semgan_jax.train.state import GANState

GENERATOR_LOSSES = ('feature_matching', 'non_saturating')


def real_discriminator_input(labels: jax.Array, head: str, palette: np.ndarray) -> jax.Array:
  """What D sees for real data: one-hot maps (SemGAN) or palette-colorized maps in [-1, 1] (RGB).

  Args:
    labels: (B, H, W) integer class ids.
    head: the generator head, 'semantic' or 'rgb'.
    palette: (K, 3) uint8 colors, used by the RGB baseline only.

  Returns:
    (B, H, W, K) float32 one-hot, or (B, H, W, 3) float32 RGB in [-1, 1].
  """
  if head == 'semantic':
    return jax.nn.one_hot(labels, palette.shape[0], dtype=jnp.float32)
  colors = jnp.asarray(palette, jnp.float32) / 127.5 - 1.0
  return colors[labels]


def global_norm(tree) -> jax.Array:
  """L2 norm over all leaves (optax renamed its helper across versions; this is version-free)."""
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def sample_latents(rng: jax.Array, batch_size: int, latent_dim: int) -> jax.Array:
  """z ~ N(0, I), the paper's prior."""
  return jax.random.normal(rng, (batch_size, latent_dim), jnp.float32)


def generate(state: GANState, z: jax.Array) -> jax.Array:
  """G(z) in eval mode (BatchNorm running averages): softmax maps or RGB images.

  Uses the moving average of G's weights, with its own BatchNorm statistics, when the run keeps
  one (`model.g_ema_decay > 0`).
  """
  if state.g_ema_params is None:
    variables = {'params': state.g_params, 'batch_stats': state.g_batch_stats}
  else:
    variables = {'params': state.g_ema_params, 'batch_stats': state.g_ema_batch_stats}
  return state.generator.apply(variables, z, train=False)


def make_train_step(
  *,
  palette: np.ndarray,
  generator_loss: str = 'feature_matching',
  fm_layer: int = -1,
  instance_noise_std: float = 0.0,
  instance_noise_steps: int = 0,
) -> Callable[[GANState, dict, jax.Array], tuple[GANState, dict]]:
  """Builds `train_step(state, batch, rng) -> (state, metrics)`, a pure function to `jax.jit`.

  Args:
    palette: (K, 3) uint8 class colors (the RGB baseline's real inputs are colorized with it).
    generator_loss: 'feature_matching' (the paper) or 'non_saturating'.
    fm_layer: which discriminator block's features feature matching compares (-1: the last).
    instance_noise_std: std of Gaussian noise added to every discriminator input (real and
      fake), decayed linearly to 0 over `instance_noise_steps`. It hides the one cue D needs no
      learning for: one-hot real maps against soft generated ones. 0 disables it (paper).
    instance_noise_steps: how many steps the noise takes to decay to 0 (0: it never does).

  Returns:
    The step function. `batch['label']` holds (B, H, W) int class ids; `rng` is a typed key.
  """
  if generator_loss not in GENERATOR_LOSSES:
    raise ValueError(
      f'config.loss.generator={generator_loss!r}; expected one of {GENERATOR_LOSSES}.'
    )
  palette = np.asarray(palette, np.uint8)

  def train_step(state: GANState, batch: dict, rng: jax.Array) -> tuple[GANState, dict]:
    head = state.generator.head
    real = real_discriminator_input(batch['label'], head, palette)
    batch_size = real.shape[0]
    d_key, g_key, d_noise_key, g_noise_key = jax.random.split(rng, 4)
    noise_std = losses.instance_noise_std(state.step, instance_noise_std, instance_noise_steps)

    def add_noise(key, real, fake):
      k_real, k_fake = jax.random.split(key)
      return (
        real + noise_std * jax.random.normal(k_real, real.shape, real.dtype),
        fake + noise_std * jax.random.normal(k_fake, fake.shape, fake.dtype),
      )

    def noisy(key, real, fake):
      """Adds the same-scale instance noise to D's real and fake inputs (no-op when off).

      Drawing it is a large part of a CPU step with many classes (4 normals per input element
      and step: 0.22 of 0.54 s at 13 classes, 64x128, batch 32), so it is skipped once the std
      has decayed to 0, where adding 0·noise would change nothing: those steps are bit-identical
      to adding it. While the noise is on, the same noise is added, but inside a conditional
      XLA fuses the sums differently, so those steps differ from the inline form by rounding.
      """
      if instance_noise_std <= 0:
        return real, fake
      return jax.lax.cond(noise_std > 0, add_noise, lambda _, r, f: (r, f), key, real, fake)

    def run_g(g_params, z):
      fake, new_vars = state.generator.apply(
        {'params': g_params, 'batch_stats': state.g_batch_stats},
        z,
        train=True,
        mutable=['batch_stats'],
      )
      return fake, new_vars['batch_stats']

    def run_d(d_params, d_batch_stats, x):
      (logits, features), new_vars = state.discriminator.apply(
        {'params': d_params, 'batch_stats': d_batch_stats}, x, train=True, mutable=['batch_stats']
      )
      return logits, features, new_vars['batch_stats']

    # Discriminator update. Fakes are constants here: no gradient reaches G.
    fake, _ = run_g(state.g_params, sample_latents(d_key, batch_size, state.latent_dim))
    d_real, d_fake = noisy(d_noise_key, real, jax.lax.stop_gradient(fake))

    def d_loss_fn(d_params):
      real_logits, _, stats = run_d(d_params, state.d_batch_stats, d_real)
      fake_logits, _, stats = run_d(d_params, stats, d_fake)
      loss = losses.d_bce_loss(real_logits, fake_logits)
      return loss, (stats, real_logits, fake_logits)

    (d_loss, (d_batch_stats, real_logits, fake_logits)), d_grads = jax.value_and_grad(
      d_loss_fn, has_aux=True
    )(state.d_params)
    d_params, d_opt_state = state.apply_d_gradients(d_grads)

    # Generator update against the freshly updated D; D's statistics from this pass are dropped
    # so that only the discriminator's own step moves its running averages.
    g_latents = sample_latents(g_key, batch_size, state.latent_dim)

    def g_loss_fn(g_params):
      fake, g_batch_stats = run_g(g_params, g_latents)
      g_real, g_fake = noisy(g_noise_key, real, fake)
      _, real_features, _ = run_d(d_params, d_batch_stats, g_real)
      fake_logits, fake_features, _ = run_d(d_params, d_batch_stats, g_fake)
      fm = losses.feature_matching_loss(real_features[fm_layer], fake_features[fm_layer])
      non_sat = losses.g_non_saturating_loss(fake_logits)
      loss = fm if generator_loss == 'feature_matching' else non_sat
      return loss, (g_batch_stats, fm, non_sat, fake)

    (g_loss, (g_batch_stats, fm, non_sat, fake)), g_grads = jax.value_and_grad(
      g_loss_fn, has_aux=True
    )(state.g_params)
    g_params, g_opt_state, g_ema_params = state.apply_g_gradients(g_grads)
    g_ema_batch_stats = state.g_ema_batch_stats
    if g_ema_params is not None:
      # The averaged network's BatchNorm statistics, tracked as the live G's are: a forward pass
      # of it in train mode on this step's latents (its output is not used).
      _, new_vars = state.generator.apply(
        {'params': g_ema_params, 'batch_stats': g_ema_batch_stats},
        g_latents,
        train=True,
        mutable=['batch_stats'],
      )
      g_ema_batch_stats = new_vars['batch_stats']

    metrics = {
      'train/d_loss': d_loss,
      'train/g_loss': g_loss,
      'train/g_feature_matching': fm,
      'train/g_non_saturating': non_sat,
      'train/d_real_prob': jax.nn.sigmoid(real_logits).mean(),
      'train/d_fake_prob': jax.nn.sigmoid(fake_logits).mean(),
      'train/d_grad_norm': global_norm(d_grads),
      'train/instance_noise_std': jnp.asarray(noise_std, jnp.float32),
      'train/g_grad_norm': global_norm(g_grads),
    }
    if head == 'semantic':
      # How peaked the per-pixel distributions are (1.0 = one-hot, like the real maps).
      metrics['train/g_max_prob'] = fake.max(axis=-1).mean()
    new_state = state.replace(
      step=state.step + 1,
      g_params=g_params,
      g_ema_params=g_ema_params,
      g_ema_batch_stats=g_ema_batch_stats,
      g_batch_stats=g_batch_stats,
      g_opt_state=g_opt_state,
      d_params=d_params,
      d_batch_stats=d_batch_stats,
      d_opt_state=d_opt_state,
    )
    return new_state, metrics

  return train_step
