"""The segmenter task: ERFNet trained on a paired data set's photos, the network SIPL freezes.

configs/streets_erfnet.py. The label ids become the 19 training ids (`semgan_jax.segmenter`);
the trained variables are exported in `semgan_jax.weights.erfnet`'s `.npz` format, so
`configs/streets.py` can run SIPL and the `photos` evaluator's mIoU on the procedural streets set
without any download.
"""

import os
import pathlib
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import struct, traverse_util

from semgan_jax import losses, segmenter
from semgan_jax.data import paired
from semgan_jax.errors import UserInputError
from semgan_jax.models import erfnet
from semgan_jax.tasks.base import Task, dataset_spec, expect, open_split_data
from semgan_jax.train import optim
from semgan_jax.train.semgan_step import global_norm
from semgan_jax.weights import npz_io

PyTree = Any
EXPORT_FILE = 'erfnet_streets.npz'


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


def create_segmenter_state(
  config: ml_collections.ConfigDict, rng: jax.Array, tx: optax.GradientTransformation | None = None
) -> SegmenterState:
  """A step-0 state: ERFNet initialised for `config.data`'s size, its optimizer (default:
  `config.optim`'s over `train.num_steps`), the training key."""
  if tx is None:
    schedule = optim.build_schedule(config.optim, num_steps=config.train.num_steps)
    tx = optim.build_optimizer(config.optim, schedule)
  model = erfnet.ERFNet(
    num_classes=config.model.num_classes,
    width=config.model.get('width', 1.0),
    dtype=jnp.dtype(config.model.dtype),
    remat=config.model.remat,
  )
  init_key, train_key = jax.random.split(rng)
  variables = model.init(init_key, jnp.zeros((1, config.data.height, config.data.width, 3)))
  return SegmenterState(
    step=jnp.zeros((), jnp.int32),
    params=variables['params'],
    batch_stats=variables['batch_stats'],
    opt_state=tx.init(variables['params']),
    rng=train_key,
    model=model,
    tx=tx,
  )


def make_segmenter_step() -> Callable:
  """The pure train step `(state, batch, rng) -> (state, metrics)`.

  `batch`: `image` uint8 (B, H, W, 3) and `label` (B, H, W) Cityscapes label ids, read as
  `semgan_jax.segmenter` says. Each image is flipped horizontally with probability 1/2; ERFNet
  runs in training mode (batch statistics, dropout) and the loss is the pixel-wise cross-entropy
  SIPL uses (`losses.sipl_loss`).
  """

  def train_step(state: SegmenterState, batch: dict, rng: jax.Array):
    flip_key, dropout_key = jax.random.split(rng)
    flip = jax.random.bernoulli(flip_key, 0.5, (batch['image'].shape[0], 1, 1))
    photos = jnp.where(flip[..., None], batch['image'][:, :, ::-1], batch['image'])
    labels = segmenter.train_ids(batch['label'])
    labels = jnp.where(flip, labels[:, :, ::-1], labels)

    def loss_fn(params):
      variables = {'params': params, 'batch_stats': state.batch_stats}
      logits, updates = segmenter.logits(
        state.model,
        variables,
        photos,
        train=True,
        mutable=['batch_stats'],
        rngs={'dropout': dropout_key},
      )
      return losses.sipl_loss(logits, labels, segmenter.VOID), (logits, updates['batch_stats'])

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    valid = labels != segmenter.VOID
    correct = (segmenter.predictions(logits) == labels) & valid
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


def export_variables(state: SegmenterState, path: str | os.PathLike):
  """Writes ERFNet's variables as `semgan_jax.weights.erfnet.load_params` reads them: float32
  arrays under `params/...` and `batch_stats/...` keys."""
  flat = traverse_util.flatten_dict(jax.device_get(state.variables), sep='/')
  arrays = {key: np.asarray(value, np.float32) for key, value in flat.items()}
  return npz_io.write_npz_atomically(pathlib.Path(path), arrays)


def segment(state: SegmenterState, photos: jax.Array) -> jax.Array:
  """The state's ERFNet logits (inference mode) of uint8 photos: the `miou` evaluator's input."""
  return segmenter.logits(state.model, state.variables, photos)


class SegmenterTask(Task):
  """ERFNet on a paired data set's photos; exports its variables at the end of training."""

  name = 'segmenter'
  architecture_fields = (
    'model',
    'data.name',
    'data.config_name',
    'data.height',
    'data.width',
    'data.num_classes',
  )

  def check_config(self, config):
    spec = dataset_spec(config)
    d = config.data
    expect(spec.paired, f'config.data.name={d.name!r} has no photos; expected a paired data set.')
    problem = segmenter.data_error(d.num_classes, d.height, d.width)
    expect(problem is None, f'config.data: {problem}.')
    expect(
      config.model.num_classes == erfnet.NUM_CLASSES,
      f'config.model.num_classes={config.model.num_classes}; expected {erfnet.NUM_CLASSES} '
      '(19 Cityscapes training ids + void), the outputs SIPL and the mIoU evaluator load.',
    )
    try:
      erfnet.features(config.model.get('width', 1.0))
    except ValueError as e:
      raise UserInputError(f'config.model.width: {e}') from e
    return spec

  def open_data(self, config, spec, *, train):
    return open_split_data(config, spec, train, paired.create_paired_iterator)

  def init_state(self, config, rng, frozen, tx):
    del frozen
    return create_segmenter_state(config, rng, tx)

  def make_train_step(self, config, spec):
    del config, spec
    return make_segmenter_step()

  def evaluator_kwargs(self, config, spec):
    del config, spec
    return {'miou': {'segment_fn': segment}}

  def networks(self, state):
    return {'ERFNet': state.params}

  def describe(self, summary):
    return f'loss {summary["train/loss"]:.4f} | pixel acc {summary["train/pixel_accuracy"]:.3f}'

  def describe_run(self, config, spec, data):
    pairs = len(data.load_split('train'))
    return f'ERFNet on {spec.name}:{config.data.config_name} ({pairs} training pairs)'

  def export(self, config, state, workdir):
    path = os.path.expanduser(config.train.export_path or os.path.join(workdir, EXPORT_FILE))
    if jax.process_index() == 0:
      export_variables(state, path)
      logging.info('Wrote the ERFNet weights (for SIPL and mIoU) to %s', path)
