"""SemanticGAN's training loop and sampling job (label map → photo): I/O around the pure step."""

import functools
import os
from collections.abc import Callable

import jax
import ml_collections
import numpy as np
import optax
from absl import logging
from etils import epath

from semgan_jax import data as data_lib
from semgan_jax import images, parallel
from semgan_jax.data import cityscapes, paired
from semgan_jax.evaluation import evaluator as evaluator_lib
from semgan_jax.evaluation import photo_evaluator
from semgan_jax.models import BLOCKS, conv, erfnet
from semgan_jax.train.loop import (
  UserInputError,
  expect,
  jit_train_step,
  open_run,
  restore_for_job,
  resume_or_start,
  run_eval_job,
  run_training,
)
from semgan_jax.train.semanticgan_step import (
  build_vgg,
  create_semanticgan_state,
  make_semanticgan_step,
  make_sipl_loss,
  translate,
)
from semgan_jax.train.state import GANState

_INIT_STREAM = 0


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """Full batches per pass over the training split (the iterator drops the remainder)."""
  return max(num_examples // batch_size, 1)


def epoch_schedule(
  lr: float, steps_per_epoch: int, epochs_constant: int, epochs_decay: int
) -> optax.Schedule:
  """pix2pixHD's schedule: `lr` for `epochs_constant` epochs, then linearly to 0 over
  `epochs_decay` more (the paper: 100 + 100)."""
  constant = epochs_constant * steps_per_epoch
  decay = max(epochs_decay * steps_per_epoch, 1)
  return optax.join_schedules(
    [optax.constant_schedule(lr), optax.linear_schedule(lr, 0.0, decay)], [constant]
  )


def total_steps(config, num_examples: int) -> int:
  """`train.num_steps` if positive, else the schedule's length in steps."""
  if config.train.num_steps > 0:
    return config.train.num_steps
  per_epoch = steps_per_epoch(num_examples, config.data.batch_size)
  return (config.optim.epochs_constant + config.optim.epochs_decay) * per_epoch


def paired_data_spec(config: ml_collections.ConfigDict) -> data_lib.DatasetSpec:
  """The spec of `config.data`'s set, after checking its name, size and class count against it."""
  try:
    spec = data_lib.get_dataset_spec(config.data.name, config.data.config_name)
  except ValueError as e:
    raise UserInputError(str(e)) from e
  d = config.data
  if (d.height, d.width) != (spec.height, spec.width):
    raise UserInputError(
      f'config.data.height/width={d.height}x{d.width}, but {spec.name}:{d.config_name} is '
      f'{spec.height}x{spec.width}.'
    )
  if d.num_classes != spec.num_classes:
    raise UserInputError(
      f'config.data.num_classes={d.num_classes}, but {spec.name} has {spec.num_classes} classes.'
    )
  return spec


def validate_semanticgan_config(config: ml_collections.ConfigDict) -> data_lib.DatasetSpec:
  """Checks the fields a SemanticGAN run depends on; returns the data set's spec."""

  spec = paired_data_spec(config)
  d, m, loss = config.data, config.model, config.loss
  expect(m.block in BLOCKS, f'config.model.block={m.block!r}; expected one of {sorted(BLOCKS)}.')
  expect(
    m.conv_lowering in conv.LOWERINGS,
    f'config.model.conv_lowering={m.conv_lowering!r}; expected one of {conv.LOWERINGS}.',
  )
  expect(
    m.dtype in ('float32', 'bfloat16'),
    f"config.model.dtype={m.dtype!r}; expected 'float32' or 'bfloat16'.",
  )
  factor = 2**m.num_downsamplings
  expect(
    d.height % factor == 0 and d.width % factor == 0,
    f'config.data.height/width={d.height}x{d.width} must be divisible by 2**'
    f'config.model.num_downsamplings={factor}.',
  )
  expect(
    loss.adversarial in ('lsgan', 'bce', 'hinge'),
    f"config.loss.adversarial={loss.adversarial!r}; expected 'lsgan', 'bce' or 'hinge'.",
  )
  for name in ('lambda_feat', 'lambda_vgg'):
    expect(loss[name] >= 0, f'config.loss.{name}={loss[name]}; expected >= 0.')
  expect(0.0 <= m.g_ema_decay < 1.0, f'config.model.g_ema_decay={m.g_ema_decay}; expected [0, 1).')
  expect(loss.lambda_sipl >= 0, f'config.loss.lambda_sipl={loss.lambda_sipl}; expected >= 0.')
  if loss.lambda_sipl > 0:
    # The frozen ERFNet reads Cityscapes training ids, mapped from the 35 label ids, and halves
    # its input three times.
    expect(
      d.num_classes == cityscapes.NUM_CLASSES,
      f'config.loss.lambda_sipl={loss.lambda_sipl}: SIPL maps Cityscapes label ids to ERFNet '
      f'training ids, but config.data.num_classes={d.num_classes} (expected '
      f'{cityscapes.NUM_CLASSES}).',
    )
    expect(
      d.height % erfnet.SIZE_DIVISOR == 0 and d.width % erfnet.SIZE_DIVISOR == 0,
      f'config.loss.lambda_sipl={loss.lambda_sipl}: ERFNet needs a height and width divisible '
      f'by {erfnet.SIZE_DIVISOR}; config.data.height/width={d.height}x{d.width}.',
    )
  expect(d.batch_size > 0, f'config.data.batch_size={d.batch_size}; expected > 0.')
  return spec


def load_frozen_params(config) -> dict:
  """Weights of the frozen networks the losses need: VGG19 when `loss.lambda_vgg > 0`, ERFNet
  when `loss.lambda_sipl > 0`. A missing or wrong file is one line naming the field to fix."""
  from semgan_jax.weights import erfnet as erfnet_weights
  from semgan_jax.weights import vgg19

  needed = (
    ('vgg', 'lambda_vgg', 'vgg_weights', 'the VGG19 perceptual loss', vgg19),
    ('erfnet', 'lambda_sipl', 'erfnet_weights', 'SIPL (a frozen ERFNet)', erfnet_weights),
  )
  frozen = {}
  for key, weight_field, path_field, what, module in needed:
    if config.loss[weight_field] <= 0:
      continue
    try:
      frozen[key] = module.load_params(module.ensure_weights(config.loss[path_field] or None))
    except (OSError, ValueError) as e:
      raise UserInputError(
        f'config.loss.{weight_field}={config.loss[weight_field]} asks for {what}, but: {e} (or '
        f'switch the loss off: --config.loss.{weight_field}=0)'
      ) from e
  return frozen


def _extra_g_losses(config) -> dict:
  """G's loss terms beyond pix2pixHD's: SIPL, weighted λ2 = `loss.lambda_sipl`, when on."""
  if config.loss.lambda_sipl <= 0:
    return {}
  sipl = make_sipl_loss(cityscapes.TRAIN_IDS, cityscapes.IGNORE_TRAIN_ID)
  return {'sipl': (config.loss.lambda_sipl, sipl)}


def _init_state(config, mesh, frozen, num_examples: int) -> GANState:
  """The state, built directly in its replicated sharding."""
  schedule = epoch_schedule(
    config.optim.lr,
    steps_per_epoch(num_examples, config.data.batch_size),
    config.optim.epochs_constant,
    config.optim.epochs_decay,
  )
  init_rng = jax.random.fold_in(jax.random.key(config.seed), _INIT_STREAM)
  frozen = jax.device_put(frozen, parallel.replicated(mesh))
  init = jax.jit(
    functools.partial(create_semanticgan_state, config, schedule=schedule),
    out_shardings=parallel.replicated(mesh),
  )
  return init(init_rng, frozen)


def _restore_template(config, load_split) -> Callable:
  """`mesh -> state` to restore a checkpoint into for sampling and evaluation. The frozen loss
  networks are not needed there: an empty dict fits the checkpoint, which never holds them."""
  return lambda mesh: _init_state(config, mesh, {}, len(load_split('train')))


def _load_source(config, split: str = 'train'):
  """The data set's split, prepared on first use; missing or broken files become one line."""
  try:
    return data_lib.load_source(
      config.data.name,
      config.data.data_dir,
      split=split,
      config_name=config.data.config_name,
      manual_dir=config.data.get('manual_dir') or None,
    )
  except (OSError, ValueError) as e:
    raise UserInputError(f'data set {config.data.name!r}: {e}') from e


def split_loader(config) -> Callable[[str], object]:
  """`split -> source` for one run; each split is opened once however many parts read it."""
  return functools.cache(functools.partial(_load_source, config))


def open_paired_data(config, spec) -> tuple[Callable[[str], object], object, object]:
  """A run's data: `split -> source` (each split opened once), the training split and this
  process's checkpointable iterator of its (image, label, instance) batches."""
  load_split = split_loader(config)
  source = load_split('train')
  data_iter = paired.create_paired_iterator(
    source,
    global_batch_size=config.data.batch_size,
    num_classes=spec.num_classes,
    seed=config.seed,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
  )
  return load_split, source, data_iter


def _build_evaluators(config, spec, mesh, load_split) -> dict:
  """The `photos` evaluators of `config.evals`; config and weight problems become one line."""
  try:
    return photo_evaluator.build_photo_evaluators(
      config.evals,
      spec=spec,
      load_split=load_split,
      mesh=mesh,
      translate_fn=functools.partial(translate, num_classes=spec.num_classes),
    )
  except evaluator_lib.EvalConfigError as e:
    raise UserInputError(str(e)) from e


def _validation_examples(load_split, count: int) -> dict:
  """The first `count` validation pairs: fixed inputs for sample grids."""
  source = load_split('validation')
  examples = [source[i] for i in range(min(count, len(source)))]
  return {
    key: np.stack([np.asarray(e[key]) for e in examples]).astype(
      np.uint8 if key == 'image' else np.int32
    )
    for key in ('image', 'label', 'instance')
  }


def triplet_grid(labels, generated, real, palette) -> np.ndarray:
  """Rows of (colorized label map | generated photo | real photo), as one uint8 image."""
  colored = data_lib.colorize(labels, palette)
  fake = images.rgb_to_uint8(generated)
  tiles = np.stack([colored, fake, np.asarray(real, np.uint8)], axis=1)
  return images.make_grid(tiles.reshape(-1, *tiles.shape[2:]), columns=3)


def train_semanticgan(config: ml_collections.ConfigDict, workdir: str) -> GANState:
  """Trains SemanticGAN as `config` says, resuming from `workdir` if possible.

  Writes `config.json`, `checkpoints/`, `samples/step_*.png` (label | generated | real rows of
  fixed validation pairs) and TensorBoard events; a re-run continues exactly.
  """
  spec = validate_semanticgan_config(config)
  workdir, mesh = open_run(config, workdir)
  frozen = load_frozen_params(config)
  load_split, source, data_iter = open_paired_data(config, spec)
  num_steps = total_steps(config, len(source))
  state, ckpt, writer = resume_or_start(
    config, workdir, _init_state(config, mesh, frozen, len(source)), data_iter
  )
  start_step = int(state.step)
  logging.info(
    'SemanticGAN (%s blocks) on %s %dx%d, %d images/epoch, steps %d -> %d.',
    config.model.block,
    spec.name,
    config.data.height,
    config.data.width,
    len(source),
    start_step,
    num_steps,
  )
  train_step = jit_train_step(
    make_semanticgan_step(
      num_classes=spec.num_classes,
      adversarial=config.loss.adversarial,
      lambda_feat=config.loss.lambda_feat,
      lambda_vgg=config.loss.lambda_vgg,
      extra_g_losses=_extra_g_losses(config),
      vgg=build_vgg(config),
    ),
    mesh,
  )
  fixed = _validation_examples(load_split, config.train.num_samples)
  translate_fn = jax.jit(functools.partial(translate, num_classes=spec.num_classes))
  evaluators = _build_evaluators(config, spec, mesh, load_split)
  train_rng = jax.random.key(config.seed)
  schedule = epoch_schedule(
    config.optim.lr,
    steps_per_epoch(len(source), config.data.batch_size),
    config.optim.epochs_constant,
    config.optim.epochs_decay,
  )

  def write_samples(state: GANState, step: int):
    generated = jax.device_get(translate_fn(state, fixed['label'], fixed['instance']))
    grid = triplet_grid(fixed['label'], generated, fixed['image'], spec.palette)
    if jax.process_index() == 0:
      images.write_png(epath.Path(workdir) / 'samples' / f'step_{step:07d}.png', grid)
      writer.write_images(step, {'samples': grid[None]})

  def describe(summary: dict) -> str:
    optional = ''.join(
      f' {name} {summary[f"train/g_{name}"]:.3f}'
      for name in ('vgg', 'sipl')
      if f'train/g_{name}' in summary
    )
    return (
      f'g_loss {summary["train/g_loss"]:.4f} (adv {summary["train/g_adv"]:.3f} feat '
      f'{summary["train/g_feat"]:.3f}{optional}) | d_loss {summary["train/d_loss"]:.4f} | '
      f'L1 {summary["train/g_l1_to_real"]:.3f}'
    )

  return run_training(
    state=state,
    start_step=start_step,
    num_steps=num_steps,
    train_config=config.train,
    next_batch=lambda: parallel.make_global_batch(next(data_iter), mesh),
    train_step=train_step,
    train_rng=train_rng,
    describe=describe,
    write_samples=write_samples,
    ckpt=ckpt,
    data_iter=data_iter,
    evaluators=evaluators,
    workdir=workdir,
    writer=writer,
    extra_scalars=lambda step: {'train/lr': float(schedule(step))},
  )


def sample_semanticgan(config, workdir: str, *, num_samples: int) -> dict[str, str]:
  """Writes (label, generated, real) triplets of the first validation pairs as a PNG grid."""
  spec = validate_semanticgan_config(config)
  if num_samples <= 0:
    raise UserInputError(f'--num_samples={num_samples}; expected a positive integer.')
  load_split = split_loader(config)
  workdir, _, state = restore_for_job(config, workdir, _restore_template(config, load_split))
  step = int(state.step)
  fixed = _validation_examples(load_split, num_samples)
  generated = jax.device_get(
    jax.jit(functools.partial(translate, num_classes=spec.num_classes))(
      state, fixed['label'], fixed['instance']
    )
  )
  grid = triplet_grid(fixed['label'], generated, fixed['image'], spec.palette)
  path = epath.Path(workdir) / 'samples' / f'triplets_step{step}.png'
  if jax.process_index() == 0:
    images.write_png(path, grid)
  return {'png': os.fspath(path)}


def evaluate_semanticgan(config, workdir: str, *, step: int | None = None) -> dict:
  """`--mode=eval`: the `photos` evaluators of `config.evals` on a checkpoint of `workdir`."""
  spec = validate_semanticgan_config(config)
  if not config.evals:
    raise UserInputError('config.evals is empty: nothing to evaluate (see configs/streets.py).')
  load_split = split_loader(config)
  workdir, mesh, state = restore_for_job(
    config, workdir, _restore_template(config, load_split), step=step
  )
  return run_eval_job(_build_evaluators(config, spec, mesh, load_split), state, workdir)
