"""All orbax use lives here (its API moves): save/restore a train state and the input position."""

import dataclasses
import json
import os
import re
import sys
import time
from typing import Any

import grain
import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

CONFIG_FILE = 'config.json'


# Pytree fields of a state that are not checkpointed: the frozen loss networks' weights.
_NOT_CHECKPOINTED = ('frozen_params',)


class CheckpointError(ValueError):
  """A checkpoint cannot be used with the current config."""


def state_to_tree(state) -> dict[str, Any]:
  """The arrays of a train state (a flax struct: `GANState`, `SegmenterState`) as a plain dict.

  Every pytree field but unset (None) ones and `frozen_params` (reloaded from their weight files);
  the typed key `rng` is stored as its raw key data.
  """
  tree = {
    field.name: getattr(state, field.name)
    for field in dataclasses.fields(state)
    if field.metadata.get('pytree_node', True)
    and field.name not in _NOT_CHECKPOINTED
    and getattr(state, field.name) is not None
  }
  tree['rng'] = jax.random.key_data(state.rng)
  return tree


def tree_to_state(tree: dict[str, Any], template):
  """Inverse of `state_to_tree`, taking the static fields (modules, optimizers) from `template`."""
  rng_impl = jax.random.key_impl(template.rng)
  fields = {k: v for k, v in tree.items() if k != 'rng'}
  return template.replace(rng=jax.random.wrap_key_data(tree['rng'], impl=rng_impl), **fields)


def flatten_config(config: dict, prefix: str = '') -> dict[str, Any]:
  """A nested config dict as {'section.field': value}."""
  out = {}
  for key, value in config.items():
    name = f'{prefix}{key}'
    if isinstance(value, dict):
      out.update(flatten_config(value, name + '.'))
    else:
      out[name] = value
  return out


# Fields added after runs were written, at the value those runs had: a saved config without one
# compares as if it held this value (configs without `task` are SemGAN's).
ADDED_FIELDS = {'task': 'semgan', 'model.upsample': 'transpose', 'model.width': 1.0}


def _architecture_view(config: dict, fields, excluded) -> dict[str, Any]:
  flat = flatten_config(config)
  for key, value in ADDED_FIELDS.items():
    flat.setdefault(key, value)
  return {
    k: v
    for k, v in flat.items()
    if any(k == f or k.startswith(f + '.') for f in fields) and k not in excluded
  }


def check_config_compatible(
  workdir: str, config: ml_collections.ConfigDict, fields: tuple[str, ...], excluded=()
) -> None:
  """Raises CheckpointError if `workdir`'s `config.json` differs from `config` in `fields` (a
  section selects all its fields; `excluded` fields are not compared): the fields whose change
  makes the checkpoints meaningless or unloadable (the shapes and meaning of the stored arrays
  depend on them). Everything else (steps, cadences, learning rate, loss weights) may change
  when a run resumes."""
  path = epath.Path(workdir) / CONFIG_FILE
  if not path.exists():
    return
  try:
    saved = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise CheckpointError(f'{path} is not valid JSON ({e}); it should hold the run config.') from e
  old = _architecture_view(saved, fields, excluded)
  new = _architecture_view(config.to_dict(), fields, excluded)
  diffs = [
    f'{k}: checkpoint has {old.get(k)!r}, config has {new.get(k)!r}'
    for k in sorted(set(old) | set(new))
    if old.get(k) != new.get(k)
  ]
  if diffs:
    raise CheckpointError(
      f'the checkpoints in {workdir} were written by an incompatible config ('
      + '; '.join(diffs)
      + '). Use another --workdir, or restore those fields.'
    )


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Records the run config next to the checkpoints (process 0; atomic rename)."""
  if jax.process_index() != 0:
    return
  path = epath.Path(workdir) / CONFIG_FILE
  tmp = path.parent / (path.name + '.tmp')
  tmp.write_text(config.to_json_best_effort(indent=2, sort_keys=True) + '\n')
  os.replace(tmp, path)


def has_checkpoint(workdir: str) -> bool:
  """Whether `workdir/checkpoints` holds a finished checkpoint; reads only, creates nothing."""
  directory = epath.Path(workdir) / 'checkpoints'
  if not directory.is_dir():
    return False
  return any(
    (step / 'commit_success.txt').exists() or (step / '_CHECKPOINT_METADATA').exists()
    for step in directory.iterdir()
    if step.name.isdigit()
  )


class Checkpointer:
  """Orbax CheckpointManager over `workdir/checkpoints` with two items per step.

  `state`: every array of the train state (networks, optimizers, norm statistics, step, rng);
  `data`: the grain iterator position of each process, so a resumed run reads the same batches.
  """

  def __init__(self, workdir: str, *, max_to_keep: int = 3):
    self.directory = epath.Path(workdir).absolute() / 'checkpoints'
    _quiet_abandoned_reads()  # Before any restore: abandoned reads may report at once.
    self._manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
      item_handlers={
        'state': ocp.StandardCheckpointHandler(),
        'data': grain.checkpoint.CheckpointHandler(),
      },
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state, data_iterator=None, *, force: bool = False) -> bool:
    """Saves (asynchronously) if the step is due or `force`; returns whether it saved."""
    items = {'state': ocp.args.StandardSave(state_to_tree(state))}
    if data_iterator is not None:
      items['data'] = grain.checkpoint.CheckpointSave(data_iterator)
    saved = self._manager.save(step, args=ocp.args.Composite(**items), force=force)
    if saved:
      logging.info('Saving checkpoint at step %d to %s', step, self.directory)
    return saved

  def restore(self, template, data_iterator=None, step: int | None = None, *, set_aside=False):
    """Restores `step` (default: the newest readable one) into the shardings of `template`, and
    moves the iterator there.

    A latest step that cannot be read (truncated or missing files, another architecture) is
    named in one warning with the reason, and the next older step is tried. Nothing is deleted:
    with `set_aside` (training, which will write those step numbers again) an unreadable step is
    moved to `<workdir>/unreadable_checkpoints/`, otherwise it stays where it is.

    Raises:
      CheckpointError: no checkpoint; `step` is absent or unreadable; no step is readable.
    """
    steps = self.all_steps()
    if not steps:
      raise CheckpointError(f'no checkpoint found in {self.directory}.')
    if step is not None:
      if step not in steps:
        raise CheckpointError(
          f'no checkpoint at step {step} in {self.directory}; it has steps {steps}.'
        )
      return self._restore_step(step, template, data_iterator)
    for tried, candidate in enumerate(reversed(steps)):
      if tried:
        logging.warning('Falling back to the checkpoint at step %d.', candidate)
      try:
        return self._restore_step(candidate, template, data_iterator)
      except CheckpointError as e:
        if candidate == steps[0]:
          raise CheckpointError(f'{e} No older checkpoint is readable.') from e
        if set_aside:
          logging.warning('%s Moved it to %s.', e, self._set_aside(candidate))
        else:
          logging.warning('%s Delete that directory once you no longer need it.', e)
    raise AssertionError('unreachable')

  def _set_aside(self, step: int) -> epath.Path:
    """Moves an unreadable step out of the manager's directory (process 0; all wait)."""
    target = self.directory.parent / 'unreadable_checkpoints' / str(step)
    if jax.process_index() == 0:
      target.parent.mkdir(parents=True, exist_ok=True)
      if target.exists():
        target = target.with_name(f'{step}.{int(time.time())}')
      (self.directory / str(step)).rename(target)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices(f'set aside checkpoint {step}')
    self._manager.reload()
    return target

  def _restore_step(self, step: int, template, data_iterator):
    path = self.directory / str(step)
    for required in ['state/_METADATA'] + ([_data_file()] if data_iterator is not None else []):
      if not (path / required).is_file() or not os.path.getsize(path / required):
        raise CheckpointError(f'checkpoint {path} cannot be read: {required} is missing or empty.')
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_to_tree(template))
    items = {'state': ocp.args.StandardRestore(abstract)}
    if data_iterator is not None:
      items['data'] = grain.checkpoint.CheckpointRestore(data_iterator)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # noqa: BLE001 (orbax and tensorstore raise many types; all mean this)
      raise CheckpointError(f'checkpoint {path} {_restore_reason(e)}.') from e
    bad = nonfinite_leaves(restored['state'])
    if bad:
      raise CheckpointError(
        f'checkpoint {path} holds NaN or infinite values in {bad[0]} (damaged).'
      )
    logging.info('Restored checkpoint at step %d from %s', step, self.directory)
    return tree_to_state(restored['state'], template)

  def wait_until_finished(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()


@jax.jit
def _finite_leaves(tree) -> list[jax.Array]:
  return [
    jnp.isfinite(x).all() if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.bool_(True)
    for x in jax.tree.leaves(tree)
  ]


def nonfinite_leaves(tree) -> list[str]:
  """The paths of a pytree's floating-point leaves holding NaN or infinity, in one jitted
  reduction and one small transfer (used at saves and restores)."""
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  flags = jax.device_get(_finite_leaves(tree))
  paths = [jax.tree_util.keystr(path) for path, _ in leaves]
  return [path for path, ok in zip(paths, flags, strict=True) if not ok]


def _data_file() -> str:
  """This process's input-position file in a checkpoint."""
  return f'data/process_{jax.process_index()}-of-{jax.process_count()}.json'


def _restore_reason(error: BaseException) -> str:
  """Why a restore failed, in a few words and the most specific line of the library's messages."""
  chain = []
  while error is not None and len(chain) < 8:
    chain.append(error)
    error = error.__cause__ or error.__context__
  texts = [' '.join(str(e).split()) for e in chain]
  for text in texts:
    # TensorStore's status codes name the damage (short reads, bad chunks, missing files).
    detail = re.search(r'\b(OUT_OF_RANGE|DATA_LOSS|NOT_FOUND|FAILED_PRECONDITION): .*', text)
    if detail:
      return f'cannot be read: truncated or damaged ({detail.group(0)[:300]})'
  first = chain[0]
  if isinstance(first, ValueError | KeyError | TypeError):
    return f'does not match the current model ({texts[0][:300]})'
  return f'cannot be read ({texts[0][:300]})'


def _quiet_abandoned_reads() -> None:
  """Drops the errors of a failed restore's abandoned reads.

  When one array of a restore fails, orbax stops waiting for the others and closes its event
  loop while TensorStore still reads them; each then reports, as an unraisable error, that it
  failed too or could not call back. Those reports say nothing new (the failure is reported once,
  by the caller), so this filter drops exactly them.
  """
  previous = sys.unraisablehook
  if getattr(previous, 'drops_abandoned_reads', False):
    return

  def hook(unraisable):
    value, source = unraisable.exc_value, getattr(unraisable.object, '__qualname__', '')
    if isinstance(value, RuntimeError) and str(value) == 'Event loop is closed':
      return
    if 'read_array' in str(source):  # orbax's per-array read coroutines
      return
    previous(unraisable)

  hook.drops_abandoned_reads = True
  sys.unraisablehook = hook
