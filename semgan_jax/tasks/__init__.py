"""The tasks: one module per kind of run, selected by `config.task` (default 'semgan').

`TASKS[name]` is the `Task` the runner (`semgan_jax.train.runner`) drives. A task module imports
no other task module; what tasks share lives in `semgan_jax.train` and `semgan_jax.tasks.base`.
"""

import ml_collections

from semgan_jax.errors import UserInputError
from semgan_jax.tasks.base import Task
from semgan_jax.tasks.dream import DreamTask
from semgan_jax.tasks.segmenter import SegmenterTask
from semgan_jax.tasks.semanticgan import SemanticGANTask
from semgan_jax.tasks.semgan import SemGANTask

TASKS: dict[str, Task] = {
  task.name: task for task in (SemGANTask(), SemanticGANTask(), SegmenterTask(), DreamTask())
}
DEFAULT_TASK = 'semgan'


def get_task(config: ml_collections.ConfigDict) -> Task:
  """The task `config.task` names (configs without the field are SemGAN's)."""
  name = config.get('task', DEFAULT_TASK)
  if name not in TASKS:
    raise UserInputError(f'config.task={name!r}; expected one of {sorted(TASKS)}.')
  return TASKS[name]


__all__ = ['DEFAULT_TASK', 'TASKS', 'Task', 'get_task']
