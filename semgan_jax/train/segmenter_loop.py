"""ERFNet trained on a paired data set's photos: the segmenter that SIPL and the mIoU metric freeze.

The photos' Cityscapes label ids become the 19 training ids (void ignored); the trained variables
are exported in `semgan_jax.weights.erfnet`'s `.npz` format, so `configs/streets.py` can run SIPL
and the `photos` evaluator's mIoU on the procedural streets set without any download.
"""

import functools
import os
import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import struct, traverse_util

from semgan_jax import data as data_lib
from semgan_jax import losses, parallel
from semgan_jax.data import cityscapes
from semgan_jax.evaluation import evaluator as evaluator_lib
from semgan_jax.evaluation import segmentation
from semgan_jax.models import erfnet
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
from semgan_jax.train.semanticgan_loop import open_paired_data, paired_data_spec, split_loader
from semgan_jax.train.semgan_step import global_norm
from semgan_jax.weights import npz_io

PyTree = Any
EXPORT_FILE = 'erfnet_streets.npz'
# The classes the segmenter is scored on: the 19 training ids; the void channel is never predicted
# (the `photos` evaluator's convention).
_SCORED_CLASSES = cityscapes.NUM_TRAIN_IDS
_INIT_STREAM = 0


@struct.dataclass
class SegmenterState:
  """Everything a segmenter step reads and writes; the module and optimizer are static."""

  step: jax.Array
  params: PyTree
  batch_stats: PyTree
  opt_state: PyTree
  rng: jax.Array  # Typed key; per-step keys are fold_in(rng, step).
  model: nn.Module = struct.field(pytree_node=False)
  tx: optax.GradientTransformation = struct.field(pytree_node=False)

  @property
  def variables(self) -> dict:
    """`{'params', 'batch_stats'}`, as `model.apply` (and the exported file) take them."""
    return {'params': self.params, 'batch_stats': self.batch_stats}


def build_optimizer(optim: ml_collections.ConfigDict, num_steps: int):
  """erfnet_pytorch's Adam with coupled weight decay, lr decayed as (1 - t / T)^power to 0 over
  T = `optim.decay_steps` (or `num_steps` if 0).

  Returns:
    (the optimizer, its learning-rate schedule).
  """
  schedule = optax.polynomial_schedule(
    optim.lr, 0.0, power=optim.power, transition_steps=max(optim.decay_steps or num_steps, 1)
  )
  adam = optax.adam(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps)
  return optax.chain(optax.add_decayed_weights(optim.weight_decay), adam), schedule


def create_segmenter_state(config: ml_collections.ConfigDict, rng: jax.Array) -> SegmenterState:
  """A step-0 state: ERFNet initialised for `config.data`'s size, its optimizer, the train key."""
  model = erfnet.ERFNet(
    num_classes=config.model.num_classes,
    dtype=jnp.dtype(config.model.dtype),
    remat=config.model.remat,
  )
  init_key, train_key = jax.random.split(rng)
  images = jnp.zeros((1, config.data.height, config.data.width, 3), jnp.float32)
  variables = model.init(init_key, images)
  tx, _ = build_optimizer(config.optim, config.train.num_steps)
  return SegmenterState(
    step=jnp.zeros((), jnp.int32),
    params=variables['params'],
    batch_stats=variables['batch_stats'],
    opt_state=tx.init(variables['params']),
    rng=train_key,
    model=model,
    tx=tx,
  )


def make_segmenter_step(label_to_train_id: np.ndarray, ignore_label: int) -> Callable:
  """The pure train step `(state, batch, rng) -> (state, metrics)`.

  `batch`: `image` uint8 (B, H, W, 3) and `label` (B, H, W) label ids, mapped to training ids by
  `label_to_train_id` (pixels mapped to `ignore_label` do not count). Each image is flipped
  horizontally with probability 1/2; ERFNet runs in training mode (batch statistics, dropout) and
  the loss is the pixel-wise cross-entropy SIPL uses (`losses.sipl_loss`).
  """
  table = np.asarray(label_to_train_id, np.int32)

  def train_step(state: SegmenterState, batch: dict, rng: jax.Array):
    flip_key, dropout_key = jax.random.split(rng)
    flip = jax.random.bernoulli(flip_key, 0.5, (batch['image'].shape[0], 1, 1))
    images = batch['image'].astype(jnp.float32) / 255.0
    images = jnp.where(flip[..., None], images[:, :, ::-1], images)
    labels = jnp.asarray(table)[batch['label']]
    labels = jnp.where(flip, labels[:, :, ::-1], labels)

    def loss_fn(params):
      logits, updates = state.model.apply(
        {'params': params, 'batch_stats': state.batch_stats},
        images,
        train=True,
        mutable=['batch_stats'],
        rngs={'dropout': dropout_key},
      )
      return losses.sipl_loss(logits, labels, ignore_label), (logits, updates['batch_stats'])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    valid = labels != ignore_label
    correct = (jnp.argmax(logits, axis=-1) == labels) & valid
    metrics = {
      'train/loss': loss,
      'train/pixel_accuracy': correct.sum() / jnp.maximum(valid.sum(), 1),
      'train/grad_norm': global_norm(grads),
    }
    new_state = state.replace(
      step=state.step + 1,
      params=optax.apply_updates(state.params, updates),
      batch_stats=batch_stats,
      opt_state=opt_state,
    )
    return new_state, metrics

  return train_step


def validate_segmenter_config(config: ml_collections.ConfigDict) -> data_lib.DatasetSpec:
  """Checks the fields a segmenter run depends on; returns the data set's spec.

  Raises:
    UserInputError: naming the first field whose value cannot work, and what was expected.
  """

  spec = paired_data_spec(config)
  d, t, ev = config.data, config.train, config.evals.miou
  expect(spec.paired, f'config.data.name={d.name!r} has no photos; expected a paired data set.')
  expect(
    d.num_classes == cityscapes.NUM_CLASSES,
    f'config.data.num_classes={d.num_classes}; the segmenter learns Cityscapes training ids, '
    f'mapped from the {cityscapes.NUM_CLASSES} Cityscapes label ids.',
  )
  expect(
    config.model.num_classes == erfnet.NUM_CLASSES,
    f'config.model.num_classes={config.model.num_classes}; expected {erfnet.NUM_CLASSES} '
    '(19 Cityscapes training ids + void), the outputs SIPL and the mIoU evaluator load.',
  )
  expect(
    d.height % erfnet.SIZE_DIVISOR == 0 and d.width % erfnet.SIZE_DIVISOR == 0,
    f'config.data.height/width={d.height}x{d.width}; ERFNet needs both divisible by '
    f'{erfnet.SIZE_DIVISOR}.',
  )
  expect(
    config.model.dtype in ('float32', 'bfloat16', 'float16'),
    f"config.model.dtype={config.model.dtype!r}; expected 'float32', 'bfloat16' or 'float16'.",
  )
  expect(d.batch_size > 0, f'config.data.batch_size={d.batch_size}; expected > 0.')
  expect(t.num_steps >= 0, f'config.train.num_steps={t.num_steps}; expected >= 0.')
  for name in ('log_every_steps', 'ckpt_every_steps'):
    expect(t[name] > 0, f'config.train.{name}={t[name]}; expected a positive integer.')
  expect(config.optim.lr > 0, f'config.optim.lr={config.optim.lr}; expected > 0.')
  expect(
    config.optim.decay_steps >= 0, f'config.optim.decay_steps={config.optim.decay_steps}; >= 0.'
  )
  expect(ev.every_steps >= 0, f'config.evals.miou.every_steps={ev.every_steps}; expected >= 0.')
  expect(ev.batch_size > 0, f'config.evals.miou.batch_size={ev.batch_size}; expected > 0.')
  expect(0 <= config.seed < 2**31, f'config.seed={config.seed}; expected an integer in [0, 2**31).')
  return spec


class MiouEvaluator:
  """Validation mIoU of the segmenter over the 19 training ids (void ignored), at its own size.

  Fits `loop.run_evaluators`: `cfg` holds `every_steps` and `prefix`; `run(state)` returns the
  metrics (`miou`, `pixel_accuracy`, `iou/<class>`) and how they were made.
  """

  def __init__(self, cfg: ml_collections.ConfigDict, source, mesh):
    num_images = cfg.num_images or len(source)
    if not 1 <= num_images <= len(source):
      raise UserInputError(
        f'config.evals.miou.num_images={cfg.num_images}; expected 1 to the {len(source)} pairs '
        f'of {cfg.split} (0: all).'
      )
    if cfg.batch_size % mesh.devices.size:
      raise UserInputError(
        f'config.evals.miou.batch_size={cfg.batch_size}; expected a multiple of the '
        f'{mesh.devices.size} devices.'
      )
    self.cfg = {'every_steps': cfg.every_steps, 'prefix': 'eval'}
    self.source, self.mesh = source, mesh
    self.num_images, self.batch_size = num_images, cfg.batch_size
    self.protocol = {
      'evaluator': 'miou',
      'split': cfg.split,
      'num_images': num_images,
      'labels': 'Cityscapes label ids -> 19 train ids, void ignored',
      'prediction': 'argmax over the 19 train-id logits (void channel 19 left out), no resize',
    }

  def _batches(self) -> Iterator[tuple[jax.Array, jax.Array]]:
    """(uint8 images, training ids) of the evaluated pairs; padded rows are all void."""
    train_ids = cityscapes.TRAIN_IDS.astype(np.int32)
    for start in range(0, self.num_images, self.batch_size):
      examples = [
        self.source[i] for i in range(start, min(start + self.batch_size, self.num_images))
      ]
      images = np.zeros((self.batch_size, *np.shape(examples[0]['image'])), np.uint8)
      labels = np.full(images.shape[:3], cityscapes.IGNORE_TRAIN_ID, np.int32)
      for row, example in enumerate(examples):
        images[row] = example['image']
        # License plates (-1) are 'unlabeled', as in paired.create_paired_iterator.
        labels[row] = train_ids[np.maximum(np.asarray(example['label'], np.int32), 0)]
      rows = (evaluator_lib.local_rows(images), evaluator_lib.local_rows(labels))
      yield parallel.make_global_batch(rows, self.mesh)

  def run(self, state: SegmenterState) -> dict:
    def segment(variables, images):
      logits = state.model.apply(variables, images.astype(jnp.float32) / 255.0)
      return logits[..., :_SCORED_CLASSES]

    scores = segmentation.evaluate_miou(
      segment,
      state.variables,
      self._batches(),
      num_classes=_SCORED_CLASSES,
      ignore_label=cityscapes.IGNORE_TRAIN_ID,
    )
    metrics = {'miou': scores['miou'], 'pixel_accuracy': scores['pixel_accuracy']}
    for name, iou in zip(cityscapes.TRAIN_ID_NAMES, scores['per_class'], strict=True):
      metrics[f'iou/{name}'] = float(iou)
    return {'metrics': metrics, 'protocol': self.protocol}


def export_variables(state: SegmenterState, path: str | os.PathLike):
  """Writes ERFNet's variables as `semgan_jax.weights.erfnet.load_params` reads them: float32
  arrays under `params/...` and `batch_stats/...` keys."""
  flat = traverse_util.flatten_dict(jax.device_get(state.variables), sep='/')
  arrays = {key: np.asarray(value, np.float32) for key, value in flat.items()}
  return npz_io.write_npz_atomically(pathlib.Path(path), arrays)


def _init_state(config, mesh) -> SegmenterState:
  """The state, built directly in its replicated sharding."""
  init_rng = jax.random.fold_in(jax.random.key(config.seed), _INIT_STREAM)
  init = jax.jit(
    functools.partial(create_segmenter_state, config), out_shardings=parallel.replicated(mesh)
  )
  return init(init_rng)


def train_segmenter(config: ml_collections.ConfigDict, workdir: str) -> SegmenterState:
  """Trains ERFNet as `config` says (see `configs/streets_erfnet.py`), resuming from `workdir`.

  Writes `config.json`, `checkpoints/`, TensorBoard events, `eval/step_*.json` (validation mIoU)
  and, at the end, the variables to `config.train.export_path` (default
  `<workdir>/erfnet_streets.npz`). A re-run continues exactly.

  Returns:
    The final state.
  """
  spec = validate_segmenter_config(config)
  workdir, mesh = open_run(config, workdir)
  load_split, source, data_iter = open_paired_data(config, spec)
  state, ckpt, writer = resume_or_start(
    config,
    workdir,
    _init_state(config, mesh),
    data_iter,
    networks=lambda state: {'ERFNet': state.params},
  )
  start_step, num_steps = int(state.step), config.train.num_steps
  what = f'{spec.name}:{config.data.config_name} ({len(source)} training pairs)'
  logging.info('ERFNet on %s, steps %d -> %d.', what, start_step, num_steps)
  train_step = jit_train_step(
    make_segmenter_step(cityscapes.TRAIN_IDS, cityscapes.IGNORE_TRAIN_ID),
    mesh,
  )
  evaluator = MiouEvaluator(config.evals.miou, load_split(config.evals.miou.split), mesh)
  _, schedule = build_optimizer(config.optim, num_steps)
  state = run_training(
    state=state,
    start_step=start_step,
    num_steps=num_steps,
    train_config=config.train,
    next_batch=lambda: parallel.make_global_batch(next(data_iter), mesh),
    train_step=train_step,
    train_rng=jax.random.key(config.seed),
    describe=lambda s: f'loss {s["train/loss"]:.4f} | pixel acc {s["train/pixel_accuracy"]:.3f}',
    write_samples=None,
    ckpt=ckpt,
    data_iter=data_iter,
    evaluators={'miou': evaluator},
    workdir=workdir,
    writer=writer,
    extra_scalars=lambda step: {'train/lr': float(schedule(step))},
  )
  path = config.train.export_path or os.path.join(workdir, EXPORT_FILE)
  if jax.process_index() == 0:
    export_variables(state, os.path.expanduser(path))
    logging.info('Wrote the ERFNet weights (for SIPL and mIoU) to %s', path)
  return state


def evaluate_segmenter(config, workdir: str, *, step: int | None = None) -> dict:
  """`--mode=eval`: the validation mIoU of a checkpoint of `workdir` (default: the latest)."""
  validate_segmenter_config(config)
  workdir, mesh, state = restore_for_job(
    config, workdir, functools.partial(_init_state, config), step=step
  )
  evaluator = MiouEvaluator(config.evals.miou, split_loader(config)(config.evals.miou.split), mesh)
  return run_eval_job({'miou': evaluator}, state, workdir)


__all__ = [
  'MiouEvaluator',
  'SegmenterState',
  'create_segmenter_state',
  'evaluate_segmenter',
  'export_variables',
  'make_segmenter_step',
  'train_segmenter',
  'validate_segmenter_config',
]
