"""Paired label-to-photo data: the shared tfds features, and the grain iterator of its batches."""

import collections
import concurrent.futures
import io
import os
from collections.abc import Callable, Iterator

import grain
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from semgan_jax.data import batching

# Whole batches are the elements, so a short queue keeps the device busy; shorter than the
# label-only pipeline's, as a batch of photos is larger.
_PREFETCH_BATCHES = 4
# The Cityscapes 'license plate' id. The official tools never write it into labelIds files, but a
# converted map may carry it; cityscapesScripts' evaluation counts it as 0 'unlabeled'.
LICENSE_PLATE_ID = -1


def encode_png(image: np.ndarray) -> bytes:
  """PNG bytes of a uint8 image (with PIL, so preparing needs no TensorFlow)."""
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format='PNG', compress_level=1)
  return buffer.getvalue()


def paired_features(height: int, width: int, *, png: bool) -> tfds.features.FeaturesDict:
  """The features of the paired data sets, all written and read without TensorFlow.

  Args:
    height: Height of the maps.
    width: Width of the maps.
    png: Whether photos are stored as PNG files (bytes from `encode_png`: tfds's Image feature
      needs TensorFlow only to encode numpy arrays, and decodes with PIL) rather than as raw
      bytes. PNG halves real photos; the noise-textured streets photos shrink by only a quarter,
      for more time than rendering them takes, so those are stored raw.

  Returns:
    Features `image` uint8 (height, width, 3), `label` uint8 (height, width) and `instance`
    int32 (height, width); the two maps are zlib-compressed (a few kilobytes each).
  """
  if png:
    image = tfds.features.Image(shape=(height, width, 3), dtype=np.uint8, encoding_format='png')
  else:
    image = tfds.features.Tensor(
      shape=(height, width, 3), dtype=np.uint8, encoding=tfds.features.Encoding.BYTES
    )
  zlib = tfds.features.Encoding.ZLIB
  return tfds.features.FeaturesDict(
    {
      'image': image,
      'label': tfds.features.Tensor(shape=(height, width), dtype=np.uint8, encoding=zlib),
      'instance': tfds.features.Tensor(shape=(height, width), dtype=np.int32, encoding=zlib),
    }
  )


def map_in_order(fn: Callable, items, *, ahead_per_worker: int = 4) -> Iterator:
  """Yields fn(item) for every item, in order, computed by a pool of threads.

  Preparing a data set is mostly numpy, PNG and zlib work, which release the GIL, so threads use
  every core. At most ahead_per_worker results per thread wait to be consumed, which bounds the
  memory however slowly the consumer (tfds's writer) goes.

  Args:
    fn: The function of one item.
    items: An iterable of items.
    ahead_per_worker: How many items each thread may run ahead of the consumer.

  Yields:
    fn(item), in the order of items. An exception raised by fn is raised here, at its item.
  """
  workers = min(os.cpu_count() or 1, 8)
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    window = collections.deque()
    try:
      for item in items:
        window.append(pool.submit(fn, item))
        if len(window) > ahead_per_worker * workers:
          yield window.popleft().result()
      while window:
        yield window.popleft().result()
    finally:
      for future in window:  # On an error or an early close, drop the work not yet started.
        future.cancel()


def create_paired_iterator(
  source,
  *,
  global_batch_size: int,
  num_classes: int,
  seed: int,
  process_index: int = 0,
  process_count: int = 1,
) -> grain.DatasetIterator:
  """Returns an endless, checkpointable iterator of this process's label-photo batches.

  As `pipeline.create_input_iterator`, through the same `batching.create_batch_iterator`: each
  process reads the strided shard `source[process_index::process_count]`, shuffled with `seed`
  (a new order every epoch), so the batches depend only on (seed, step, process_count), and
  `get_state()` / `set_state()` resume the stream exactly.

  Label id -1 (Cityscapes' license plate) becomes 0 'unlabeled', as in cityscapesScripts'
  evaluation; any other id outside [0, num_classes) is an error.

  Args:
    source: Random-access source (`len()` and integer indexing) of dicts with `image` uint8
      (H, W, 3), `label` integer (H, W) label ids and `instance` integer (H, W), e.g. from
      `pipeline.load_source('streets', ...)`.
    global_batch_size: Batch size summed over all processes.
    num_classes: Number of classes K (35 for the Cityscapes label ids).
    seed: Shuffle seed, an integer in [0, 2**32 - 1].
    process_index: Index of this process, 0 to process_count - 1.
    process_count: Number of processes reading the data.

  Returns:
    A grain `DatasetIterator` of dicts with `image` uint8 (B, H, W, 3), `label` int32 (B, H, W)
    and `instance` int32 (B, H, W), where B = global_batch_size // process_count.

  Raises:
    ValueError: If global_batch_size is not divisible by process_count or the process index is
      out of range; while iterating, if an example's image is not uint8 (H, W, 3), its maps are
      not integer maps of the image's size, or a batch holds a label id outside [0, num_classes)
      other than -1.
  """
  batch_size = batching.local_batch_size(global_batch_size, process_index, process_count)

  def check_example(example):
    # Per example, before batching: stacking examples of different sizes would fail inside grain
    # with a message that names neither the feature nor the sizes.
    image = np.asarray(example['image'])
    label = np.asarray(example['label'])
    instance = np.asarray(example['instance'])
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
      raise ValueError(f'image must be uint8 (H, W, 3), got {image.dtype} {image.shape}')
    for name, array in (('label', label), ('instance', instance)):
      if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f'{name} must hold integer ids, got dtype {array.dtype}')
      if array.shape != image.shape[:2]:
        raise ValueError(
          f'{name} map is {"x".join(map(str, array.shape))} but its image is '
          f'{image.shape[0]}x{image.shape[1]} (H x W)'
        )
    return {
      'image': image,
      'label': label.astype(np.int32, copy=False),
      'instance': instance.astype(np.int32, copy=False),
    }

  def check_batch(batch):
    label = batch['label']
    high, low = int(label.max()), int(label.min())
    if high >= num_classes or low < LICENSE_PLATE_ID:
      bad = high if high >= num_classes else low
      raise ValueError(f'label id {bad} is out of range for num_classes {num_classes}')
    if low == LICENSE_PLATE_ID:
      label = np.where(label == LICENSE_PLATE_ID, 0, label).astype(np.int32)
    return {**batch, 'label': label}

  return batching.create_batch_iterator(
    source,
    batch_size=batch_size,
    seed=seed,
    process_index=process_index,
    process_count=process_count,
    example_fn=check_example,
    batch_fn=check_batch,
    prefetch_batches=_PREFETCH_BATCHES,
  )
