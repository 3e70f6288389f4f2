"""The training loop and the sampling job: I/O, checkpoints, logging; the math is in the steps."""

import datetime
import functools
import json
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from clu import parameter_overview
from etils import epath
from jax.sharding import Mesh

from semgan_jax import data as data_lib
from semgan_jax import images, parallel
from semgan_jax.evaluation import evaluator as evaluator_lib
from semgan_jax.models import HEADS
from semgan_jax.models.generators import num_upsamplings
from semgan_jax.train import checkpointing
from semgan_jax.train.semgan_step import (
  GENERATOR_LOSSES,
  generate,
  make_train_step,
  sample_latents,
)
from semgan_jax.train.state import GANState, create_train_state
from semgan_jax.train.writers import create_metric_writer

# Named streams of randomness, all derived from config.seed with fold_in.
_INIT_STREAM, _SAMPLE_STREAM = 0, 1


class UserInputError(ValueError):
  """Bad input from the user (config, flags, workdir): reported as one line, never a traceback."""


def expect(ok: bool, message: str) -> None:
  """Raises `UserInputError(message)` unless `ok`: the config checks' one-line errors."""
  if not ok:
    raise UserInputError(message)


def jit_train_step(step: Callable, mesh: Mesh) -> Callable:
  """`step(state, batch, rng) -> (state, metrics)` compiled for `mesh`: state and rng replicated,
  the batch sharded on `data`, the old state donated (its buffers are reused in place)."""
  repl, batch_sh = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  return jax.jit(
    step, in_shardings=(repl, batch_sh, repl), out_shardings=(repl, repl), donate_argnums=(0,)
  )


def validate_config(config: ml_collections.ConfigDict) -> data_lib.DatasetSpec:
  """Checks the fields the run depends on; returns the data set's spec.

  Raises:
    UserInputError: naming the first field whose value cannot work, and what was expected.
  """

  try:
    spec = data_lib.get_dataset_spec(config.data.name)
  except ValueError as e:
    raise UserInputError(str(e)) from e
  d, m, t = config.data, config.model, config.train
  expect(
    d.num_classes == spec.num_classes,
    f'config.data.num_classes={d.num_classes}, but {spec.name} has {spec.num_classes} classes.',
  )
  expect(
    d.image_size == spec.image_size,
    f'config.data.image_size={d.image_size}, but {spec.name} is stored at {spec.image_size}.',
  )
  expect(d.batch_size > 0, f'config.data.batch_size={d.batch_size}; expected a positive integer.')
  expect(m.head in HEADS, f'config.model.head={m.head!r}; expected one of {HEADS}.')
  expect(
    config.loss.generator in GENERATOR_LOSSES,
    f'config.loss.generator={config.loss.generator!r}; expected one of {GENERATOR_LOSSES}.',
  )
  for name in ('latent_dim', 'kernel_size', 'g_base_features', 'd_base_features'):
    expect(m[name] > 0, f'config.model.{name}={m[name]}; expected a positive integer.')
  expect(t.num_steps >= 0, f'config.train.num_steps={t.num_steps}; expected >= 0.')
  for name in ('log_every_steps', 'ckpt_every_steps', 'sample_every_steps'):
    expect(t[name] > 0, f'config.train.{name}={t[name]}; expected a positive integer.')
  expect(
    config.optim.lr > 0, f'config.optim.lr={config.optim.lr}; expected a positive learning rate.'
  )
  expect(
    config.optim.schedule in ('constant', 'linear_decay'),
    f"config.optim.schedule={config.optim.schedule!r}; expected 'constant' or 'linear_decay'.",
  )
  expect(
    m.dtype in ('float32', 'bfloat16', 'float16'),
    f"config.model.dtype={m.dtype!r}; expected 'float32', 'bfloat16' or 'float16'.",
  )
  num_blocks = num_upsamplings(d.image_size, 4)  # Discriminator blocks, down to 4x4.
  expect(
    -num_blocks <= config.loss.fm_layer < num_blocks,
    f'config.loss.fm_layer={config.loss.fm_layer}; the discriminator has {num_blocks} blocks, '
    f'so expected an index in [{-num_blocks}, {num_blocks - 1}].',
  )
  expect(0.0 <= m.g_ema_decay < 1.0, f'config.model.g_ema_decay={m.g_ema_decay}; expected [0, 1).')
  expect(
    config.loss.instance_noise_std >= 0,
    f'config.loss.instance_noise_std={config.loss.instance_noise_std}; expected >= 0.',
  )
  expect(t.num_samples > 0, f'config.train.num_samples={t.num_samples}; expected > 0.')
  try:
    evaluator_lib.check_evals_config(config.evals, spec, spec.num_examples, jax.device_count())
  except evaluator_lib.EvalConfigError as e:
    raise UserInputError(str(e)) from e
  expect(0 <= config.seed < 2**31, f'config.seed={config.seed}; expected an integer in [0, 2**31).')
  return spec


def prepare_workdir(workdir: str) -> str:
  """Creates `workdir` if needed and proves it is writable, before anything else is written."""
  if not workdir:
    raise UserInputError('--workdir is required.')
  path = epath.Path(os.path.expanduser(workdir)).absolute()
  probe = path / f'.write_test_{uuid.uuid4().hex}'
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe.write_text('ok')
    probe.unlink()
  except OSError as e:
    raise UserInputError(f'--workdir={workdir} cannot be written: {e}') from e
  return os.fspath(path)


def open_run(config: ml_collections.ConfigDict, workdir: str) -> tuple[str, Mesh]:
  """A training run's set-up before any state: the workdir (created, writable, and compatible
  with `config` if it holds an earlier run) and the device mesh (the global batch checked)."""
  workdir = prepare_workdir(workdir)
  checkpointing.check_config_compatible(workdir, config)
  mesh = parallel.create_mesh()
  try:
    parallel.check_global_batch_size(config.data.batch_size, mesh)
  except ValueError as e:
    raise UserInputError(str(e)) from e
  logging.info(
    'Devices: %d (%s) over %d process(es); global batch %d.',
    mesh.devices.size,
    jax.devices()[0].platform,
    jax.process_count(),
    config.data.batch_size,
  )
  return workdir, mesh


def _gan_networks(state: GANState) -> dict[str, Any]:
  return {'Generator': state.g_params, 'Discriminator': state.d_params}


def resume_or_start(
  config: ml_collections.ConfigDict,
  workdir: str,
  state: GANState,
  data_iter,
  *,
  networks: Callable[[Any], dict[str, Any]] = _gan_networks,
) -> tuple[GANState, checkpointing.Checkpointer, Any]:
  """Restores the latest checkpoint of `workdir` (state and input position) or, in a new
  workdir, writes `config.json`; logs the parameter tables of `networks(state)` (name → params;
  by default the GAN's two) and opens the metric writer (hyper-parameters recorded at step 0).

  Returns:
    (state, checkpointer, writer); the caller closes both (`run_training` does).
  """
  ckpt = checkpointing.Checkpointer(workdir, max_to_keep=config.train.max_checkpoints)
  if ckpt.latest_step() is not None:
    state = ckpt.restore(state, data_iter)
  else:
    checkpointing.write_config(workdir, config)
  for name, params in networks(state).items():
    parameter_overview.log_parameter_overview(
      params, include_stats=False, msg=f'{name} parameters:', jax_logging_process=0
    )
  writer = create_metric_writer(workdir)
  if int(state.step) == 0:
    writer.write_hparams(checkpointing.flatten_config(config.to_dict()))
  return state, ckpt, writer


def restore_for_job(
  config: ml_collections.ConfigDict,
  workdir: str,
  init_state: Callable[[Mesh], GANState],
  *,
  step: int | None = None,
) -> tuple[str, Mesh, GANState]:
  """The set-up of `--mode=sample|eval`: checks that `workdir` holds a checkpoint of a
  compatible config and restores it (`step`, default the latest) into `init_state(mesh)`.

  Returns:
    (absolute workdir, mesh, state).
  """
  workdir = os.path.abspath(os.path.expanduser(workdir))
  checkpointing.check_config_compatible(workdir, config)
  if not checkpointing.has_checkpoint(workdir):
    raise UserInputError(f'no checkpoint in {workdir}/checkpoints; train first (--mode=train).')
  mesh = parallel.create_mesh()
  ckpt = checkpointing.Checkpointer(workdir)
  try:
    state = ckpt.restore(init_state(mesh), step=step)
  finally:
    ckpt.close()
  return workdir, mesh, state


def run_eval_job(evaluators: dict, state: GANState, workdir: str) -> dict:
  """`--mode=eval`'s last part: runs `evaluators`, writing the JSON and TensorBoard scalars."""
  writer = create_metric_writer(workdir)
  try:
    return run_evaluators(evaluators, state, workdir, writer)
  finally:
    writer.flush()
    writer.close()


def _to_images(
  outputs: np.ndarray, head: str, palette: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
  """Generator outputs → (uint8 RGB images, int class ids).

  Semantic outputs are argmax-ed and colorized, so they are on the palette by construction. RGB
  outputs are shown as generated; their ids are the nearest palette color (the way a user of the
  baseline would have to read them).
  """
  if head == 'semantic':
    ids = np.argmax(outputs, axis=-1).astype(np.int32)
    return data_lib.colorize(ids, palette), ids
  rgb = images.rgb_to_uint8(outputs)
  dist = np.square(rgb[..., None, :].astype(np.int32) - palette.astype(np.int32)).sum(-1)
  return rgb, np.argmin(dist, axis=-1).astype(np.int32)


def _sample_grid(outputs, head, palette) -> tuple[np.ndarray, np.ndarray]:
  rgb, ids = _to_images(np.asarray(outputs), head, palette)
  return images.upscale_nearest(images.make_grid(rgb), 2), ids


def format_duration(seconds: float) -> str:
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h}h{m:02d}m' if h else f'{m}m{s:02d}s'


def _init_state(config, mesh) -> GANState:
  """Builds the state directly in its replicated sharding (no host round-trip)."""
  init_rng = jax.random.fold_in(jax.random.key(config.seed), _INIT_STREAM)
  init = jax.jit(
    functools.partial(create_train_state, config), out_shardings=parallel.replicated(mesh)
  )
  return init(init_rng)


def _build_evaluators(config, spec, source, mesh) -> dict:
  """The evaluators of `config.evals`; missing FID weights become a one-line user error."""
  try:
    return evaluator_lib.build_evaluators(
      config.evals,
      spec=spec,
      source=source,
      mesh=mesh,
      generate_fn=generate,
      head=config.model.head,
      latent_dim=config.model.latent_dim,
    )
  except (FileNotFoundError, evaluator_lib.EvalConfigError) as e:
    raise UserInputError(str(e)) from e


def _write_json(path: epath.Path, payload: dict) -> None:
  """Writes JSON atomically (temp file, then rename): a reader never sees half a file."""
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.parent / f'.{path.name}.tmp'
  tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, allow_nan=True) + '\n')
  os.replace(tmp, path)


def run_evaluators(evaluators: dict, state: GANState, workdir: str, writer=None) -> dict:
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
    logging.info(
      'eval %s step %d | %s',
      name,
      step,
      ' | '.join(f'{k} {v:.4g}' for k, v in metrics.items() if '/' not in k),
    )
    if writer is not None:
      prefix = evaluator.cfg['prefix']
      writer.write_scalars(step, {f'{prefix}/{k}': v for k, v in metrics.items()})
  payload = {
    'step': step,
    'workdir': workdir,
    'time': datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds'),
    'evaluators': results,
  }
  path = epath.Path(workdir) / 'eval' / f'step_{step:07d}.json'
  if jax.process_index() == 0:
    _write_json(path, payload)
    logging.info('Wrote %s', path)
  return payload


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> GANState:
  """Trains SemGAN (or its RGB baseline) as `config` says, resuming from `workdir` if possible.

  Writes to `workdir`: `config.json`, `checkpoints/` (orbax), `samples/step_*.png`, TensorBoard
  event files. Re-running with the same workdir continues from the latest checkpoint and yields
  the same losses as an uninterrupted run.

  Args:
    config: experiment config (see `configs/shapes.py`).
    workdir: output directory.

  Returns:
    The final train state.
  """
  spec = validate_config(config)
  workdir, mesh = open_run(config, workdir)
  source = data_lib.load_source(config.data.name, config.data.data_dir)
  data_iter = data_lib.create_input_iterator(
    source,
    global_batch_size=config.data.batch_size,
    num_classes=spec.num_classes,
    seed=config.seed,
    process_index=jax.process_index(),
    process_count=jax.process_count(),
    include_onehot=False,  # The step one-hot encodes on the device.
  )
  state, ckpt, writer = resume_or_start(config, workdir, _init_state(config, mesh), data_iter)
  start_step = int(state.step)
  logging.info(
    'SemGAN (%s head), steps %d -> %d.', config.model.head, start_step, config.train.num_steps
  )
  num_steps = config.train.num_steps
  train_step = jit_train_step(
    make_train_step(
      palette=spec.palette,
      generator_loss=config.loss.generator,
      fm_layer=config.loss.fm_layer,
      instance_noise_std=config.loss.instance_noise_std,
      instance_noise_steps=config.loss.instance_noise_steps,
    ),
    mesh,
  )
  evaluators = _build_evaluators(config, spec, source, mesh)
  sample_fn = jax.jit(generate, out_shardings=parallel.replicated(mesh))
  sample_rng = jax.random.fold_in(jax.random.key(config.seed), _SAMPLE_STREAM)
  fixed_z = sample_latents(sample_rng, config.train.num_samples, config.model.latent_dim)
  # The training key leaves the (donated) state once, so per-step keys need no state access.
  train_rng = jax.random.wrap_key_data(
    np.asarray(jax.random.key_data(state.rng)), impl=jax.random.key_impl(state.rng)
  )

  def write_samples(state: GANState, step: int):
    grid, _ = _sample_grid(sample_fn(state, fixed_z), config.model.head, spec.palette)
    if jax.process_index() == 0:
      images.write_png(epath.Path(workdir) / 'samples' / f'step_{step:07d}.png', grid)
      writer.write_images(step, {'samples': grid[None]})

  def describe(summary: dict) -> str:
    return (
      f'g_loss {summary["train/g_loss"]:.4f} | d_loss {summary["train/d_loss"]:.4f} | '
      f'D(real) {summary["train/d_real_prob"]:.2f} D(fake) {summary["train/d_fake_prob"]:.2f}'
    )

  return run_training(
    state=state,
    start_step=start_step,
    num_steps=num_steps,
    train_config=config.train,
    next_batch=lambda: parallel.make_global_batch({'label': next(data_iter)['label']}, mesh),
    train_step=train_step,
    train_rng=train_rng,
    describe=describe,
    write_samples=write_samples,
    ckpt=ckpt,
    data_iter=data_iter,
    evaluators=evaluators,
    workdir=workdir,
    writer=writer,
  )


def run_training(
  *,
  state: GANState,
  start_step: int,
  num_steps: int,
  train_config: ml_collections.ConfigDict,
  next_batch: Callable[[], dict],
  train_step: Callable,
  train_rng: jax.Array,
  describe: Callable[[dict], str],
  write_samples: Callable[[GANState, int], None] | None,
  ckpt: checkpointing.Checkpointer,
  data_iter,
  evaluators: dict,
  workdir: str,
  writer,
  extra_scalars: Callable[[int], dict] | None = None,
) -> GANState:
  """The loop both models share: steps, progress lines, scalars, samples, checkpoints, evals.

  Per-step keys are `fold_in(train_rng, step)`. Every `train_config.log_every_steps` it averages
  the pending metrics, writes them (plus `extra_scalars(step)`) and prints `step i/n | <describe
  (summary)> | steps/s | ETA`; samples (unless `write_samples` is None), checkpoints and due
  evaluators follow their cadences and the last step. Closes the checkpointer and the writer at
  the end.

  Returns:
    The final state.
  """
  t = train_config
  pending, timing_start, timed_steps = [], None, 0
  for step in range(start_step, num_steps):
    with jax.profiler.StepTraceAnnotation('train', step_num=step):
      state, metrics = train_step(state, next_batch(), jax.random.fold_in(train_rng, step))
    pending.append(metrics)
    done = step + 1
    if timing_start is None:
      # Step one includes compilation; rates and the ETA are measured from here on.
      jax.block_until_ready(metrics)
      timing_start = time.perf_counter()
      logging.info('First step (with compilation) done at step %d.', done)
    else:
      timed_steps += 1

    if done % t.log_every_steps == 0 or done == num_steps:
      fetched = jax.device_get(pending)
      summary = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
      pending = []
      rate = timed_steps / max(time.perf_counter() - timing_start, 1e-9) if timed_steps else 0.0
      summary['train/steps_per_sec'] = rate
      if extra_scalars is not None:
        summary.update(extra_scalars(done))
      writer.write_scalars(done, summary)
      eta = format_duration((num_steps - done) / rate) if rate else '?'
      logging.info(
        'step %d/%d | %s | %.2f steps/s | ETA %s', done, num_steps, describe(summary), rate, eta
      )
      if not all(np.isfinite(v) for v in summary.values()):
        raise FloatingPointError(f'non-finite training metrics at step {done}: {summary}')
    if write_samples is not None and (done % t.sample_every_steps == 0 or done == num_steps):
      write_samples(state, done)
    if done % t.ckpt_every_steps == 0 or done == num_steps:
      ckpt.save(done, state, data_iter, force=True)
    due = {
      name: ev
      for name, ev in evaluators.items()
      if ev.cfg['every_steps'] and (done % ev.cfg['every_steps'] == 0 or done == num_steps)
    }
    if due:
      run_evaluators(due, state, workdir, writer)

  if start_step >= num_steps:
    logging.info('Nothing to do: the checkpoint is at step %d >= num_steps.', start_step)
  ckpt.wait_until_finished()
  ckpt.close()
  writer.flush()
  writer.close()
  return state


def sample(
  config: ml_collections.ConfigDict, workdir: str, *, num_samples: int, seed: int | None = None
) -> dict[str, str]:
  """Writes `num_samples` generated maps from the latest checkpoint in `workdir`.

  Outputs go to `workdir/samples/`: `sample_step{S}.png` (a colorized grid) and
  `sample_step{S}.npy` (int32 class ids, shape (N, H, W)).

  Returns:
    The paths written, keyed 'png' and 'npy'.
  """
  spec = validate_config(config)
  if num_samples <= 0:
    raise UserInputError(f'--num_samples={num_samples}; expected a positive integer.')
  workdir, _, state = restore_for_job(config, workdir, functools.partial(_init_state, config))
  step = int(state.step)
  key = jax.random.fold_in(jax.random.key(config.seed if seed is None else seed), _SAMPLE_STREAM)
  z = sample_latents(key, num_samples, config.model.latent_dim)
  outputs = jax.device_get(jax.jit(generate)(state, z))
  grid, ids = _sample_grid(outputs, config.model.head, spec.palette)
  out = epath.Path(workdir) / 'samples'
  paths = {'png': out / f'sample_step{step}.png', 'npy': out / f'sample_step{step}.npy'}
  if jax.process_index() == 0:
    images.write_png(paths['png'], grid)
    tmp = out / f'.sample_step{step}.npy.tmp'
    with tmp.open('wb') as f:
      np.save(f, ids)
    os.replace(tmp, paths['npy'])
    logging.info('Wrote %d samples at step %d: %s, %s', num_samples, step, *paths.values())
  return {k: os.fspath(v) for k, v in paths.items()}


def evaluate(config: ml_collections.ConfigDict, workdir: str, *, step: int | None = None) -> dict:
  """`--mode=eval`: runs every evaluator of `config.evals` on a checkpoint of `workdir`.

  Args:
    config: the experiment config (its `evals` entries choose the metrics).
    workdir: the run's directory.
    step: the checkpoint's step (default: the latest).

  Returns:
    The results, also written to `workdir/eval/step_<step>.json` and TensorBoard.
  """
  spec = validate_config(config)
  if not config.evals:
    raise UserInputError(
      'config.evals is empty: nothing to evaluate (e.g. configs/shapes.py defines evals.maps).'
    )
  workdir, mesh, state = restore_for_job(
    config, workdir, functools.partial(_init_state, config), step=step
  )
  source = data_lib.load_source(config.data.name, config.data.data_dir)
  return run_eval_job(_build_evaluators(config, spec, source, mesh), state, workdir)


__all__ = [
  'UserInputError',
  'expect',
  'jit_train_step',
  'evaluate',
  'open_run',
  'restore_for_job',
  'resume_or_start',
  'run_eval_job',
  'run_training',
  'sample',
  'train_and_evaluate',
  'validate_config',
]
