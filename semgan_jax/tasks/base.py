"""What a task is: the protocol `semgan_jax.train.runner` drives, and one-line input errors.

A task is what one kind of run owns: its config checks, its data, the frozen networks its losses
read, its initial state and pure train step, the predict functions its evaluators call, its
progress line, its sample grid and what it exports. Everything else (validation of the shared
fields before anything is written, rng streams, run length, the learning-rate schedule,
checkpoints, logging, evaluation cadences) is the runner's, written once for every task.
"""

import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import Any

import jax
import ml_collections
import numpy as np

from semgan_jax import data as data_lib
from semgan_jax.data import cityscapes_labels, label_sets
from semgan_jax.errors import UserInputError, expect, expect_positive

PyTree = Any
__all__ = [
  'Data',
  'Task',
  'UserInputError',
  'dataset_spec',
  'expect',
  'expect_positive',
  'open_split_data',
  'split_loader',
]


@dataclasses.dataclass
class Data:
  """A run's data: `load_split(name) -> source` (each split opened once) and, when training,
  this process's checkpointable iterator of host batches (dicts of numpy arrays)."""

  load_split: Callable[[str], Any]
  iterator: Iterator[dict] | None = None


def split_loader(config: ml_collections.ConfigDict) -> Callable[[str], Any]:
  """`split -> source` of `config.data`'s set, prepared on first use; each split opened once.
  Missing or broken files (also a split whose first or last record cannot be read) become one
  line naming the data set."""

  @functools.cache
  def load(split: str):
    d = config.data
    try:
      source = data_lib.load_source(
        d.name,
        d.data_dir,
        split=split,
        config_name=d.get('config_name'),
        manual_dir=d.get('manual_dir') or None,
      )
    except (OSError, ValueError) as e:
      raise UserInputError(f'data set {d.name!r}: {e}') from e
    # A truncated file fails on its first or last record: found before anything is written.
    source[0], source[len(source) - 1]  # noqa: B018
    if d.get('label_set'):
      return label_sets.RelabeledSource(source, label_sets.get_label_set(d.label_set))
    return source

  return load


def open_split_data(config, spec, train: bool, create_iterator: Callable, **kwargs) -> Data:
  """`Task.open_data` of a task that trains on `create_iterator` over the train split: this
  process's share of `config.data.batch_size`, seeded with `config.seed`; `kwargs` go to it."""
  load_split = split_loader(config)
  if not train:
    return Data(load_split)
  iterator = create_iterator(
    load_split('train'),
    global_batch_size=config.data.batch_size,
    num_classes=spec.num_classes,
    seed=config.seed,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
    **kwargs,
  )
  return Data(load_split, iterator)


def dataset_spec(config: ml_collections.ConfigDict) -> data_lib.DatasetSpec:
  """The spec of `config.data`'s set, its sizes and class count checked against the config.

  With `config.data.label_set` (a set of `semgan_jax.data.label_sets`), the label-id maps of a
  label-to-photo set are read as that set's classes: the spec has its classes and palette.
  """
  d = config.data
  try:
    spec = data_lib.get_dataset_spec(d.name, d.get('config_name'))
    chosen = label_sets.get_label_set(d.label_set) if d.get('label_set') else None
  except ValueError as e:
    raise UserInputError(f'config.data: {e}') from e
  if chosen:
    expect(
      list(spec.class_names) == list(cityscapes_labels.CLASS_NAMES),
      f'config.data.label_set={d.label_set!r} reads Cityscapes label ids, which '
      f'{spec.name} does not hold.',
    )
    spec = dataclasses.replace(
      spec, num_classes=chosen.num_classes, class_names=chosen.class_names, palette=chosen.palette
    )
  expect(
    d.num_classes == spec.num_classes,
    f'config.data.num_classes={d.num_classes}, but {spec.name} has {spec.num_classes} classes.',
  )
  if 'image_size' in d:
    expect(
      d.image_size == spec.image_size,
      f'config.data.image_size={d.image_size}, but {spec.name} is stored at {spec.image_size}.',
    )
  else:
    expect(
      (d.height, d.width) == (spec.height, spec.width),
      f'config.data.height/width={d.height}x{d.width}, but {spec.name}:{d.config_name} is '
      f'{spec.height}x{spec.width}.',
    )
  return spec


class Task:
  """One kind of run. Subclasses set the attributes and override the methods they need.

  Attributes:
    name: the `config.task` value that selects it.
    architecture_fields: config fields (a section selects all its fields) whose change makes a
      checkpoint meaningless or unloadable; a workdir written under other values is refused.
    dtypes: the `config.model.dtype` values it runs with.
    sample_name: file stem of `--mode=sample`'s grid, or None if the task has no samples.
    modes: the `--mode` values it runs with.
  """

  name: str = ''
  modes: tuple[str, ...] = ('train', 'eval', 'sample')
  architecture_fields: tuple[str, ...] = ()
  dtypes: tuple[str, ...] = ('float32', 'bfloat16', 'float16')
  sample_name: str | None = None

  def check_config(self, config: ml_collections.ConfigDict) -> data_lib.DatasetSpec:
    """The task's own config checks (UserInputError); returns the data set's spec."""
    raise NotImplementedError

  def open_data(self, config, spec, *, train: bool) -> Data:
    """The splits, and with `train` the training batch iterator (seeded with `config.seed`)."""
    raise NotImplementedError

  def load_frozen(self, config) -> dict[str, PyTree]:
    """Weights of the frozen networks the losses run (not checkpointed); {} if none."""
    del config
    return {}

  def init_state(self, config, rng: jax.Array, frozen: dict, tx):
    """A step-0 state; pure, so the runner builds it under jit in its sharding. `rng` is the
    init stream: the task splits its parameter keys and the state's training key from it."""
    raise NotImplementedError

  def make_train_step(self, config, spec) -> Callable:
    """The pure `step(state, batch, rng) -> (state, metrics)`; `rng` is fold_in(state.rng, step)."""
    raise NotImplementedError

  def evaluator_kwargs(self, config, spec) -> dict[str, dict]:
    """Evaluator type → the predict functions (and facts) its constructor takes from this task."""
    raise NotImplementedError

  def networks(self, state) -> dict[str, PyTree]:
    """Name → parameters, for the parameter tables logged at the start."""
    raise NotImplementedError

  def describe(self, summary: dict[str, float]) -> str:
    """The middle of the progress line, from the averaged `train/*` metrics."""
    raise NotImplementedError

  def describe_run(self, config, spec, data: Data) -> str:
    """What is trained on what, for the first log line."""
    del data
    return f'{self.name} on {spec.name} {spec.height}x{spec.width}'

  def make_sampler(
    self, config, spec, data: Data, mesh, count: int, rng: jax.Array
  ) -> Callable[[Any], tuple[np.ndarray, np.ndarray | None]] | None:
    """`state -> (uint8 grid image, an array that --mode=sample saves as .npy, or None)` over
    `count` fixed inputs (`rng`: the sample stream); None when the task has no samples."""
    del config, spec, data, mesh, count, rng
    return None

  def export(self, config, state, workdir: str) -> None:
    """Writes what the end of training exports (e.g. weights for another task); default none."""
    del config, state, workdir
