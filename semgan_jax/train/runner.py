"""The runner: `train`, `evaluate` and `sample`, written once for every task.

It owns what every run shares; the task (`semgan_jax.tasks`) supplies the rest:
- validation before anything is written: the shared fields (seed, dtype, batch vs devices,
  cadences, learning rate and schedule, run length), the task's own checks, the evaluators'
  entries, the data, the frozen weights and the initial state all pass before the workdir is
  created, so a refused config writes nothing;
- one rng policy: `rng_streams(seed)` names the streams (init, sample); the task splits its
  parameter keys and the state's training key from the init stream, and step `i` uses
  `fold_in(state.rng, i)`;
- one run length (`optim.resolve_num_steps`) and one schedule builder (`optim.build_schedule`),
  whose learning rate is logged as `train/lr`;
- resume: a workdir with checkpoints is refused when the task's architecture fields differ;
  otherwise the latest checkpoint (state and input position) is restored and the run continues
  exactly;
- progress lines (steps/s, ETA), TensorBoard scalars, sample grids, checkpoints and evaluators on
  their cadences and at the last step.
"""

import dataclasses
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

from semgan_jax import images, parallel
from semgan_jax.errors import UserInputError, expect, expect_positive
from semgan_jax.evaluation import evaluator as evaluator_lib
from semgan_jax.evaluation import registry
from semgan_jax.tasks.base import Data, Task
from semgan_jax.train import checkpointing, faults, optim, writers
from semgan_jax.train.writers import create_metric_writer

STREAMS = {'init': 0, 'sample': 1}  # Named streams of randomness, fold_in(key(seed), index).
# Fields that change how the networks compute, not what they are: a run may resume with others.
COMPUTATION_FIELDS = ('model.dtype', 'model.remat', 'model.conv_lowering')


def rng_streams(seed: int) -> dict[str, jax.Array]:
  """The run's named keys, each `fold_in(key(seed), STREAMS[name])`."""
  root = jax.random.key(seed)
  return {name: jax.random.fold_in(root, index) for name, index in STREAMS.items()}


def check_shared_config(task: Task, config: ml_collections.ConfigDict) -> None:
  """The fields every task reads; raises UserInputError naming the first that cannot work."""
  expect(0 <= config.seed < 2**31, f'config.seed={config.seed}; expected an integer in [0, 2**31).')
  expect(
    config.model.dtype in task.dtypes,
    f'config.model.dtype={config.model.dtype!r}; config.task={task.name!r} runs in {task.dtypes}.',
  )
  expect_positive(config.data, 'data', ('batch_size',))
  cadences = ['log_every_steps', 'ckpt_every_steps', 'max_checkpoints']
  if task.sample_name:
    cadences += ['sample_every_steps', 'num_samples']
  expect_positive(config.train, 'train', cadences)
  skip = config.train.get('skip_nonfinite_steps', False)
  expect(
    isinstance(skip, bool), f'config.train.skip_nonfinite_steps={skip!r}; expected True/False.'
  )
  optim.check_optim_config(config.optim)


@dataclasses.dataclass
class Run:
  """Everything a run has once its config passed: built before the workdir is written."""

  task: Task
  config: ml_collections.ConfigDict
  workdir: str
  spec: Any
  mesh: Mesh
  data: Data
  num_steps: int
  schedule: Callable[[int], Any]
  state: Any
  evaluators: dict[str, evaluator_lib.Evaluator]


def _architecture(task: Task) -> tuple[tuple[str, ...], tuple[str, ...]]:
  return ('task',) + task.architecture_fields, COMPUTATION_FIELDS


def open_run(task: Task, config, workdir: str, *, mode: str) -> Run:
  """Validates everything and builds the run's parts for `mode` (train, eval, sample), writing
  nothing; `sample` builds no evaluators.

  Raises:
    UserInputError: a config field, flag, data set, weight file or workdir that cannot work.
    checkpointing.CheckpointError: a workdir whose checkpoints another architecture wrote.
  """
  if not workdir:
    raise UserInputError('--workdir is required.')
  check_shared_config(task, config)
  spec = task.check_config(config)
  mesh = parallel.create_mesh()
  try:
    parallel.check_global_batch_size(config.data.batch_size, mesh)
  except ValueError as e:
    raise UserInputError(str(e)) from e
  workdir = os.fspath(epath.Path(os.path.expanduser(workdir)).absolute())
  if checkpointing.has_checkpoint(workdir):
    checkpointing.check_config_compatible(workdir, config, *_architecture(task))
  elif mode != 'train':
    raise UserInputError(f'no checkpoint in {workdir}/checkpoints; train first (--mode=train).')
  frozen = task.load_frozen(config) if mode == 'train' else {}
  data = task.open_data(config, spec, train=mode == 'train')
  supported = task.evaluator_kwargs(config, spec)
  evals = config.evals if mode != 'sample' else {}
  try:
    registry.check_evals(
      evals,
      spec=spec,
      split_size=lambda split: len(data.load_split(split)),
      num_devices=mesh.devices.size,
      supported=supported,
      task=task.name,
    )
  except evaluator_lib.EvalConfigError as e:
    raise UserInputError(str(e)) from e
  per_epoch = optim.steps_per_epoch(len(data.load_split('train')), config.data.batch_size)
  num_steps = optim.resolve_num_steps(config, per_epoch)
  schedule = optim.build_schedule(config.optim, num_steps=num_steps, per_epoch=per_epoch)
  state = _init_state(task, config, mesh, frozen, optim.build_optimizer(config.optim, schedule))
  try:
    evaluators = registry.build_evaluators(
      evals,
      spec=spec,
      load_split=data.load_split,
      mesh=mesh,
      supported=supported,
      task=task.name,
    )
  except (OSError, evaluator_lib.EvalConfigError) as e:
    raise UserInputError(str(e)) from e
  return Run(task, config, workdir, spec, mesh, data, num_steps, schedule, state, evaluators)


def _init_state(task: Task, config, mesh: Mesh, frozen: dict, tx):
  """The task's step-0 state, built under jit directly in its replicated sharding."""
  replicated = parallel.replicated(mesh)
  init = jax.jit(
    lambda rng, frozen: task.init_state(config, rng, frozen, tx), out_shardings=replicated
  )
  try:
    return init(rng_streams(config.seed)['init'], jax.device_put(frozen, replicated))
  except (TypeError, ValueError, KeyError, ZeroDivisionError) as e:
    message = ' '.join(str(e).split())
    raise UserInputError(
      f'config.model: the {task.name} networks cannot be built from these fields ({message}).'
    ) from e


def prepare_workdir(workdir: str) -> None:
  """Creates `workdir` if needed and proves it is writable, before anything else is written."""
  path = epath.Path(workdir)
  probe = path / f'.write_test_{uuid.uuid4().hex}'
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe.write_text('ok')
    probe.unlink()
  except OSError as e:
    raise UserInputError(f'--workdir={workdir} cannot be written: {e}') from e


def jit_train_step(step: Callable, mesh: Mesh) -> Callable:
  """`step(state, batch, rng) -> (state, metrics)` compiled for `mesh`: state and rng replicated,
  the batch sharded on `data`, the old state donated (its buffers are reused in place)."""
  repl, batch_sh = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  return jax.jit(
    step, in_shardings=(repl, batch_sh, repl), out_shardings=(repl, repl), donate_argnums=(0,)
  )


def format_duration(seconds: float) -> str:
  seconds = int(seconds)
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h}h{m:02d}m' if h else f'{m}m{s:02d}s'


def train(task: Task, config: ml_collections.ConfigDict, workdir: str):
  """Trains `task` as `config` says, resuming from `workdir` if it holds a checkpoint.

  Writes to `workdir`: `config.json`, `checkpoints/` (orbax: the state and the input position),
  `samples/step_*.png` (tasks with samples), `eval/step_*.json`, TensorBoard events, and what the
  task exports. Re-running with the same workdir continues from the latest checkpoint and yields
  the same state as an uninterrupted run.

  Returns:
    The final train state.
  """
  run = open_run(task, config, workdir, mode='train')
  sampler = task.make_sampler(
    config,
    run.spec,
    run.data,
    run.mesh,
    config.train.num_samples if task.sample_name else 0,
    rng_streams(config.seed)['sample'],
  )
  step = faults.guard_step(
    task.make_train_step(config, run.spec), config.train.get('skip_nonfinite_steps', False)
  )
  train_step = jit_train_step(step, run.mesh)
  prepare_workdir(run.workdir)
  ckpt = checkpointing.Checkpointer(run.workdir, max_to_keep=config.train.max_checkpoints)
  state = run.state
  if ckpt.latest_step() is not None:
    state = ckpt.restore(state, run.data.iterator, set_aside=True)
  else:
    checkpointing.write_config(run.workdir, config)
  for name, params in task.networks(state).items():
    parameter_overview.log_parameter_overview(
      params, include_stats=False, msg=f'{name} parameters:', jax_logging_process=0
    )
  writer = create_metric_writer(run.workdir)
  if int(state.step) == 0:
    writer.write_hparams(checkpointing.flatten_config(config.to_dict()))
  start_step = int(state.step)
  logging.info(
    '%s, steps %d -> %d.', task.describe_run(config, run.spec, run.data), start_step, run.num_steps
  )
  try:
    with faults.StopSignals() as stop:
      state = _loop(run, state, start_step, train_step, sampler, ckpt, writer, stop)
  finally:
    ckpt.close()
    writer.flush()
    writer.close()
  task.export(config, state, run.workdir)
  return state


def _loop(run: Run, state, start_step: int, train_step, sampler, ckpt, writer, stop):
  """Steps, progress lines, scalars, samples, checkpoints and evaluators on their cadences;
  stops after saving the current step when `stop` says so."""
  t, num_steps, mesh = run.config.train, run.num_steps, run.mesh
  # The training key leaves the (donated) state once, so per-step keys need no state access.
  train_rng = jax.random.wrap_key_data(
    np.asarray(jax.random.key_data(state.rng)), impl=jax.random.key_impl(state.rng)
  )
  saver = faults.SafeSaver(ckpt, run.data.iterator)
  # The metrics of steps pending_start + 1 .. step, kept on the device until the next log step.
  pending, pending_start, timing_start, timed_steps = [], start_step, None, 0
  for step in range(start_step, num_steps):
    batch = parallel.make_global_batch(next(run.data.iterator), mesh)
    with jax.profiler.StepTraceAnnotation('train', step_num=step):
      state, metrics = train_step(state, batch, jax.random.fold_in(train_rng, step))
    pending.append(metrics)
    done = step + 1
    if timing_start is None:
      # Step one includes compilation; rates and the ETA are measured from here on.
      jax.block_until_ready(metrics)
      timing_start = time.perf_counter()
      logging.info('First step (with compilation) done at step %d.', done)
    else:
      timed_steps += 1
    last = done == num_steps
    log_step = done % t.log_every_steps == 0 or last
    if log_step:
      fetched = jax.device_get(pending)
      saver.check(fetched, pending_start)
      pending, pending_start = [], done
      kept = [m for m in fetched if not m.get(faults.SKIPPED)] or fetched
      summary = {k: float(np.mean([m[k] for m in kept])) for k in fetched[0] if k != faults.FINITE}
      if faults.SKIPPED in summary:
        summary[faults.SKIPPED] = float(sum(m[faults.SKIPPED] for m in fetched))
      rate = timed_steps / max(time.perf_counter() - timing_start, 1e-9) if timed_steps else 0.0
      summary['train/steps_per_sec'] = rate
      summary['train/lr'] = float(run.schedule(done))
      writer.write_scalars(done, summary)
      eta = format_duration((num_steps - done) / rate) if rate else '?'
      logging.info(
        'step %d/%d | %s | %.2f steps/s | ETA %s',
        done,
        num_steps,
        run.task.describe(summary),
        rate,
        eta,
      )
    stopping = stop.should_stop(done, agree=log_step)
    if sampler is not None and (done % t.sample_every_steps == 0 or last) and not stopping:
      grid, _ = sampler(state)
      if jax.process_index() == 0:
        images.write_png(epath.Path(run.workdir) / 'samples' / f'step_{done:07d}.png', grid)
        writer.write_images(done, {'samples': grid[None]})
    if done % t.ckpt_every_steps == 0 or last or stopping:
      saver.save(done, state, pending, pending_start)
    if stopping:
      ckpt.wait_until_finished()
      raise faults.Preempted(done, stop.signum)
    due = {
      name: ev
      for name, ev in run.evaluators.items()
      if ev.cfg['every_steps'] and (done % ev.cfg['every_steps'] == 0 or last)
    }
    if due:
      writers.run_evaluators(due, state, run.workdir, writer)
  if start_step >= num_steps:
    logging.info('Nothing to do: the checkpoint is at step %d >= num_steps.', start_step)
    final = {name: ev for name, ev in run.evaluators.items() if ev.cfg['every_steps']}
    if (
      start_step == num_steps
      and final
      and not writers.results_path(run.workdir, num_steps).exists()
    ):
      # The run was stopped after its last checkpoint, during the final evaluation.
      logging.info('The final evaluation of step %d is missing: evaluating now.', num_steps)
      writers.run_evaluators(final, state, run.workdir, writer)
  ckpt.wait_until_finished()
  return state


def _restore(run: Run, step: int | None):
  ckpt = checkpointing.Checkpointer(run.workdir)
  try:
    return ckpt.restore(run.state, step=step)
  finally:
    ckpt.close()


def evaluate(task: Task, config: ml_collections.ConfigDict, workdir: str, *, step=None) -> dict:
  """`--mode=eval`: every evaluator of `config.evals` on a checkpoint of `workdir` (`step`,
  default the latest). Returns the results, also written to `eval/step_<step>.json` and
  TensorBoard."""
  expect(bool(config.evals), 'config.evals is empty: nothing to evaluate (see the config file).')
  run = open_run(task, config, workdir, mode='eval')
  state = _restore(run, step)
  writer = create_metric_writer(run.workdir)
  try:
    return writers.run_evaluators(run.evaluators, state, run.workdir, writer)
  finally:
    writer.flush()
    writer.close()


def sample(
  task: Task,
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  num_samples: int,
  seed=None,
  step=None,
) -> dict[str, str]:
  """`--mode=sample`: the task's sample grid of a checkpoint of `workdir` (the latest), written
  as `samples/<name>_step<S>.png`, with the task's array as `.npy` next to it. `step` picks the
  checkpoint (default: the newest readable one).

  `seed` replaces `config.seed` for the sample stream (tasks with random inputs).

  Returns:
    The paths written, keyed by extension.
  """
  expect(
    task.sample_name is not None,
    f'config.task={task.name} has no samples; use --mode=train or --mode=eval.',
  )
  expect(num_samples > 0, f'--num_samples={num_samples}; expected a positive integer.')
  run = open_run(task, config, workdir, mode='sample')
  state = _restore(run, step)
  rng = rng_streams(config.seed if seed is None else seed)['sample']
  grid, array = task.make_sampler(config, run.spec, run.data, run.mesh, num_samples, rng)(state)
  out = epath.Path(run.workdir) / 'samples'
  stem = f'{task.sample_name}_step{int(state.step)}'
  paths = {'png': out / f'{stem}.png'}
  if array is not None:
    paths['npy'] = out / f'{stem}.npy'
  if jax.process_index() == 0:
    images.write_png(paths['png'], grid)
    if array is not None:
      images.write_atomically(paths['npy'], lambda f: np.save(f, array))
    logging.info('Wrote %d samples at step %d: %s', num_samples, int(state.step), paths)
  return {k: os.fspath(v) for k, v in paths.items()}


def dream(task: Task, config, workdir: str, *, get_task, num_samples=None, seed=None) -> dict:
  """`--mode=dream`: the chain of the two trained runs `config.dream` names (`get_task` finds
  each run's task from its config). Both are read, checked against each other and restored
  before the task writes its pictures into `workdir/dream/`; returns the paths written."""
  expect(bool(workdir), '--workdir is required.')
  count = config.dream.num_samples if num_samples is None else num_samples
  expect(count > 0, f'--num_samples={count}; expected a positive integer.')
  seed = config.seed if seed is None else seed
  expect(0 <= seed < 2**31, f'--sample_seed={seed}; expected an integer in [0, 2**31).')
  halves = task.halves(config)
  states = {}
  for role, half in halves.items():
    run = open_run(get_task(half.config), half.config, half.workdir, mode='sample')
    states[role] = _restore(run, half.step)
  outputs = task.make_dreamer(config, halves, states)(rng_streams(seed)['sample'], count)
  out = os.path.join(os.path.abspath(os.path.expanduser(workdir)), 'dream')
  prepare_workdir(out)
  return task.write(
    config, outputs, out, seed=seed, steps={r: int(s.step) for r, s in states.items()}
  )
