"""Faults a training run survives: preemption signals and non-finite states.

- `StopSignals`: SIGTERM and SIGINT ask the run to finish its current step, save that step and
  exit (0 after SIGTERM, 130 after SIGINT); a second signal exits at once. Orbax commits a
  checkpoint by renaming its finished temporary directory, so the previous checkpoints stay
  intact whenever the process dies. On multi-host runs every process stops at the same step: the
  JAX preemption service (`jax.distributed`) agrees on SIGTERM, and a signal only some processes
  got (SIGINT) is agreed on at the next logging step.
- `guard_step`: a train step that also returns an on-device finite flag over its metrics (and,
  with `train.skip_nonfinite_steps`, keeps the previous state on a non-finite step, counted in
  `train/skipped_nonfinite`). `SafeSaver` reads the flags and
  the parameters only where the host syncs anyway (logging and checkpoint steps), so no
  checkpoint is written from a non-finite state.
"""

import signal
import threading
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from semgan_jax.errors import UserInputError
from semgan_jax.train import checkpointing

FINITE = 'train/finite'  # The guarded step's flag; popped before metrics are logged.
SKIPPED = 'train/skipped_nonfinite'
EXIT_CODES = {signal.SIGTERM: 0, signal.SIGINT: 130}


class NonFiniteError(UserInputError):
  """The run diverged: reported as one line; no checkpoint was written from the bad state."""


class Preempted(Exception):  # noqa: N818 (not an error: the run stopped as asked)
  """The run saved its current step after a signal; `exit_code` is what the process returns."""

  def __init__(self, step: int, signum: int):
    name = signal.Signals(signum).name
    super().__init__(f'{name}: preempted at step {step}; saved. Re-run the same command to resume.')
    self.step, self.exit_code = step, EXIT_CODES.get(signum, 0)


def _preemption_service() -> bool:
  """Whether JAX's preemption sync manager runs (multi-host, `jax.distributed` initialised)."""
  if jax.process_count() == 1:
    return False
  from jax._src import distributed  # No public accessor; orbax reads the same state.

  return getattr(distributed.global_state, 'preemption_sync_manager', None) is not None


class StopSignals:
  """A context in which SIGTERM/SIGINT request a stop, polled once per step by `should_stop`."""

  def __init__(self):
    self.signum: int | None = None
    self._previous = {}
    self._service = _preemption_service()

  def __enter__(self):
    if threading.current_thread() is not threading.main_thread():
      return self  # Python delivers signals to the main thread only (e.g. a notebook's worker).
    # Where JAX's preemption service runs it owns SIGTERM (its handler notifies every process).
    signums = (signal.SIGINT,) if self._service else (signal.SIGTERM, signal.SIGINT)
    for signum in signums:
      self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if self.signum is not None:  # The second signal: die of it now, as without a handler.
      signal.signal(signum, signal.SIG_DFL)
      signal.raise_signal(signum)
      return
    self.signum = signum
    logging.warning(
      'Received %s: finishing this step and saving a checkpoint (send it again to exit at once).',
      signal.Signals(signum).name,
    )

  def should_stop(self, step: int, agree: bool) -> bool:
    """Whether to save `step` and stop. Multi-host: every process calls this at every step, and
    `agree` (the same on all) marks the steps where processes compare their local signals."""
    if jax.process_count() == 1:
      return self.signum is not None
    if self._service and multihost_utils.reached_preemption_sync_point(step):
      self.signum = self.signum or signal.SIGTERM
      return True
    if agree:
      signums = multihost_utils.process_allgather(np.int32(self.signum or 0))
      if np.any(signums):
        self.signum = int(np.max(signums))
        return True
    return False


def guard_step(step: Callable, skip_nonfinite: bool) -> Callable:
  """`step` with the `FINITE` flag in its metrics (and, if `skip_nonfinite`, skipped updates)."""

  def guarded(state, batch, rng):
    new_state, metrics = step(state, batch, rng)
    finite = jnp.all(jnp.stack([jnp.isfinite(v).all() for v in jax.tree.leaves(metrics)]))
    if skip_nonfinite:
      # The step counter still advances, so the input position and cadences stay in step.
      new_state = jax.lax.cond(
        finite, lambda: new_state, lambda: state.replace(step=new_state.step)
      )
      metrics = {**metrics, SKIPPED: (~finite).astype(jnp.float32)}
    return new_state, {**metrics, FINITE: finite}

  return guarded


def first_nonfinite_metric(fetched: list[dict], first_step: int) -> tuple[int, str] | None:
  """(step, metric) of the first non-finite metric of host `fetched` metrics of steps
  `first_step + 1, ...` (a skipped step is not one), or None."""
  for offset, metrics in enumerate(fetched):
    if not metrics[FINITE] and not metrics.get(SKIPPED):
      bad = [k for k, v in metrics.items() if k != FINITE and not np.all(np.isfinite(v))]
      return first_step + 1 + offset, (bad or ['a metric'])[0]
  return None


def diverged_message(step: int, what: str, last_good: int | None) -> str:
  """The one line of a diverged run: where, what, and how to go on."""
  if last_good is None:
    resume = 'No checkpoint was written: re-run with a lower --config.optim.lr'
  else:
    resume = (
      f'The last good checkpoint is step {last_good}: re-run the same command with a lower '
      '--config.optim.lr to resume from it'
    )
  return (
    f'training diverged: {what} is not finite at step {step}, and no checkpoint was written '
    f'from it. {resume} (or set --config.train.skip_nonfinite_steps=True to skip such steps).'
  )


class SafeSaver:
  """Checkpoints on the cadence, never from a non-finite state: before each save the finite flags
  of the steps not yet logged and the state's arrays are read (the host syncs there anyway)."""

  def __init__(self, ckpt, data_iterator):
    self.ckpt, self.data_iterator = ckpt, data_iterator

  def check(self, fetched: list[dict], first_step: int) -> None:
    """Raises NonFiniteError on the first non-finite metric of steps `first_step + 1, ...`."""
    bad = first_nonfinite_metric(fetched, first_step)
    if bad is not None:
      self._diverged(*bad)

  def save(self, done: int, state, pending: list, first_step: int) -> None:
    """Saves step `done` if `pending` (the metrics of steps `first_step + 1 .. done`) and the
    state are finite; raises NonFiniteError naming the first that is not."""
    self.check(jax.device_get(pending), first_step)
    bad = checkpointing.nonfinite_leaves(checkpointing.state_to_tree(state))
    if bad:
      self._diverged(done, f'{bad[0]} (one of {len(bad)} non-finite state arrays)')
    self.ckpt.save(done, state, self.data_iterator, force=True)

  def _diverged(self, step: int, what: str):
    self.ckpt.wait_until_finished()
    raise NonFiniteError(diverged_message(step, what, self.ckpt.latest_step()))
