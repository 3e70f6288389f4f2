"""Train-step throughput of SemGAN for config variants: prints steps/s and images/s as a table.

Usage:
  python benchmarks/train_step.py                       # quick-variant sweep on this machine
  python benchmarks/train_step.py --variant= --steps=20 # the paper network
  python benchmarks/train_step.py --set model.kernel_size=4,5 --set model.g_base_features=12,16

Each row compiles once (not timed) and then times `--steps` steps on synthetic labels on all
devices of this process, so the numbers reflect the model, not the input pipeline.
"""

import argparse
import itertools
import pathlib
import sys
import time

import jax
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from configs import shapes  # noqa: E402
from semgan_jax import data as data_lib  # noqa: E402
from semgan_jax import parallel  # noqa: E402
from semgan_jax.train.semgan_step import make_train_step  # noqa: E402
from semgan_jax.train.state import create_train_state  # noqa: E402


def _parse_sets(sets: list[str]) -> list[tuple[str, list]]:
  out = []
  for item in sets:
    key, values = item.split('=', 1)
    out.append((key, [type_cast(v) for v in values.split(',')]))
  return out


def type_cast(value: str):
  for cast in (int, float):
    try:
      return cast(value)
    except ValueError:
      pass
  return value


def time_config(config, steps: int) -> float:
  """Seconds per step (median over `steps`) after one compile-and-run step."""
  mesh = parallel.create_mesh()
  spec = data_lib.get_dataset_spec(config.data.name)
  repl, batch_sh = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  state = jax.device_put(create_train_state(config, jax.random.key(0)), repl)
  step = jax.jit(
    make_train_step(palette=spec.palette, generator_loss=config.loss.generator),
    in_shardings=(repl, batch_sh, repl),
    out_shardings=(repl, repl),
    donate_argnums=(0,),
  )
  rng = np.random.default_rng(0)
  size, batch = config.data.image_size, config.data.batch_size
  labels = rng.integers(0, spec.num_classes, (batch, size, size), dtype=np.int32)
  batch = parallel.make_global_batch({'label': labels}, mesh)
  key = jax.random.key(1)
  state, metrics = step(state, batch, key)
  jax.block_until_ready(metrics)
  times = []
  for i in range(steps):
    t = time.perf_counter()
    state, metrics = step(state, batch, jax.random.fold_in(key, i))
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t)
  return float(np.median(times))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--variant', default='quick', help="configs/shapes.py variant ('' = paper)")
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument(
    '--set', action='append', default=[], help='field=v1,v2 sweep (repeatable; product taken)'
  )
  args = parser.parse_args()
  sweeps = _parse_sets(args.set)
  keys = [k for k, _ in sweeps]
  print(
    f'# {jax.device_count()} x {jax.devices()[0].device_kind}, variant {args.variant!r}, '
    f'median of {args.steps} steps'
  )
  header = keys + ['batch', 'ms/step', 'steps/s', 'images/s']
  print('| ' + ' | '.join(header) + ' |')
  print('|' + '---|' * len(header))
  for values in itertools.product(*[v for _, v in sweeps]) if sweeps else [()]:
    config = shapes.get_config(args.variant)
    for key, value in zip(keys, values, strict=True):
      section, field = key.split('.')
      config[section][field] = value
    sec = time_config(config, args.steps)
    row = [*map(str, values), str(config.data.batch_size)]
    row += [f'{sec * 1e3:.1f}', f'{1 / sec:.2f}', f'{config.data.batch_size / sec:.0f}']
    print('| ' + ' | '.join(row) + ' |', flush=True)


if __name__ == '__main__':
  main()
