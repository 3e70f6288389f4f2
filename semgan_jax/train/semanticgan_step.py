"""SemanticGAN's state and pure train step: label map → photo, pix2pixHD's losses and SIPL.

One step follows pix2pixHD: G(s) is computed once; D's loss (real pairs vs stop-gradiented fake
pairs) and G's loss (adversarial + λ_feat·feature matching + λ_vgg·VGG perceptual, and any extra
term such as SIPL) are taken against the same discriminator parameters, then both networks take
their Adam step. G's loss gradients never reach D's parameters and D's never reach G's: each
gradient is taken with respect to one network's parameters only.
"""

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from semgan_jax import images, losses, segmenter
from semgan_jax.models import LabelToPhotoGenerator, MultiScaleDiscriminator, erfnet
from semgan_jax.models.inputs import label_to_generator_input
from semgan_jax.models.vgg import VGG19Features
from semgan_jax.train import optim
from semgan_jax.train.semgan_step import global_norm
from semgan_jax.train.state import GANState


def build_semanticgan_models(config: ml_collections.ConfigDict):
  """`config.model` → (LabelToPhotoGenerator, MultiScaleDiscriminator) with plain fields."""
  m = config.model
  dtype = jnp.dtype(m.dtype)
  generator = LabelToPhotoGenerator(
    base_features=m.g_base_features,
    num_downsamplings=m.num_downsamplings,
    num_blocks=m.num_blocks,
    block=m.block,
    scale=m.scale,
    upsample=m.get('upsample', 'transpose'),
    dtype=dtype,
    conv_lowering=m.conv_lowering,
    remat=m.remat,
  )
  discriminator = MultiScaleDiscriminator(
    num_d=m.num_d,
    base_features=m.d_base_features,
    num_layers=m.d_num_layers,
    dtype=dtype,
    conv_lowering=m.conv_lowering,
  )
  return generator, discriminator


def build_vgg(config: ml_collections.ConfigDict) -> VGG19Features:
  """The perceptual loss's VGG19 in the run's computation dtype and convolution lowering."""
  return VGG19Features(
    dtype=jnp.dtype(config.model.dtype), conv_lowering=config.model.conv_lowering
  )


def create_semanticgan_state(
  config: ml_collections.ConfigDict,
  rng: jax.Array,
  frozen_params=None,
  tx: optax.GradientTransformation | None = None,
) -> GANState:
  """Initialises G, D and both Adam states; `frozen_params` holds e.g. {'vgg': params}.

  InstanceNorm keeps no statistics, so the batch-statistics fields are empty dicts.

  Args:
    config: the experiment config.
    rng: typed key, split for G init, D init and the training rng.
    frozen_params: parameters of the frozen loss networks ({'vgg': ...}), or None.
    tx: the optimizer of each network; default: Adam at the constant `config.optim.lr`. The
      runner passes the config's schedule (pix2pixHD's epochs, `semgan_jax.train.optim`).
  """
  generator, discriminator = build_semanticgan_models(config)
  g_key, d_key, train_key = jax.random.split(rng, 3)
  height, width = config.data.height, config.data.width
  channels = config.data.num_classes + 1  # one-hot ⊕ instance boundaries
  x = jnp.zeros((1, height, width, channels), jnp.float32)
  image = jnp.zeros((1, height, width, 3), jnp.float32)
  tx = optim.build_optimizer(config.optim, config.optim.lr) if tx is None else tx
  return GANState.create(
    generator=generator,
    discriminator=discriminator,
    g_variables=generator.init(g_key, x),
    d_variables=discriminator.init(d_key, x, image),
    g_tx=tx,
    d_tx=tx,
    rng=train_key,
    g_ema_decay=config.model.g_ema_decay,
    frozen_params=frozen_params,
  )


def make_sipl_loss() -> Callable:
  """SIPL as an `extra_g_losses` term: a frozen ERFNet segments G(s) and is scored against s.

  G's photos and the batch's label ids follow `semgan_jax.segmenter`'s conventions (ERFNet's
  [0, 1] inputs, training ids, void ignored). The segmenter runs in inference mode (running
  BatchNorm statistics, no dropout) with `frozen_params['erfnet']` ({'params', 'batch_stats'});
  its weights get no update, as they are not G's parameters, but the loss's gradient flows
  through them into G's image.

  Returns:
    `fn(frozen_params, fake, batch) -> scalar`, the pixel-wise cross-entropy (`losses.sipl_loss`).
  """

  def sipl(frozen_params, fake, batch):
    # Any width (the published network is 1), read from the variables' static shapes.
    model = erfnet.ERFNet(width=erfnet.width_of(frozen_params['erfnet']))
    logits = segmenter.logits(model, frozen_params['erfnet'], fake, train=False)
    return losses.sipl_loss(logits, segmenter.train_ids(batch['label']), segmenter.VOID)

  return sipl


def translate(state: GANState, labels: jax.Array, instances: jax.Array, num_classes: int):
  """G(s) for label maps (B, H, W) and instance maps; uses the EMA of G's weights when kept."""
  params = state.g_params if state.g_ema_params is None else state.g_ema_params
  x = label_to_generator_input(labels, instances, num_classes)
  return state.generator.apply({'params': params}, x)


def make_semanticgan_gradients(
  *,
  num_classes: int,
  adversarial: str = 'lsgan',
  lambda_feat: float = 10.0,
  lambda_vgg: float = 10.0,
  lambda_l1: float = 0.0,
  extra_g_losses: dict[str, tuple[float, Callable]] | None = None,
  vgg: nn.Module | None = None,
  instance_noise_std: float = 0.0,
  instance_noise_steps: int = 0,
) -> Callable[..., tuple[jax.Array, jax.Array, dict]]:
  """Builds `gradients(state, batch, rng=None) -> (g_grads, d_grads, metrics)`: both gradients.

  Every network output is computed once: G(s); D on the real pair, whose logits serve D's loss
  and whose features are feature matching's fixed targets; D on the generated pair, whose one
  forward pass serves both losses (its backward is taken twice: into G's image for G's loss,
  into D's parameters for D's); VGG19 of the real photo, outside any gradient. The gradients
  are those of the plain formulation, `jax.grad` of G's loss through fresh D and VGG passes and
  of D's loss through its own (`tests/test_semanticgan_train.py` checks it). G's loss gradients
  never reach D's parameters and D's never reach G's.

  Args:
    num_classes: label ids are in [0, num_classes); G's input has num_classes + 1 channels.
    adversarial: 'lsgan' (pix2pixHD's default), 'bce' or 'hinge'.
    lambda_feat: weight of the discriminator feature-matching loss (10).
    lambda_vgg: weight of the VGG19 perceptual loss (10); needs `state.frozen_params['vgg']`.
      0 switches the term off (and then no VGG weights are needed).
    lambda_l1: weight of pix2pix's L1 to the paired photo, mean |G(s) - x| in [-1, 1] units
      (0: off, as in pix2pixHD and the paper); logged as `train/g_l1`.
    extra_g_losses: more generator terms, name → (weight, fn(frozen_params, fake, batch) ->
      scalar), e.g. SIPL with a frozen segmenter. Each is logged as `train/g_<name>`.
    vgg: the VGG19Features module to run (its dtype and convolution lowering); default float32.
    instance_noise_std: std of Gaussian noise added to the photo of every discriminator input,
      real and generated, each its own draw from `rng` (0: off, as in pix2pixHD). It blurs the
      two distributions into each other for D (Sønderby et al.); being independent per channel,
      it also hides colour noise from D, and on the streets it added to G's (RESULTS.md, "The
      embedded streets default"). G's gradient through D is taken at the noisy input; feature
      matching's targets are D's features of the noisy real photo.
    instance_noise_steps: steps over which the std decays linearly to 0 (0: constant).

  Returns:
    The function. `batch` holds `image` uint8 (B, H, W, 3), `label` and `instance` int32
    (B, H, W); `metrics` are the step's `train/*` scalars.
  """
  if adversarial not in losses.ADVERSARIAL_KINDS:
    raise ValueError(
      f'config.loss.adversarial={adversarial!r}; expected one of {losses.ADVERSARIAL_KINDS}.'
    )
  extra_g_losses = dict(extra_g_losses or {})
  vgg = VGG19Features() if vgg is None else vgg

  def gradients(
    state: GANState, batch: dict, rng: jax.Array | None = None
  ) -> tuple[jax.Array, jax.Array, dict]:
    x = label_to_generator_input(batch['label'], batch['instance'], num_classes)
    real = images.uint8_to_signed(batch['image'])
    frozen = state.frozen_params
    real_noise = fake_noise = None
    if instance_noise_std > 0:
      if rng is None:
        raise ValueError('instance_noise_std > 0 needs the step rng: gradients(state, batch, rng).')
      std = losses.instance_noise_std(state.step, instance_noise_std, instance_noise_steps)
      real_key, fake_key = jax.random.split(rng)
      real_noise = std * jax.random.normal(real_key, real.shape, real.dtype)
      fake_noise = std * jax.random.normal(fake_key, real.shape, real.dtype)

    def discriminate(d_params, photos, noise=None):
      photos = photos if noise is None else photos + noise
      return state.discriminator.apply({'params': d_params}, x, photos)

    fake, g_vjp = jax.vjp(lambda p: state.generator.apply({'params': p}, x), state.g_params)
    real_out, d_vjp_real = jax.vjp(lambda p: discriminate(p, real, real_noise), state.d_params)
    fake_out, d_vjp_fake = jax.vjp(
      lambda p, f: discriminate(p, f, fake_noise), state.d_params, fake
    )
    real_features = [scale[:-1] for scale in real_out]
    if lambda_vgg > 0:
      vgg_fn = functools.partial(vgg.apply, {'params': frozen['vgg']})
      real_vgg = jax.lax.stop_gradient(vgg_fn(real))

    def g_loss_fn(fake, fake_out):
      terms = {
        'adv': losses.multiscale_g_adv_loss([scale[-1] for scale in fake_out], adversarial),
        'feat': losses.multiscale_feature_matching_loss(
          real_features, [scale[:-1] for scale in fake_out]
        ),
      }
      total = terms['adv'] + lambda_feat * terms['feat']
      if lambda_vgg > 0:
        terms['vgg'] = losses.vgg_feature_distance(vgg_fn(fake), real_vgg)
        total += lambda_vgg * terms['vgg']
      if lambda_l1 > 0:
        terms['l1'] = jnp.mean(jnp.abs(fake - real))
        total += lambda_l1 * terms['l1']
      for name, (weight, fn) in extra_g_losses.items():
        terms[name] = fn(frozen, fake, batch)
        total += weight * terms[name]
      return total, terms

    (g_loss, g_terms), (g_image_grad, g_out_grad) = jax.value_and_grad(
      g_loss_fn, argnums=(0, 1), has_aux=True
    )(fake, fake_out)
    # Through D into G's image only: D's parameter part of this backward is never used.
    g_image_grad = g_image_grad + d_vjp_fake(g_out_grad)[1]
    (g_grads,) = g_vjp(g_image_grad)

    real_logits = [scale[-1] for scale in real_out]
    fake_logits = [scale[-1] for scale in fake_out]
    d_loss, (d_real_grad, d_fake_grad) = jax.value_and_grad(
      lambda r, f: losses.multiscale_d_loss(r, f, adversarial), argnums=(0, 1)
    )(real_logits, fake_logits)
    # Into D's parameters only: the generated photo is a constant of D's loss (pix2pixHD's detach).
    d_grads = jax.tree.map(
      jnp.add,
      d_vjp_real(_logit_cotangent(real_out, d_real_grad))[0],
      d_vjp_fake(_logit_cotangent(fake_out, d_fake_grad))[0],
    )

    metrics = {
      'train/g_loss': g_loss,
      'train/d_loss': d_loss,
      'train/d_real_score': jnp.mean(jnp.stack([r.mean() for r in real_logits])),
      'train/d_fake_score': jnp.mean(jnp.stack([f.mean() for f in fake_logits])),
      'train/g_grad_norm': global_norm(g_grads),
      'train/d_grad_norm': global_norm(d_grads),
      'train/g_l1_to_real': jnp.mean(jnp.abs(fake - real)),
    }
    metrics.update({f'train/g_{name}': value for name, value in g_terms.items()})
    if instance_noise_std > 0:
      metrics['train/instance_noise_std'] = std
    return g_grads, d_grads, metrics

  return gradients


def make_semanticgan_step(**kwargs) -> Callable[[GANState, dict, jax.Array], tuple[GANState, dict]]:
  """Builds `train_step(state, batch, rng) -> (state, metrics)` for SemanticGAN.

  The step takes `make_semanticgan_gradients(**kwargs)` (same arguments) and then both Adam
  steps, against the same discriminator parameters, as pix2pixHD does. `rng` draws the
  instance noise when it is on; else the step is deterministic, as pix2pixHD's (no dropout, no
  noise input).
  """
  gradients = make_semanticgan_gradients(**kwargs)

  def train_step(state: GANState, batch: dict, rng: jax.Array) -> tuple[GANState, dict]:
    g_grads, d_grads, metrics = gradients(state, batch, rng)
    g_params, g_opt_state, g_ema_params = state.apply_g_gradients(g_grads)
    d_params, d_opt_state = state.apply_d_gradients(d_grads)
    new_state = state.replace(
      step=state.step + 1,
      g_params=g_params,
      g_opt_state=g_opt_state,
      d_params=d_params,
      d_opt_state=d_opt_state,
      g_ema_params=g_ema_params,
    )
    return new_state, metrics

  return train_step


def _logit_cotangent(outputs, logit_grads):
  """A cotangent for D's per-scale outputs that is `logit_grads` on the logits, zero elsewhere."""
  return [
    [jnp.zeros_like(f) for f in scale[:-1]] + [grad]
    for scale, grad in zip(outputs, logit_grads, strict=True)
  ]
