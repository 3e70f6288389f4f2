"""Losses: SemGAN's adversarial and feature-matching terms; SemanticGAN's pix2pixHD-style terms."""

from collections.abc import Callable, Sequence

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


def instance_noise_std(step: jax.Array, std: float, decay_steps: int) -> jax.Array:
  """The std of the Gaussian instance noise on D's inputs at `step` (Sønderby et al. 2016).

  `std` decayed linearly to 0 over `decay_steps`; `decay_steps=0` keeps it constant.
  """
  if decay_steps < 0:
    raise ValueError(f'instance noise decay_steps={decay_steps}; expected >= 0 (0: constant).')
  if decay_steps == 0:
    return jnp.float32(std)
  progress = jnp.asarray(step, jnp.float32) / decay_steps
  return std * jnp.maximum(0.0, 1.0 - progress)


# --- SemanticGAN (paper 1, eq. 7) --------------------------------------------------------------
# The terms follow pix2pixHD (the paper's baseline) as its code computes them: per-scale losses
# are *summed* over the discriminator scales (GANLoss), the discriminator's real and fake terms are
# halved (train.py), and λ_feat = 10 multiplies feature matching and the VGG loss in the caller.

ADVERSARIAL_KINDS = ('lsgan', 'bce', 'hinge')
# pix2pixHD's VGGLoss weights for relu1_1 .. relu5_1: deeper layers count more.
VGG_LAYER_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)


def _check_kind(kind: str) -> None:
  if kind not in ADVERSARIAL_KINDS:
    raise ValueError(f'unknown adversarial loss {kind!r}; expected one of {ADVERSARIAL_KINDS}.')


def multiscale_d_loss(
  real_outputs: Sequence[jax.Array], fake_outputs: Sequence[jax.Array], kind: str = 'lsgan'
) -> jax.Array:
  """Discriminator loss over scales: ½ Σ_k [L_real(D_k(x)) + L_fake(D_k(G(s)))].

  Per scale, with means over every logit of the map (batch and patches):
    * `lsgan` (pix2pixHD's default): L_real = mean((r − 1)²), L_fake = mean(f²);
    * `bce`: L_real = mean(softplus(−r)), L_fake = mean(softplus(f)) — sigmoid cross-entropy on
      logits, the stable form of pix2pixHD's sigmoid + BCELoss (`--no_lsgan`);
    * `hinge`: L_real = mean(relu(1 − r)), L_fake = mean(relu(1 + f)).
  Scales are summed and the total halved, as pix2pixHD's GANLoss and train.py do (for every kind,
  hinge included, so that switching kinds keeps the balance with the other terms).

  Args:
    real_outputs: per scale, the (B, h, w, 1) logit map of real pairs.
    fake_outputs: per scale, the logit map of generated pairs (stop-gradient them in the caller
      when only D is updated).
    kind: one of `ADVERSARIAL_KINDS`.

  Returns:
    A float32 scalar.
  """
  _check_kind(kind)
  if len(real_outputs) != len(fake_outputs):
    raise ValueError(f'{len(real_outputs)} real and {len(fake_outputs)} fake scales.')
  total = jnp.float32(0)
  for real, fake in zip(real_outputs, fake_outputs, strict=True):
    real, fake = real.astype(jnp.float32), fake.astype(jnp.float32)
    if kind == 'lsgan':
      total += jnp.mean(jnp.square(real - 1)) + jnp.mean(jnp.square(fake))
    elif kind == 'bce':
      total += jnp.mean(jax.nn.softplus(-real)) + jnp.mean(jax.nn.softplus(fake))
    else:
      total += jnp.mean(jax.nn.relu(1 - real)) + jnp.mean(jax.nn.relu(1 + fake))
  return 0.5 * total


def multiscale_g_adv_loss(fake_outputs: Sequence[jax.Array], kind: str = 'lsgan') -> jax.Array:
  """Generator adversarial loss summed over scales: Σ_k L_G(D_k(G(s))).

  Per scale: `lsgan` mean((f − 1)²); `bce` mean(softplus(−f)) (non-saturating, −log σ(f));
  `hinge` −mean(f). Not halved (pix2pixHD halves only D's loss).

  Args:
    fake_outputs: per scale, the (B, h, w, 1) logit map of generated pairs.
    kind: one of `ADVERSARIAL_KINDS`.

  Returns:
    A float32 scalar.
  """
  _check_kind(kind)
  total = jnp.float32(0)
  for fake in fake_outputs:
    fake = fake.astype(jnp.float32)
    if kind == 'lsgan':
      total += jnp.mean(jnp.square(fake - 1))
    elif kind == 'bce':
      total += jnp.mean(jax.nn.softplus(-fake))
    else:
      total -= jnp.mean(fake)
  return total


def multiscale_feature_matching_loss(
  real_features: Sequence[Sequence[jax.Array]], fake_features: Sequence[Sequence[jax.Array]]
) -> jax.Array:
  """pix2pixHD's discriminator feature matching: Σ_k Σ_i (1/K)(4/L) mean|D_k^i(x) − D_k^i(G(s))|.

  K is the number of scales and L the number of intermediate layers per discriminator (the final
  logits excluded): pix2pixHD's D_weights = 1/num_D and feat_weights = 4/(n_layers_D + 1), since
  a PatchGAN with n_layers_D strided blocks has n_layers_D + 1 feature layers before its logits.
  Real features are a fixed target (stop-gradient). Multiply by λ_feat (10) in the caller.

  Args:
    real_features: per scale, the intermediate feature maps of real pairs, logits excluded.
    fake_features: the same layers for generated pairs.

  Returns:
    A float32 scalar.
  """
  if len(real_features) != len(fake_features):
    raise ValueError(f'{len(real_features)} real and {len(fake_features)} fake scales.')
  total = jnp.float32(0)
  for real_layers, fake_layers in zip(real_features, fake_features, strict=True):
    if len(real_layers) != len(fake_layers) or not real_layers:
      raise ValueError(f'{len(real_layers)} real and {len(fake_layers)} fake feature layers.')
    weight = (1 / len(real_features)) * (4 / len(real_layers))
    for real, fake in zip(real_layers, fake_layers, strict=True):
      real = jax.lax.stop_gradient(real).astype(jnp.float32)
      total += weight * jnp.mean(jnp.abs(real - fake.astype(jnp.float32)))
  return total


def vgg_perceptual_loss(
  vgg_fn: Callable[[jax.Array], Sequence[jax.Array]],
  fake_images: jax.Array,
  real_images: jax.Array,
) -> jax.Array:
  """pix2pixHD's VGGLoss: Σ_i w_i mean|F_i(G(s)) − F_i(x)|, w = (1/32, 1/16, 1/8, 1/4, 1).

  F_i are VGG19's relu1_1 .. relu5_1; the real images' features are a fixed target
  (stop-gradient). Both batches go through `vgg_fn` as one, which is exact for VGG (no batch
  statistics) and runs the network once. Multiply by λ_feat (10) in the caller. A train step that
  differentiates it should take the real features once, outside the gradient, and call
  `vgg_feature_distance` instead, so that VGG's backward sees the generated batch only.

  Args:
    vgg_fn: maps (N, H, W, 3) images in [-1, 1] to the five feature maps, e.g.
      `functools.partial(VGG19Features().apply, {'params': vgg_params})`.
    fake_images: (B, H, W, 3) generated images in [-1, 1].
    real_images: (B, H, W, 3) real images in [-1, 1].

  Returns:
    A float32 scalar.
  """
  batch = fake_images.shape[0]
  features = vgg_fn(jnp.concatenate([fake_images, jax.lax.stop_gradient(real_images)]))
  if len(features) != len(VGG_LAYER_WEIGHTS):
    raise ValueError(f'vgg_fn returned {len(features)} feature maps; expected 5.')
  return vgg_feature_distance(
    [both[:batch] for both in features], [both[batch:] for both in features]
  )


def vgg_feature_distance(
  fake_features: Sequence[jax.Array], real_features: Sequence[jax.Array]
) -> jax.Array:
  """`vgg_perceptual_loss` from the five VGG feature maps of each batch (real: stop-gradient)."""
  if len(fake_features) != len(VGG_LAYER_WEIGHTS) or len(real_features) != len(fake_features):
    raise ValueError(
      f'{len(fake_features)} generated and {len(real_features)} real VGG feature maps; '
      'expected 5 each.'
    )
  total = jnp.float32(0)
  for weight, fake, real in zip(VGG_LAYER_WEIGHTS, fake_features, real_features, strict=True):
    real = jax.lax.stop_gradient(real).astype(jnp.float32)
    total += weight * jnp.mean(jnp.abs(fake.astype(jnp.float32) - real))
  return total


def sipl_loss(logits: jax.Array, labels: jax.Array, ignore_label: int) -> jax.Array:
  """SemanticGAN's SIPL: −(1/|Ω'|) Σ_{x∈Ω'} log softmax(a(x))_{ℓ(x)}, a pixel-wise cross-entropy.

  The paper's eq. 2 writes Σ log p without the minus sign; as a loss to minimise it is the
  cross-entropy, as its text says. Ω' are the pixels whose label is not `ignore_label`; the mean
  is over them across the whole batch (torch's NLLLoss with ignore_index), and 0 when there are
  none (torch would give NaN). A label outside [0, K) other than `ignore_label` makes the loss NaN,
  so a wrong label encoding cannot pass silently.

  Args:
    logits: (B, H, W, K) segmenter scores, or log-probabilities (log_softmax leaves those as
      they are).
    labels: (B, H, W) integer class ids in [0, K), or `ignore_label`.
    ignore_label: the id of pixels that do not count (e.g. Cityscapes' void, 255).

  Returns:
    A float32 scalar.
  """
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  num_classes = logits.shape[-1]
  valid = labels != ignore_label
  in_range = (labels >= 0) & (labels < num_classes)
  picked = jnp.take_along_axis(log_probs, jnp.where(valid & in_range, labels, 0)[..., None], -1)
  nll = jnp.where(in_range | ~valid, -picked[..., 0], jnp.nan)
  count = valid.sum()
  return jnp.where(valid, nll, 0).sum() / jnp.maximum(count, 1).astype(jnp.float32)
