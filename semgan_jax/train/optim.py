"""Optimizers, learning-rate schedules and run lengths: one builder for every task.

`config.optim.schedule` is one of `SCHEDULES`:
  constant      `lr` throughout (paper 2).
  linear_decay  `lr` until `decay_start_step`, then linearly to 0 over `decay_steps`.
  poly          `lr` until `decay_start_step`, then `lr·(1 - t/T)^power` to 0 over T =
                `decay_steps` (erfnet_pytorch).
  epoch_decay   `lr` for `epochs_constant` epochs, then linearly to 0 over `epochs_decay` more
                (pix2pixHD: 100 + 100).
For the decaying schedules `decay_steps = 0` means "until the end of training". The run's length
is `train.num_steps` when positive; `train.num_steps = 0` means the schedule's own length, which
`constant` has not.
"""

import ml_collections
import optax

from semgan_jax.errors import UserInputError, expect

SCHEDULES = ('constant', 'linear_decay', 'poly', 'epoch_decay')


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """Full batches per pass over the training split (the iterator drops the remainder)."""
  return max(num_examples // batch_size, 1)


def _decay_window(optim: ml_collections.ConfigDict, per_epoch: int) -> tuple[int, int]:
  """(first decaying step, decay length or 0 for "until the end") of a decaying schedule."""
  if optim.schedule == 'epoch_decay':
    return optim.epochs_constant * per_epoch, max(optim.epochs_decay * per_epoch, 1)
  return optim.decay_start_step, optim.decay_steps


def check_optim_config(optim: ml_collections.ConfigDict) -> None:
  """Raises UserInputError naming the first `config.optim` field that cannot work."""
  expect(optim.lr > 0, f'config.optim.lr={optim.lr}; expected a positive learning rate.')
  expect(
    optim.get('schedule') in SCHEDULES,
    f'config.optim.schedule={optim.get("schedule")!r}; expected one of {SCHEDULES}.',
  )
  if optim.schedule == 'epoch_decay':
    for name in ('epochs_constant', 'epochs_decay'):
      expect(optim[name] >= 0, f'config.optim.{name}={optim[name]}; expected >= 0.')
  elif optim.schedule != 'constant':
    for name in ('decay_start_step', 'decay_steps'):
      expect(optim[name] >= 0, f'config.optim.{name}={optim[name]}; expected >= 0.')
  if optim.schedule == 'poly':
    expect(optim.power > 0, f'config.optim.power={optim.power}; expected > 0.')
  if 'weight_decay' in optim:
    expect(
      optim.weight_decay >= 0, f'config.optim.weight_decay={optim.weight_decay}; expected >= 0.'
    )


def resolve_num_steps(config: ml_collections.ConfigDict, per_epoch: int) -> int:
  """The run's length in steps: `train.num_steps` if positive, else the schedule's length."""
  num_steps, optim = config.train.num_steps, config.optim
  expect(
    num_steps >= 0,
    f'config.train.num_steps={num_steps}; expected a positive count, or 0 for the length of '
    'the learning-rate schedule.',
  )
  if num_steps > 0:
    return num_steps
  if optim.schedule != 'constant':
    start, length = _decay_window(optim, per_epoch)
    if length > 0 and start + length > 0:
      return start + length
  raise UserInputError(
    f'config.train.num_steps=0 means the length of the learning-rate schedule, but '
    f'config.optim.schedule={optim.schedule!r} has no end here; expected a positive '
    'config.train.num_steps.'
  )


def build_schedule(
  optim: ml_collections.ConfigDict, *, num_steps: int, per_epoch: int = 1
) -> optax.Schedule:
  """`config.optim`'s learning rate as a function of the step (see the module docstring)."""
  if optim.schedule == 'constant':
    return optax.constant_schedule(optim.lr)
  start, length = _decay_window(optim, per_epoch)
  length = max(length or num_steps - start, 1)
  power = optim.power if optim.schedule == 'poly' else 1  # int: linear_schedule's exponent
  decay = optax.polynomial_schedule(optim.lr, 0.0, power=power, transition_steps=length)
  if start == 0 and optim.schedule == 'poly':
    return decay
  return optax.join_schedules([optax.constant_schedule(optim.lr), decay], [start])


def build_optimizer(
  optim: ml_collections.ConfigDict, schedule: optax.Schedule | float
) -> optax.GradientTransformation:
  """Adam with the config's β1, β2, ε at `schedule`; with `optim.weight_decay` (when the config
  has the field) added to the gradient first, torch's coupled L2 as erfnet_pytorch uses it."""
  adam = optax.adam(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps)
  if 'weight_decay' in optim:
    return optax.chain(optax.add_decayed_weights(optim.weight_decay), adam)
  return adam
