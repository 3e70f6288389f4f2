"""All orbax use lives here (its API moves): save/restore a train state and the input position."""

import dataclasses
import json
import os
from typing import Any

import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging
from etils import epath

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


def _architecture_view(config: dict, fields, excluded) -> dict[str, Any]:
  flat = flatten_config(config)
  flat.setdefault('task', 'semgan')  # Configs without the field are SemGAN's.
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

  def restore(self, template, data_iterator=None, step: int | None = None):
    """Restores `step` (default: latest) into the shardings of `template`; moves the iterator.

    Raises:
      CheckpointError: if there is no checkpoint, or its arrays do not fit the template (written
        by another architecture).
    """
    step = self._manager.latest_step() if step is None else step
    if step is None:
      raise CheckpointError(f'no checkpoint found in {self.directory}.')
    if step not in self.all_steps():
      raise CheckpointError(
        f'no checkpoint at step {step} in {self.directory}; it has steps {self.all_steps()}.'
      )
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state_to_tree(template))
    items = {'state': ocp.args.StandardRestore(abstract)}
    if data_iterator is not None:
      items['data'] = grain.checkpoint.CheckpointRestore(data_iterator)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    except (ValueError, KeyError, TypeError) as e:
      raise CheckpointError(
        f'checkpoint {self.directory / str(step)} does not match the current model ({e}).'
      ) from e
    logging.info('Restored checkpoint at step %d from %s', step, self.directory)
    return tree_to_state(restored['state'], template)

  def wait_until_finished(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()
