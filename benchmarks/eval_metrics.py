"""Evaluation throughput and streaming memory: prints images/s per metric and peak RSS vs images.

Usage:
  python benchmarks/eval_metrics.py                   # both tables, 64x64 and 256x256
  python benchmarks/eval_metrics.py --sizes=64 --skip_memory
  python benchmarks/eval_metrics.py --memory_images=64 --memory_factor=10

Throughput: every metric's jitted per-batch pass (what the evaluator runs for each batch) is
compiled once, not timed, then timed over `--iters` batches of random uint8 images on all devices
of this process. FID uses the converted Inception weights if they are installed (see
semgan_jax.weights.fid_inception), else random weights of the same shapes (same cost).

Memory: each (metric, image count) streams random batches through that metric's accumulator in a
fresh process and reports the process's peak resident memory (VmHWM) and the bytes the
accumulator holds. FID, MS-SSIM, class histograms and mIoU keep fixed-size statistics; SWD keeps
every descriptor (the algorithm normalizes and sorts over the whole set), so it grows linearly.
"""

import argparse
import json
import pathlib
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from semgan_jax import parallel  # noqa: E402
from semgan_jax.evaluation import inception_features as inception_lib  # noqa: E402
from semgan_jax.evaluation import ms_ssim, segmentation, semantic, statistics, swd  # noqa: E402
from semgan_jax.models.inception import FIDInceptionV3  # noqa: E402

PALETTE = np.array([[0, 0, 0], [0, 0, 255], [0, 255, 0], [255, 0, 0]], np.uint8)
NUM_SEG_CLASSES = 19


def inception_params() -> tuple[dict, str]:
  """The converted FID weights if present, else random weights of the same architecture."""
  from semgan_jax.weights import fid_inception

  path = fid_inception.default_weights_path()
  if path.is_file():
    return fid_inception.load_params(path), 'published'
  variables = jax.jit(FIDInceptionV3().init)(jax.random.key(0), jnp.zeros((1, 299, 299, 3)))
  return variables['params'], 'random'


def metric_passes(size: int, feature_params) -> dict:
  """name → (jitted fn(images, labels, params), description) of one batch's work."""
  variant = 'standard' if size >= ms_ssim.STANDARD_MIN_SIDE else 'progan'
  key = jax.random.key(0)

  def swd_pass(images, labels, params):
    return swd.descriptors(images, key)

  def ms_ssim_pass(images, labels, params):
    return ms_ssim.ms_ssim(images[0::2], images[1::2], variant=variant, max_val=255.0)

  def fid_pass(images, labels, params):
    features = inception_lib.inception_features(params, images)
    return statistics.batch_moments(features)

  def label_map_pass(images, labels, params):
    counts = semantic.class_counts(semantic.nearest_palette_labels(images, PALETTE), 4)
    return counts, semantic.off_palette_count(images, PALETTE)

  def miou_pass(images, labels, params):
    # A stand-in segmenter's argmax (the mean channel binned): the confusion matrix is the work.
    predictions = (images.astype(jnp.int32).sum(-1) * NUM_SEG_CLASSES) // (3 * 256)
    return segmentation.confusion_matrix(labels, predictions, NUM_SEG_CLASSES, 255)

  return {
    'swd descriptors': (swd_pass, f'{len(swd.level_resolutions(size, size))} levels'),
    'ms-ssim': (ms_ssim_pass, f'{variant} variant, pairs'),
    'fid features': (fid_pass, 'Inception 299 + moments'),
    'class freq + off-palette': (label_map_pass, '4 classes'),
    'miou confusion': (miou_pass, f'{NUM_SEG_CLASSES} classes (segmenter excluded)'),
  }


def throughput(sizes, batch_size: int, iters: int, swd_images: int) -> list[tuple]:
  mesh = parallel.create_mesh()
  sharded, replicated = parallel.batch_sharded(mesh), parallel.replicated(mesh)
  params, origin = inception_params()
  params = jax.device_put(params, replicated)
  rng = np.random.default_rng(0)
  rows = []
  for size in sizes:
    images = jax.device_put(
      rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8), sharded
    )
    labels = jax.device_put(
      rng.integers(0, NUM_SEG_CLASSES, (batch_size, size, size), dtype=np.int32), sharded
    )
    for name, (fn, what) in metric_passes(size, params).items():
      compiled = jax.jit(fn)
      start = time.perf_counter()
      jax.block_until_ready(compiled(images, labels, params))
      compile_s = time.perf_counter() - start
      times = []
      for _ in range(iters):
        start = time.perf_counter()
        jax.block_until_ready(compiled(images, labels, params))
        times.append(time.perf_counter() - start)
      rate = batch_size / float(np.median(times))
      if name == 'fid features':
        what += f' ({origin} weights)'
      rows.append((f'{size}x{size}', name, what, rate, compile_s))
      print(f'  {size}x{size} {name}: {rate:.1f} images/s', file=sys.stderr, flush=True)
  # Finalization, once per evaluation: SWD's projections and sorts of every descriptor (for
  # `swd_images` images at the first size), and the Fréchet distance of 2048-d statistics.
  size = sizes[0]
  levels = len(swd.level_resolutions(size, size))
  real = [rng.normal(size=(swd_images * 128, 147)).astype(np.float32) for _ in range(levels)]
  fake = [rng.normal(size=(swd_images * 128, 147)).astype(np.float32) for _ in range(levels)]
  start = time.perf_counter()
  swd.sliced_wasserstein_distances(
    real, fake, swd.level_resolutions(size, size), key=jax.random.key(0)
  )
  seconds = time.perf_counter() - start
  rows.append(
    (f'{size}x{size}', 'swd distance', f'{swd_images} vs {swd_images} images', None, seconds)
  )
  a = rng.normal(size=(4096, 2048)) @ (rng.normal(size=(2048, 2048)) / 45)
  mu, sigma = a.mean(0), np.cov(a, rowvar=False)
  start = time.perf_counter()
  statistics.frechet_distance(mu, sigma, mu + 0.1, sigma * 1.1)
  rows.append(('2048-d', 'frechet distance (host)', 'one call', None, time.perf_counter() - start))
  return rows


def peak_rss_mib() -> float:
  for line in pathlib.Path('/proc/self/status').read_text().splitlines():
    if line.startswith('VmHWM:'):
      return int(line.split()[1]) / 1024
  return float('nan')


def memory_child(metric: str, num_images: int, size: int, batch_size: int) -> dict:
  """Streams `num_images` random images through one accumulator; returns RSS and state bytes."""
  rng = np.random.default_rng(1)
  mesh = parallel.create_mesh()
  sharded = parallel.batch_sharded(mesh)
  if metric == 'fid':
    params, _ = inception_params()
    params = jax.device_put(params, parallel.replicated(mesh))
    step = jax.jit(lambda x, p: statistics.batch_moments(inception_lib.inception_features(p, x)))
    acc = statistics.GaussianStats(2048)
  elif metric == 'swd':
    step = jax.jit(lambda x, p: swd.descriptors(x, jax.random.key(0)))
    acc = swd.SWDAccumulator()
  elif metric == 'ms-ssim':
    step = jax.jit(lambda x, p: jnp.sum(ms_ssim.ms_ssim(x[0::2], x[1::2], variant='progan')))
    acc = [0.0]
  elif metric == 'miou':
    step = jax.jit(
      lambda x, p: segmentation.confusion_matrix(
        x[..., 0].astype(jnp.int32) % NUM_SEG_CLASSES, x[..., 1] % NUM_SEG_CLASSES, 19, None
      )
    )
    acc = [jnp.zeros((NUM_SEG_CLASSES, NUM_SEG_CLASSES), jnp.int32)]
  else:
    raise ValueError(metric)
  params = params if metric == 'fid' else None
  for _ in range(num_images // batch_size):
    x = jax.device_put(rng.integers(0, 256, (batch_size, size, size, 3), dtype=np.uint8), sharded)
    out = step(x, params)
    if metric == 'fid':
      moments = jax.device_get(out)
      acc.add_moments(moments['count'], moments['mean'], moments['scatter'])
      held = acc._scatter.nbytes + acc._mean.nbytes
    elif metric == 'swd':
      acc.add(out)
      held = acc.nbytes
    elif metric == 'ms-ssim':
      acc[0] += float(out)
      held = 8
    else:
      acc[0] = acc[0] + out
      held = acc[0].nbytes
  return {'peak_rss_mib': peak_rss_mib(), 'held_bytes': held}


def memory(sizes, base: int, factor: int, batch_size: int) -> list[tuple]:
  rows = []
  for metric in ('fid', 'swd', 'ms-ssim', 'miou'):
    size = sizes[0]
    counts = (base, base * factor)
    results = []
    for n in counts:
      command = [
        sys.executable,
        __file__,
        f'--_memory_child={metric},{n},{size},{batch_size}',
      ]
      out = subprocess.run(command, capture_output=True, text=True, check=False)
      if out.returncode:
        raise RuntimeError(f'memory run {metric} {n} failed:\n{out.stderr[-2000:]}')
      results.append(json.loads(out.stdout.strip().splitlines()[-1]))
      print(f'  memory {metric} {n}: {results[-1]}', file=sys.stderr, flush=True)
    rows.append((metric, f'{size}x{size}', counts, results))
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--sizes', default='64,256', help='image sides, comma-separated')
  parser.add_argument('--batch_size', type=int, default=32)
  parser.add_argument('--iters', type=int, default=3)
  parser.add_argument('--memory_images', type=int, default=64, help='the smaller image count')
  parser.add_argument('--memory_factor', type=int, default=10)
  parser.add_argument('--skip_memory', action='store_true')
  parser.add_argument('--swd_images', type=int, default=1024, help='for the SWD distance row')
  parser.add_argument('--_memory_child', default='', help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args._memory_child:
    metric, n, size, batch = args._memory_child.split(',')
    print(json.dumps(memory_child(metric, int(n), int(size), int(batch))))
    return
  sizes = [int(s) for s in args.sizes.split(',')]
  print(f'# {jax.device_count()} x {jax.devices()[0].device_kind}, batch {args.batch_size}')
  print()
  print('| images | metric | what | images/s | compile s (or seconds for a one-off) |')
  print('|---|---|---|---|---|')
  for size, name, what, rate, compile_s in throughput(
    sizes, args.batch_size, args.iters, args.swd_images
  ):
    rate_text = f'{rate:.1f}' if rate is not None else '-'
    print(f'| {size} | {name} | {what} | {rate_text} | {compile_s:.2f} |')
  if args.skip_memory:
    return
  print()
  print('| metric | images | count | peak RSS MiB | accumulator bytes |')
  print('|---|---|---|---|---|')
  for metric, size, counts, results in memory(
    sizes, args.memory_images, args.memory_factor, args.batch_size
  ):
    for n, r in zip(counts, results, strict=True):
      print(f'| {metric} | {size} | {n} | {r["peak_rss_mib"]:.0f} | {r["held_bytes"]:,} |')


if __name__ == '__main__':
  main()
