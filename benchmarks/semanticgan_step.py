"""SemanticGAN's train step on this machine, optionally side by side with pix2pixHD's own iteration.

Usage:
  python benchmarks/semanticgan_step.py                              # our rows only
  python benchmarks/semanticgan_step.py --pix2pixhd=~/src/pix2pixHD  # + pix2pixHD, alternating
  python benchmarks/semanticgan_step.py --sizes=256x128 --networks=pix2pixhd --rounds=5

Rows: for each size (W×H) the pix2pixHD-equivalent network (`configs/cityscapes.py:a`: ResNet
blocks, 64 features, 4 downsamplings, 9 blocks, instance boundaries, LSGAN, feature matching 10,
VGG19 perceptual 10 with random VGG weights, no SIPL) with 2 D scales (pix2pixHD's default
`num_D`), and the paper's `crb` network (`configs/cityscapes.py:e`, also 2 scales); batch 1,
float32. Then a SemGAN row at the paper's shapes settings (64×64, ks 11, full widths, batch 32).

Each row runs in its own worker process (so peak memory is the row's): it compiles the step
(timed, with XLA's FLOP count), runs one warm-up step, then times `--rounds` rounds of
`--steps` steps and of G forwards. With `--pix2pixhd=DIR` a second worker runs pix2pixHD's own
`Pix2PixHDModel` from that checkout (`benchmarks/pix2pixhd_worker.py`, needs PyTorch: give its
Python with `--torch-python`) on the same configuration, and the two workers' rounds alternate,
so both see the same machine state. The table is printed as markdown and everything is written
to `--json`.
"""

import argparse
import json
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
NETWORKS = {'pix2pixhd': 'a', 'crb': 'e'}
TORCH_HINT = (
  'pix2pixHD needs PyTorch, which semgan_jax does not depend on. Install a CPU build into a '
  'separate venv and pass its Python: python3 -m venv ~/torch-venv && ~/torch-venv/bin/pip '
  'install torch==2.13.0 numpy && python benchmarks/semanticgan_step.py --pix2pixhd=DIR '
  '--torch-python=~/torch-venv/bin/python'
)


def emit(payload: dict) -> None:
  print('@@ ' + json.dumps(payload), flush=True)


# ----------------------------------------------------------------------------- JAX worker


def _semanticgan_config(network: str, height: int, width: int, tiny: bool):
  sys.path.insert(0, str(ROOT))
  from configs import cityscapes

  config = cityscapes.get_config(NETWORKS[network])
  config.data.height, config.data.width, config.data.batch_size = height, width, 1
  config.model.num_d = 2
  config.loss.lambda_sipl = 0.0
  if tiny:
    config.model.g_base_features = config.model.d_base_features = 4
    config.model.num_downsamplings, config.model.num_blocks = 2, 1
  return config


def _time(fn, count: int) -> list[float]:
  import jax

  times = []
  for _ in range(count):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return times


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return float(cost.get('flops', 0.0))


def jax_worker(row: dict) -> None:
  """Builds one row's step and G forward, then answers 'step N' / 'forward N' / 'quit'."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  sys.path.insert(0, str(ROOT))
  rng = np.random.default_rng(0)
  if row['kind'] == 'semgan':
    from configs import shapes
    from semgan_jax.train.semgan_step import make_train_step
    from semgan_jax.train.state import create_train_state

    config = shapes.get_config('tiny' if row['tiny'] else '')
    size, batch_size = config.data.image_size, config.data.batch_size
    state = jax.jit(lambda key: create_train_state(config, key))(jax.random.key(0))
    labels = rng.integers(0, config.data.num_classes, (batch_size, size, size)).astype(np.int32)
    batch = {'label': jnp.asarray(labels)}
    step = make_train_step(
      palette=np.zeros((config.data.num_classes, 3), np.uint8),
      generator_loss=config.loss.generator,
    )
    z = jax.random.normal(jax.random.key(2), (batch_size, config.model.latent_dim))

    def forward_fn(params):
      variables = {'params': params, 'batch_stats': state.g_batch_stats}
      return state.generator.apply(variables, z, train=False)

    g_params = state.g_params
    images_per_step = batch_size
  else:
    from semgan_jax.models.inputs import label_to_generator_input
    from semgan_jax.models.vgg import VGG19Features
    from semgan_jax.train import semanticgan_step

    config = _semanticgan_config(row['network'], row['height'], row['width'], row['tiny'])
    for key, value in row.get('overrides', {}).items():
      section, field = key.split('.')
      config[section][field] = value
    h, w = config.data.height, config.data.width
    # Built under jit, as the training loop builds it (eager init keeps transient copies).
    vgg = jax.jit(lambda key: VGG19Features().init(key, jnp.zeros((1, 32, 32, 3)))['params'])(
      jax.random.key(2)
    )
    state = jax.jit(
      lambda key, frozen: semanticgan_step.create_semanticgan_state(config, key, frozen)
    )(jax.random.key(0), {'vgg': vgg})
    blocks = rng.integers(0, config.data.num_classes, (1, h // 8, w // 8)).astype(np.int32)
    labels = blocks.repeat(8, axis=1).repeat(8, axis=2)
    batch = {
      'label': jnp.asarray(labels),
      'instance': jnp.asarray(labels * 1000 + (np.arange(w) // 16)[None, None]),
      'image': jnp.asarray(rng.integers(0, 256, (1, h, w, 3), dtype=np.uint8)),
    }
    step = semanticgan_step.make_semanticgan_step(
      num_classes=config.data.num_classes, vgg=semanticgan_step.build_vgg(config)
    )
    x = label_to_generator_input(batch['label'], batch['instance'], config.data.num_classes)

    def forward_fn(params):
      return state.generator.apply({'params': params}, x)

    g_params = state.g_params
    images_per_step = 1

  jitted = jax.jit(step, donate_argnums=(0,))
  key = jax.random.key(1)
  start = time.perf_counter()
  compiled = jitted.lower(state, batch, key).compile()
  compile_s = time.perf_counter() - start
  step_flops = _flops(compiled)
  memory = compiled.memory_analysis()
  forward = jax.jit(forward_fn)
  forward_compiled = forward.lower(g_params).compile()
  holder = {'state': state}

  def run_step():
    holder['state'], metrics = compiled(holder['state'], batch, key)
    return metrics

  _time(run_step, 1)  # warm-up: first-run allocations
  _time(lambda: forward_compiled(holder['state'].g_params), 1)
  emit(
    {
      'ready': True,
      'compile_s': compile_s,
      'step_gflop': step_flops / 1e9,
      'forward_gflop': _flops(forward_compiled) / 1e9,
      'step_temp_mb': memory.temp_size_in_bytes / 2**20,
      'state_mb': memory.argument_size_in_bytes / 2**20,
      'images_per_step': images_per_step,
      'g_params': sum(p.size for p in jax.tree.leaves(g_params)),
      'jax': jax.__version__,
      'device': jax.devices()[0].device_kind,
    }
  )
  for line in sys.stdin:
    command, _, count = line.strip().partition(' ')
    if command == 'quit':
      break
    if command == 'step':
      emit({'times': _time(run_step, int(count))})
    else:
      emit({'times': _time(lambda: forward_compiled(holder['state'].g_params), int(count))})
  stats = jax.devices()[0].memory_stats() or {}  # None on CPU; GPU/TPU allocators report it
  emit(
    {
      'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      'peak_device_mb': stats.get('peak_bytes_in_use', 0) / 2**20 or None,
    }
  )


def ceiling_worker() -> None:
  """XLA's and NumPy's float32 matmul speed here: the ceiling that GFLOP/s are read against."""
  import jax
  import numpy as np

  n = 2048
  a = jax.random.normal(jax.random.key(0), (n, n))
  matmul = jax.jit(lambda a: a @ a)
  matmul(a).block_until_ready()
  xla = min(_time(lambda: matmul(a), 10))
  b = np.asarray(a)
  numpy_times = []
  for _ in range(10):
    start = time.perf_counter()
    b @ b
    numpy_times.append(time.perf_counter() - start)
  flop = 2 * n**3 / 1e9
  emit({'xla_gflops': flop / xla, 'numpy_gflops': flop / min(numpy_times), 'n': n})


# ----------------------------------------------------------------------------- orchestration


class Worker:
  """A worker subprocess speaking the `@@ {json}` line protocol."""

  def __init__(self, argv: list[str], name: str):
    self.name = name
    self.proc = subprocess.Popen(
      argv,
      stdin=subprocess.PIPE,
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
      cwd=ROOT,
    )
    self.info = self.read()

  def read(self) -> dict:
    for line in self.proc.stdout:
      if line.startswith('@@ '):
        return json.loads(line[3:])
    err = self.proc.stderr.read()
    raise RuntimeError(f'{self.name} worker exited (code {self.proc.wait()}):\n{err[-3000:]}')

  def ask(self, command: str) -> dict:
    self.proc.stdin.write(command + '\n')
    self.proc.stdin.flush()
    return self.read()

  def close(self) -> dict:
    peaks = self.ask('quit')
    self.proc.wait()
    return peaks


def _stats(times: list[float]) -> dict:
  ordered = sorted(times)
  return {
    'median': ordered[len(ordered) // 2],
    'min': ordered[0],
    'max': ordered[-1],
    'n': len(times),
  }


def _check_pix2pixhd(args) -> str:
  checkout = pathlib.Path(os.path.expanduser(args.pix2pixhd))
  if not (checkout / 'models' / 'pix2pixHD_model.py').is_file():
    sys.exit(
      f'--pix2pixhd={args.pix2pixhd}: no models/pix2pixHD_model.py there; expected a checkout '
      'of NVIDIA/pix2pixHD.'
    )
  python = os.path.expanduser(args.torch_python)
  if shutil.which(python) is None and not os.path.exists(python):
    sys.exit(f'--torch-python={args.torch_python} does not exist. {TORCH_HINT}')
  probe = subprocess.run([python, '-c', 'import torch'], capture_output=True, text=True)
  if probe.returncode:
    sys.exit(f'{python} cannot import torch. {TORCH_HINT}')
  return str(checkout)


def run_row(row: dict, args, checkout: str | None) -> dict:
  me = [sys.executable, str(pathlib.Path(__file__).resolve())]
  ours = Worker([*me, '--worker', json.dumps(row)], 'semgan_jax')
  theirs = None
  if checkout and row['kind'] == 'semanticgan' and row['network'] == 'pix2pixhd':
    argv = [os.path.expanduser(args.torch_python), str(ROOT / 'benchmarks' / 'pix2pixhd_worker.py')]
    argv += ['--checkout', checkout, '--height', str(row['height']), '--width', str(row['width'])]
    argv += ['--tiny'] if row['tiny'] else []
    theirs = Worker(argv + (['--gpu'] if args.pix2pixhd_gpu else []), 'pix2pixHD')
  times = {'step': [], 'forward': [], 'p2p_step': [], 'p2p_forward': []}
  for _ in range(args.rounds):  # alternate, so that both sides see the same machine
    times['step'] += ours.ask(f'step {args.steps}')['times']
    if theirs:
      times['p2p_step'] += theirs.ask(f'step {args.steps}')['times']
  for _ in range(args.rounds):
    times['forward'] += ours.ask(f'forward {args.steps}')['times']
    if theirs:
      times['p2p_forward'] += theirs.ask(f'forward {args.steps}')['times']
  result = dict(row, **ours.info, **ours.close())
  result['step_s'], result['forward_s'] = _stats(times['step']), _stats(times['forward'])
  result['images_per_s'] = result['images_per_step'] / result['step_s']['median']
  result['step_gflops'] = result['step_gflop'] / result['step_s']['median']
  result['step_over_forward'] = result['step_s']['median'] / result['forward_s']['median']
  if args.peak_tflops:
    result['mfu'] = result['step_gflops'] / (1e3 * args.peak_tflops)
  if theirs:
    p2p = dict(theirs.info, **theirs.close())
    p2p['step_s'], p2p['forward_s'] = _stats(times['p2p_step']), _stats(times['p2p_forward'])
    p2p['step_over_forward'] = p2p['step_s']['median'] / p2p['forward_s']['median']
    result['pix2pixhd'] = p2p
    result['speedup_step'] = p2p['step_s']['median'] / result['step_s']['median']
    result['speedup_forward'] = p2p['forward_s']['median'] / result['forward_s']['median']
  return result


def _fmt(stats: dict) -> str:
  return f'{stats["median"]:.3f} ({stats["min"]:.3f}-{stats["max"]:.3f})'


def print_table(results: list[dict], ceiling: dict) -> None:
  print(
    f'\nmatmul ceiling (float32 2048²): XLA {ceiling["xla_gflops"]:.0f} GFLOP/s, NumPy '
    f'{ceiling["numpy_gflops"]:.0f} GFLOP/s; median (min-max) seconds\n'
  )
  print(
    '| row | size (W×H) | step s | G forward s | step/fwd | compile s | img/s | GFLOP/step | '
    'GFLOP/s (% of XLA matmul) | peak MB | pix2pixHD step s | pix2pixHD fwd s | p2p step/fwd | '
    'p2p peak MB | speed-up step | speed-up fwd |'
  )
  print('|' + '---|' * 16)
  for r in results:
    name = 'semgan (shapes)' if r['kind'] == 'semgan' else r['network']
    name += ''.join(f' {k}={v}' for k, v in r.get('overrides', {}).items())
    size = f'{r["width"]}×{r["height"]}' if r['kind'] == 'semanticgan' else '64×64, batch 32'
    pct = 100 * r['step_gflops'] / ceiling['xla_gflops']
    cells = [
      name,
      size,
      _fmt(r['step_s']),
      _fmt(r['forward_s']),
      f'{r["step_over_forward"]:.1f}',
      f'{r["compile_s"]:.1f}',
      f'{r["images_per_s"]:.2f}',
      f'{r["step_gflop"]:.0f}',
      f'{r["step_gflops"]:.0f} ({pct:.0f}%)',
      f'{r["peak_rss_mb"]:.0f}',
    ]
    if 'mfu' in r:
      cells[8] += f', MFU {100 * r["mfu"]:.0f}%'
    if r.get('peak_device_mb'):
      cells[9] += f' (device {r["peak_device_mb"]:.0f})'
    p2p = r.get('pix2pixhd')
    if p2p:
      cells += [
        _fmt(p2p['step_s']),
        _fmt(p2p['forward_s']),
        f'{p2p["step_over_forward"]:.1f}',
        f'{p2p["peak_rss_mb"]:.0f}',
        f'{r["speedup_step"]:.2f}×',
        f'{r["speedup_forward"]:.2f}×',
      ]
    else:
      cells += ['—'] * 6
    print('| ' + ' | '.join(cells) + ' |')


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--sizes', default='256x128,512x256', help='W×H list, comma-separated')
  parser.add_argument('--networks', default='pix2pixhd,crb', help=f'from {sorted(NETWORKS)}')
  parser.add_argument('--no-semgan', action='store_true', help='skip the SemGAN row')
  parser.add_argument('--rounds', type=int, default=3, help='alternating rounds per row')
  parser.add_argument('--steps', type=int, default=1, help='steps (and forwards) per round')
  parser.add_argument('--pix2pixhd', default='', help='a NVIDIA/pix2pixHD checkout to time too')
  parser.add_argument('--torch-python', default='python3', help='a Python with PyTorch')
  parser.add_argument(
    '--pix2pixhd-gpu', action='store_true', help='run pix2pixHD on CUDA (its --gpu_ids 0)'
  )
  parser.add_argument('--json', default='runs/benchmarks/semanticgan_step.json')
  parser.add_argument('--tiny', action='store_true', help='tiny networks (tests, smoke checks)')
  parser.add_argument(
    '--peak-tflops',
    type=float,
    default=0.0,
    help='the device peak (e.g. 989 for an H100 SXM dense bf16) to report MFU against',
  )
  parser.add_argument(
    '--set', action='append', default=[], help='config override, e.g. model.conv_lowering=xla'
  )
  parser.add_argument('--worker', help=argparse.SUPPRESS)
  parser.add_argument('--ceiling-worker', action='store_true', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    return jax_worker(json.loads(args.worker))
  if args.ceiling_worker:
    return ceiling_worker()

  networks = [n for n in args.networks.split(',') if n]
  unknown = sorted(set(networks) - set(NETWORKS))
  if unknown:
    sys.exit(f'--networks: unknown {unknown}; expected names from {sorted(NETWORKS)}.')
  sizes = []
  for item in args.sizes.split(','):
    try:
      width, height = (int(v) for v in item.lower().split('x'))
    except ValueError:
      sys.exit(f'--sizes: {item!r} is not W×H (e.g. 256x128).')
    sizes.append((width, height))
  overrides = {}
  for item in args.set:
    key, _, value = item.partition('=')
    try:
      overrides[key] = json.loads(value)
    except ValueError:
      overrides[key] = value
  checkout = _check_pix2pixhd(args) if args.pix2pixhd else None

  me = [sys.executable, str(pathlib.Path(__file__).resolve())]
  ceiling = Worker([*me, '--ceiling-worker'], 'ceiling').info
  rows = [
    {'kind': 'semanticgan', 'network': n, 'width': w, 'height': h, 'tiny': args.tiny,
     'overrides': overrides}
    for w, h in sizes
    for n in networks
  ]  # fmt: skip
  if not args.no_semgan:
    rows.append({'kind': 'semgan', 'tiny': args.tiny})
  results = []
  for row in rows:
    results.append(run_row(row, args, checkout))
    print(f'done: {row}', file=sys.stderr, flush=True)
  print_table(results, ceiling)
  out = pathlib.Path(args.json)
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = out.with_suffix('.tmp')
  tmp.write_text(json.dumps({'ceiling': ceiling, 'rows': results, 'argv': sys.argv[1:]}, indent=1))
  tmp.replace(out)
  print(f'\nwrote {out}')


if __name__ == '__main__':
  main()
