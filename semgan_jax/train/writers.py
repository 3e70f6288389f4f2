"""Metric writers: TensorBoard event files from process 0, without TensorFlow.

clu's `metric_writers` package imports TensorFlow when imported (clu 0.0.12), and training here is
TF-free, so this module offers the same method names (`write_scalars`, `write_images`,
`write_texts`, `write_hparams`, `flush`, `close`) over tensorboardX, which writes the same event
files. Code written against clu's writers works with these unchanged.
"""

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np


class TensorBoardWriter:
  """Writes scalars, images, texts and hyper-parameters to TensorBoard event files in `logdir`."""

  def __init__(self, logdir: str):
    import tensorboardX  # Imported lazily: only process 0 writes summaries.

    # tensorboardX queues events and writes them from its own thread: writes do not block a step.
    self._writer = tensorboardX.SummaryWriter(logdir, flush_secs=30)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    for key, value in scalars.items():
      self._writer.add_scalar(key, float(np.asarray(value)), step)

  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    """Each value is a uint8 (N, H, W, C) batch or (H, W, C) image."""
    for key, value in images.items():
      value = np.asarray(value)
      self._writer.add_images(
        key, value if value.ndim == 4 else value[None], step, dataformats='NHWC'
      )

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    for key, value in texts.items():
      self._writer.add_text(key, value, step)

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    """Records the flattened config as a text summary (readable in TensorBoard's Text tab)."""
    lines = [f'    {k} = {v!r}' for k, v in sorted(hparams.items())]
    self._writer.add_text('hparams', '\n'.join(lines), 0)

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


class NullWriter:
  """What processes other than 0 get: every write is dropped."""

  def write_scalars(self, step, scalars):
    pass

  def write_images(self, step, images):
    pass

  def write_texts(self, step, texts):
    pass

  def write_hparams(self, hparams):
    pass

  def flush(self):
    pass

  def close(self):
    pass


def create_metric_writer(logdir: str) -> TensorBoardWriter | NullWriter:
  """TensorBoard summaries in `logdir` from process 0; a writer that drops everything elsewhere."""
  return TensorBoardWriter(logdir) if jax.process_index() == 0 else NullWriter()
