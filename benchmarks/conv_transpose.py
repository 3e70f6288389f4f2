"""Forward-and-backward time of stride-2 transposed convolutions: `lax.conv_transpose` against the
phase-split `semgan_jax.models.layers.conv_transpose` the generators use. Prints a table.

Usage:
  python benchmarks/conv_transpose.py                 # SemGAN's quick-variant layers, ks 4 and 6
  python benchmarks/conv_transpose.py --kernel 4 --kernel 11 --batch 16

Each row times `jax.grad` with respect to both the input and the kernel (what a train step runs),
the median of `--steps` calls after one compiling call.
"""

import argparse
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from semgan_jax.models.layers import conv_transpose  # noqa: E402

# (input size, in channels, out channels) of the quick SemGAN generator's four upsamplings.
QUICK_LAYERS = ((4, 128, 64), (8, 64, 32), (16, 32, 16), (32, 16, 4))


def time_grad(fn, kernel, x, steps: int) -> float:
  """Median seconds of d(sum(fn(x, kernel)^2))/d(kernel, x)."""
  grad = jax.jit(jax.grad(lambda k, inputs: jnp.sum(jnp.square(fn(inputs, k))), argnums=(0, 1)))
  jax.block_until_ready(grad(kernel, x))
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(grad(kernel, x))
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--kernel', type=int, action='append', help='kernel sizes (default 4, 6)')
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--steps', type=int, default=10)
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  print(f'# {jax.device_count()} x {jax.devices()[0].device_kind}, batch {args.batch}, stride 2')
  print('| input | channels | kernel | lax.conv_transpose ms | phase-split ms | speed-up |')
  print('|---|---|---|---|---|---|')
  for kernel_size in args.kernel or (4, 6):
    for size, cin, cout in QUICK_LAYERS:
      x = jnp.asarray(rng.normal(size=(args.batch, size, size, cin)), jnp.float32)
      kernel = jnp.asarray(rng.normal(size=(kernel_size, kernel_size, cin, cout)) * 0.02)
      ref = time_grad(lambda i, k: lax.conv_transpose(i, k, (2, 2), 'SAME'), kernel, x, args.steps)
      new = time_grad(lambda i, k: conv_transpose(i, k, (2, 2), 'SAME'), kernel, x, args.steps)
      print(
        f'| {size}x{size} | {cin}->{cout} | {kernel_size} | {ref * 1e3:.1f} | {new * 1e3:.1f} | '
        f'{ref / new:.1f}x |',
        flush=True,
      )


if __name__ == '__main__':
  main()
