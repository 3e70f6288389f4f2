"""The grain chain every input pipeline shares: per-process shard, shuffle, repeat, batch."""

from collections.abc import Callable

import grain

# Threads that read and transform examples ahead of the training step.
_NUM_READ_THREADS = 4


def local_batch_size(global_batch_size: int, process_index: int, process_count: int) -> int:
  """Returns this process's part of a global batch, after checking the process arguments.

  Args:
    global_batch_size: Batch size summed over all processes.
    process_index: Index of this process, 0 to process_count - 1.
    process_count: Number of processes reading the data.

  Returns:
    global_batch_size // process_count.

  Raises:
    ValueError: If global_batch_size is not a positive multiple of process_count, or the process
      index is out of range.
  """
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise ValueError(
      f'global_batch_size {global_batch_size} must be a positive multiple of process_count '
      f'{process_count}'
    )
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} is not in [0, {process_count})')
  return global_batch_size // process_count


def create_batch_iterator(
  source,
  *,
  batch_size: int,
  seed: int,
  process_index: int,
  process_count: int,
  example_fn: Callable[[dict], dict],
  batch_fn: Callable[[dict], dict],
  prefetch_batches: int,
) -> grain.DatasetIterator:
  """Returns an endless, checkpointable iterator of one process's batches of a source.

  The grain chain of `create_input_iterator` and `paired.create_paired_iterator`: the process
  reads the strided shard `source[process_index::process_count]`, shuffled with `seed`
  (differently, but deterministically, in every epoch), so the local batches of all processes at
  one step depend only on (seed, step, process_count), and the iterator's `get_state()` /
  `set_state()` (`{'next_index': n}`, n batches read) resume the stream exactly.

  Args:
    source: Random-access source (`len()` and integer indexing) of examples.
    batch_size: Examples per batch of this process, from `local_batch_size` (which checks the
      process arguments).
    seed: Shuffle seed, an integer in [0, 2**32 - 1].
    process_index: Index of this process, 0 to process_count - 1.
    process_count: Number of processes reading the data.
    example_fn: Maps each example, before batching, to a dict of numpy arrays of equal shapes
      across examples.
    batch_fn: Maps each batch (the example dicts stacked along a new first axis) to the
      iterator's element.
    prefetch_batches: How many batches grain prepares ahead.

  Returns:
    A grain `DatasetIterator` of batch_fn's batches; exceptions of example_fn and batch_fn
    propagate from `next()`.
  """
  ds = grain.MapDataset.source(source)
  ds = ds[process_index::process_count]
  # Shuffle before repeat: grain folds the epoch into the seed, so every epoch is a new order.
  ds = ds.shuffle(seed=seed)
  ds = ds.repeat()
  ds = ds.map(example_fn)
  ds = ds.batch(batch_size, drop_remainder=True)
  ds = ds.map(batch_fn)
  read_options = grain.ReadOptions(
    num_threads=_NUM_READ_THREADS, prefetch_buffer_size=prefetch_batches
  )
  return iter(ds.to_iter_dataset(read_options))
