"""Input pipeline: a tfds array_record data source read through a grain MapDataset.

We read with grain rather than tf.data for three reasons. First, training then needs no
TensorFlow at all: tfds writes array_record files and reads them back as a random-access Python
sequence, and grain does the rest in numpy. Second, a grain `MapDataset` addresses every element
by its index, so the whole stream (shuffle order included, which grain re-derives for every epoch)
is a pure function of the seed, and the iterator's state is a single integer (`{'next_index':
n}`) that fits in a checkpoint and resumes the stream exactly where it stopped. Third, giving each
process its part of the data is a strided slice of that index space, with no coordination.
"""

import dataclasses
import os

import grain
import jax
import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from jax.experimental import multihost_utils

from semgan_jax.data import batching, cityscapes, colored_shapes, facades, streets
from semgan_jax.errors import UserInputError

# Elements of the iterator are whole batches, so a short queue already keeps the device busy;
# grain's default (500 elements) would hold hundreds of one-hot batches in host memory.
_PREFETCH_BATCHES = 8


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What the models and the evaluation need to know about a data set.

  Attributes:
    name: tfds name of the data set.
    num_classes: Number of semantic classes K; label ids are 0 to K - 1.
    image_size: Height and width of the square label maps; the height for non-square sets.
    class_names: Name of each class, indexed by id.
    palette: np.uint8 array (K, 3), the RGB color of each class.
    num_examples: Number of examples in the `train` split.
    paired: Whether examples pair a photo (`image`) and an instance map (`instance`) with the
      label map (label-to-photo sets), rather than holding a label map alone.
    height: Height of the maps, in pixels (image_size unless given).
    width: Width of the maps, in pixels (image_size unless given).
    config_name: The tfds builder config (the resolution) the sizes describe; None for data sets
      without configs.
    config_names: Every builder config of the data set (`get_dataset_spec(name, config_name)`
      gives the spec of another one).
    manual_download: Whether the files must be downloaded by hand into a manual directory.
  """

  name: str
  num_classes: int
  image_size: int
  class_names: tuple[str, ...]
  palette: np.ndarray
  num_examples: int
  paired: bool = False
  height: int = 0
  width: int = 0
  config_name: str | None = None
  config_names: tuple[str, ...] = ()
  manual_download: bool = False

  def __post_init__(self):
    # Square data sets give image_size only; frozen, so set through object.__setattr__.
    if not self.height:
      object.__setattr__(self, 'height', self.image_size)
    if not self.width:
      object.__setattr__(self, 'width', self.image_size)


DATASETS: dict[str, DatasetSpec] = {
  'colored_shapes': DatasetSpec(
    name='colored_shapes',
    num_classes=colored_shapes.NUM_CLASSES,
    image_size=colored_shapes.IMAGE_SIZE,
    class_names=colored_shapes.CLASS_NAMES,
    palette=colored_shapes.PALETTE,
    num_examples=colored_shapes.NUM_EXAMPLES,
  ),
  # Label-to-photo sets; both use the 35 Cityscapes label ids, so models and the ERFNet
  # conversion serve both. The sizes are those of the default (first) builder config.
  'streets': DatasetSpec(
    name='streets',
    num_classes=cityscapes.NUM_CLASSES,
    image_size=streets.DEFAULT_HEIGHT,
    class_names=cityscapes.CLASS_NAMES,
    palette=cityscapes.PALETTE,
    num_examples=streets.SPLITS['train'],
    paired=True,
    height=streets.DEFAULT_HEIGHT,
    width=streets.DEFAULT_WIDTH,
    config_name=streets.Streets.BUILDER_CONFIGS[0].name,
    config_names=tuple(c.name for c in streets.Streets.BUILDER_CONFIGS),
  ),
  'cityscapes': DatasetSpec(
    name='cityscapes',
    num_classes=cityscapes.NUM_CLASSES,
    image_size=cityscapes.Cityscapes.BUILDER_CONFIGS[0].height,
    class_names=cityscapes.CLASS_NAMES,
    palette=cityscapes.PALETTE,
    num_examples=cityscapes.NUM_EXAMPLES['train'],
    paired=True,
    height=cityscapes.Cityscapes.BUILDER_CONFIGS[0].height,
    width=cityscapes.Cityscapes.BUILDER_CONFIGS[0].width,
    config_name=cityscapes.Cityscapes.BUILDER_CONFIGS[0].name,
    config_names=tuple(c.name for c in cityscapes.Cityscapes.BUILDER_CONFIGS),
    manual_download=True,
  ),
  # Label maps (with their photos, which SemGAN does not read) of CMP's 606 facades.
  'facades': DatasetSpec(
    name='facades',
    num_classes=facades.NUM_CLASSES,
    image_size=facades.Facades.BUILDER_CONFIGS[0].height,
    class_names=facades.CLASS_NAMES,
    palette=facades.PALETTE,
    num_examples=facades.NUM_EXAMPLES,
    config_name=facades.Facades.BUILDER_CONFIGS[0].name,
    config_names=tuple(c.name for c in facades.Facades.BUILDER_CONFIGS),
    manual_download=True,
  ),
}

# Train-split sizes of the configs whose size differs from the default config's.
_NUM_TRAIN_EXAMPLES = {
  ('streets', c.name): c.splits['train'] for c in streets.Streets.BUILDER_CONFIGS
}

_BUILDERS = {
  'colored_shapes': colored_shapes.ColoredShapes,
  'streets': streets.Streets,
  'cityscapes': cityscapes.Cityscapes,
  'facades': facades.Facades,
}


def get_dataset_spec(name: str, config_name: str | None = None) -> DatasetSpec:
  """Returns the spec of a registered data set.

  Args:
    name: Name of the data set, a key of `DATASETS`.
    config_name: A builder config of the data set ('<height>x<width>', optionally followed by
      '_<tag>', for the paired sets), or None for its default.

  Returns:
    The data set's `DatasetSpec`, with the config's height and width.

  Raises:
    ValueError: If `name` is not a known data set or `config_name` not one of its configs.
  """
  if name not in DATASETS:
    raise ValueError(f'Unknown dataset {name!r}; known datasets: {sorted(DATASETS)}')
  spec = DATASETS[name]
  if config_name is None or config_name == spec.config_name:
    return spec
  if config_name not in spec.config_names:
    raise ValueError(
      f'Unknown config {config_name!r} of dataset {name!r}; known configs: '
      f'{list(spec.config_names) or "none"}'
    )
  height, width = (int(n) for n in config_name.partition('_')[0].split('x'))
  num_examples = _NUM_TRAIN_EXAMPLES.get((name, config_name), spec.num_examples)
  return dataclasses.replace(
    spec,
    image_size=height,
    height=height,
    width=width,
    config_name=config_name,
    num_examples=num_examples,
  )


def _prepare(
  name: str, data_dir: str, *, config_name: str | None = None, manual_dir: str | None = None
) -> tfds.core.DatasetBuilder:
  """Returns the builder of a data set, writing it under data_dir unless already there."""
  kwargs = {'config': config_name} if config_name else {}
  if manual_dir is not None:
    kwargs['manual_dir'] = manual_dir
  builder = _BUILDERS[name](data_dir=data_dir, file_format='array_record', **kwargs)
  # is_prepared() logs a warning when the version folder is missing, which it always is on
  # first use; tfds writes into a temporary folder and renames it, so existence means complete.
  if builder.data_path.exists() and builder.is_prepared():
    return builder
  logging.info('Preparing %s in %s (first use)...', name, data_dir)
  try:
    builder.download_and_prepare()
  except PermissionError as e:
    raise PermissionError(f'Cannot write dataset {name!r} to data_dir {data_dir!r}: {e}') from e
  return builder


def load_source(
  name: str,
  data_dir: str,
  *,
  split: str = 'train',
  config_name: str | None = None,
  manual_dir: str | None = None,
):
  """Returns the random-access data source of one split of a data set.

  The data set is generated under `data_dir` on first use (Cityscapes and CMP Facades from the
  archives in `manual_dir`). With several processes, process 0 prepares it first and the others
  wait for it, so a shared `data_dir` is written once.

  Args:
    name: Name of the data set, a key of `DATASETS`.
    data_dir: tfds data directory (`~` is expanded); created if missing.
    split: 'train', or 'validation' for the streets and Cityscapes.
    config_name: Builder config (resolution, e.g. '64x128'), None for the default.
    manual_dir: Where the manually downloaded files are (data sets with `manual_download`);
      None for tfds's `<data_dir>/downloads/manual`.

  Returns:
    A `CheckedSource` over tfds's `ArrayRecordDataSource` (supports `len()` and indexing; read
    errors become a `PreparedDataError` naming the files); each element is a dict of numpy
    arrays with the data set's features.

  Raises:
    ValueError: If `name`, `config_name` or `split` is unknown, `manual_dir` is given for a data
      set without manual files, or `data_dir` cannot be created or is not a writable directory.
    PermissionError: If writing the data set into `data_dir` is refused.
    cityscapes.CityscapesFilesError, facades.FacadesFilesError: If Cityscapes or CMP Facades
      must be prepared and its files are missing or incomplete (the message says what to
      download and where to put it).
  """
  spec = get_dataset_spec(name, config_name)
  if manual_dir is not None and not spec.manual_download:
    raise ValueError(f'Dataset {name!r} has no manual files; manual_dir must be None')
  options = {}  # Only what was asked for, so _prepare(name, data_dir) stays the plain call.
  if config_name is not None:
    options['config_name'] = config_name
  if manual_dir is not None:
    options['manual_dir'] = os.path.expanduser(os.fspath(manual_dir))
  data_dir = os.path.expanduser(os.fspath(data_dir))
  try:
    os.makedirs(data_dir, exist_ok=True)
  except OSError as e:
    raise ValueError(f'Cannot create data_dir {data_dir!r}: {e}') from e
  if not os.access(data_dir, os.W_OK | os.X_OK):
    raise ValueError(f'data_dir {data_dir!r} is not writable')

  tfds.disable_progress_bar()
  if jax.process_count() == 1:
    builder = _prepare(name, data_dir, **options)
  else:
    if jax.process_index() == 0:
      _prepare(name, data_dir, **options)
    multihost_utils.sync_global_devices('semgan_jax.data.prepare')
    # Every process builds its builder only after the barrier: a builder reads the data set's
    # info when constructed, so one made before process 0 finished would not see the splits.
    # Preparing again is a no-op when data_dir is shared; a per-host data_dir gets its own copy.
    builder = _prepare(name, data_dir, **options)
  if split not in builder.info.splits:
    raise ValueError(
      f'Dataset {name!r} has no split {split!r}; splits: {list(builder.info.splits)}'
    )
  return CheckedSource(builder.as_data_source(split=split), builder, split)


class PreparedDataError(UserInputError):
  """A prepared data set's files cannot be read (truncated, damaged): names them and the fix."""


class CheckedSource:
  """A data source whose read errors name the prepared files and how to prepare them again.

  Everything else (`len()`, attributes such as `dataset_info`) is the wrapped source's.
  """

  def __init__(self, source, builder: tfds.core.DatasetBuilder, split: str):
    self._source, self._builder, self._split = source, builder, split

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index):
    try:
      return self._source[index]
    except Exception as e:  # noqa: BLE001 (Riegeli, protobuf and decoders raise many types)
      raise self._error(e) from e

  def __getitems__(self, indices):
    try:
      return self._source.__getitems__(indices)
    except Exception as e:  # noqa: BLE001
      raise self._error(e) from e

  def __getattr__(self, name):
    return getattr(self._source, name)

  def _error(self, error: Exception) -> PreparedDataError:
    files = [os.fspath(f) for f in self._builder.info.splits[self._split].filepaths]
    where = files[0] if len(files) == 1 else f'{len(files)} files in {self._builder.data_dir}'
    reason = ' '.join(str(error).split())[:300]
    return PreparedDataError(
      f'the prepared {self._builder.name} data ({self._split} split, {where}) cannot be read '
      f'({reason}). Prepare it again: delete {self._builder.data_dir} and re-run the same '
      'command (it is prepared on first use).'
    )


def create_input_iterator(
  source,
  *,
  global_batch_size: int,
  num_classes: int,
  seed: int,
  process_index: int = 0,
  process_count: int = 1,
  include_onehot: bool = True,
) -> grain.DatasetIterator:
  """Returns an endless, checkpointable iterator of this process's batches.

  Each process reads the strided shard `source[process_index::process_count]`, shuffled with
  `seed` (differently, but deterministically, in every epoch). The local batches of all
  processes at one step therefore depend only on (seed, step, process_count), and the
  iterator's `get_state()` / `set_state()` resume the stream exactly.

  Args:
    source: Random-access source (`len()` and integer indexing) of dicts with a `label` (H, W)
      integer label map, e.g. from `load_source`.
    global_batch_size: Batch size summed over all processes.
    num_classes: Number of classes K; every label id must be below it.
    seed: Shuffle seed, an integer in [0, 2**32 - 1].
    process_index: Index of this process, 0 to process_count - 1.
    process_count: Number of processes reading the data.
    include_onehot: Whether batches also carry the float32 one-hot maps. The train step builds
      them on the device from the ids, so the training loop turns this off to avoid K times
      more host work and transfer.

  Returns:
    A grain `DatasetIterator` of dicts with `label`: int32 (B, H, W) ids and, if
    `include_onehot`, `onehot`: float32 (B, H, W, K), where B = global_batch_size //
    process_count.

  Raises:
    ValueError: If global_batch_size is not divisible by process_count, the process index is out
      of range, or (while iterating) a batch holds a label id outside [0, num_classes).
  """
  batch_size = batching.local_batch_size(global_batch_size, process_index, process_count)
  eye = np.eye(num_classes, dtype=np.float32)

  def to_label(example):
    return {'label': np.asarray(example['label'], dtype=np.int32)}

  def check_and_add_onehot(batch):
    label = batch['label']
    # One max/min per batch is cheap; without it numpy raises a bare IndexError for ids >= K
    # and silently wraps negative ids into a wrong one-hot.
    high, low = int(label.max()), int(label.min())
    if high >= num_classes or low < 0:
      bad = high if high >= num_classes else low
      raise ValueError(f'label id {bad} is out of range for num_classes {num_classes}')
    return {'label': label, 'onehot': eye[label]} if include_onehot else {'label': label}

  return batching.create_batch_iterator(
    source,
    batch_size=batch_size,
    seed=seed,
    process_index=process_index,
    process_count=process_count,
    example_fn=to_label,
    batch_fn=check_and_add_onehot,
    prefetch_batches=_PREFETCH_BATCHES,
  )


def colorize(labels, palette) -> np.ndarray:
  """Maps integer label maps to RGB images through a palette.

  Args:
    labels: Integer array of class ids, any shape.
    palette: Array (K, 3) of colors, e.g. `DatasetSpec.palette`.

  Returns:
    np.uint8 array of shape labels.shape + (3,).

  Raises:
    ValueError: If labels are not integers or hold an id outside [0, K).
  """
  labels = np.asarray(labels)
  palette = np.asarray(palette, dtype=np.uint8)
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f'labels must be integer class ids, got dtype {labels.dtype}')
  if labels.size:
    high, low = int(labels.max()), int(labels.min())
    if high >= len(palette) or low < 0:
      bad = high if high >= len(palette) else low
      raise ValueError(f'label id {bad} is out of range for a palette of {len(palette)} colors')
  return palette[labels]
