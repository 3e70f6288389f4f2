"""One registry of evaluator types: `config.evals.<name>.type` → its `Evaluator` subclass.

A task says which types it can be evaluated with by giving, per type, the predict functions the
evaluator's constructor takes (`Task.evaluator_kwargs`); an entry of another type is refused
with one line naming it, before anything is built.
"""

from collections.abc import Callable, Mapping
from typing import Any

from semgan_jax.evaluation.evaluator import EvalConfigError, Evaluator
from semgan_jax.evaluation.label_map_evaluator import LabelMapEvaluator
from semgan_jax.evaluation.miou_evaluator import MiouEvaluator
from semgan_jax.evaluation.photo_evaluator import PhotoEvaluator

EVALUATORS: dict[str, type[Evaluator]] = {
  'label_maps': LabelMapEvaluator,
  'photos': PhotoEvaluator,
  'miou': MiouEvaluator,
}


def _entries(evals_config, supported: Mapping[str, Any], task: str):
  """(name, cfg, evaluator class) of each entry, its `type` checked against the task's."""
  for name, cfg in (evals_config or {}).items():
    kind = cfg.get('type') if hasattr(cfg, 'get') else None
    if kind not in EVALUATORS:
      raise EvalConfigError(
        f'config.evals.{name}.type={kind!r}; expected one of {sorted(EVALUATORS)}.'
      )
    if kind not in supported:
      raise EvalConfigError(
        f'config.evals.{name}.type={kind!r}: config.task={task!r} is evaluated with '
        f'{sorted(supported)}.'
      )
    yield name, cfg, EVALUATORS[kind]


def check_evals(
  evals_config, *, spec, split_size: Callable[[str], int], num_devices: int, supported, task: str
) -> None:
  """Checks every entry without building anything (a run fails before it writes)."""
  for name, cfg, cls in _entries(evals_config, supported, task):
    cls.check_config(name, cfg, spec, split_size(cls.split(cfg)), num_devices)


def build_evaluators(
  evals_config, *, spec, load_split, mesh, supported: Mapping[str, dict], task: str
) -> dict[str, Evaluator]:
  """One evaluator per entry; `supported[type]` holds the task's keywords for that type."""
  return {
    name: cls(name, cfg, spec=spec, source=load_split(cls.split(cfg)), mesh=mesh, **supported[kind])
    for name, cfg, cls in _entries(evals_config, supported, task)
    for kind in (cfg['type'],)
  }
