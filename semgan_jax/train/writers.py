"""What a run writes besides checkpoints: TensorBoard events (process 0, without TensorFlow) and
the evaluation results JSON.

clu's `metric_writers` package imports TensorFlow when imported (clu 0.0.12), and training here is
TF-free, so this module offers the same method names (`write_scalars`, `write_images`,
`write_texts`, `write_hparams`, `flush`, `close`) over tensorboardX, which writes the same event
files. Code written against clu's writers works with these unchanged.
"""

import datetime
import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from absl import logging
from etils import epath


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


def write_json_atomically(path: epath.Path, payload: dict) -> None:
  """Writes JSON atomically (temp file, then rename): a reader never sees half a file."""
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / f'.{path.name}.tmp'
  tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, allow_nan=True) + '\n')
  os.replace(tmp, path)


def results_path(workdir: str, step: int) -> epath.Path:
  """Where `run_evaluators` writes the results of `step`."""
  return epath.Path(workdir) / 'eval' / f'step_{step:07d}.json'


def run_evaluators(evaluators: dict, state, workdir: str, writer=None) -> dict:
  """Runs `evaluators` on `state`, logs `<prefix>/<metric>` scalars, writes the results JSON.

  The JSON goes to `workdir/eval/step_<step>.json`: per evaluator, its metrics and the protocol
  that produced them (resize convention, MS-SSIM variant, image counts, palette, ...).

  Returns:
    The JSON's content.
  """
  step = int(state.step)
  results = {}
  for name, evaluator in evaluators.items():
    logging.info('Evaluating %r at step %d...', name, step)
    results[name] = evaluator.run(state)
    metrics = results[name]['metrics']
    shown = ' | '.join(f'{k} {v:.4g}' for k, v in metrics.items() if '/' not in k)
    logging.info('eval %s step %d | %s', name, step, shown)
    if writer is not None:
      prefix = evaluator.cfg['prefix']
      writer.write_scalars(step, {f'{prefix}/{k}': v for k, v in metrics.items()})
  payload = {
    'step': step,
    'workdir': workdir,
    'time': datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds'),
    'evaluators': results,
  }
  path = results_path(workdir, step)
  if jax.process_index() == 0:
    write_json_atomically(path, payload)
    logging.info('Wrote %s', path)
  return payload
