"""Per-layer convolution lowerings on this machine: forward + both gradients, XLA/im2col/kn2row.

Usage:
  python benchmarks/conv_lowering.py                      # the pix2pixHD network's layers, 256×128
  python benchmarks/conv_lowering.py --width=512 --height=256 --batch=1

Every convolution shape of SemanticGAN's generator (resnet trunk, 4 downsamplings, 64 features),
its two PatchGAN scales and VGG19 up to relu5_1 is timed as `jax.grad`, with respect to input
and kernel, of a weighted sum of the squared output (quadratic, so that the forward pass counts
too), in each lowering of `semgan_jax.models.conv.conv2d`; 'auto' names the one
`choose_lowering` picks. The largest relative error of the gradients against XLA's is printed
too. kn2row is skipped where its product would not fit (many taps on a large map).
"""

import argparse
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from semgan_jax.models import conv as conv_lib  # noqa: E402

KN2ROW_MAX_BYTES = 4 << 30  # its backward may hold one padded copy of the product per tap


def network_layers(height: int, width: int, label_channels: int = 36):
  """(name, input H, input W, Cin, Cout, k, stride, padding pairs) of the step's convolutions."""
  layers = [('G stem 7x7', height + 6, width + 6, label_channels, 64, 7, 1, 0)]
  h, w, c = height, width, 64
  for i in range(4):
    layers.append((f'G down{i + 1}', h, w, c, 2 * c, 3, 2, 1))
    h, w, c = h // 2, w // 2, c * 2
  layers.append(('G trunk 3x3', h + 2, w + 2, c, c, 3, 1, 0))
  for i in range(4):  # the phase-split transposed convolution's largest (2×2) sub-kernel
    layers.append((f'G up{i} 2x2', h, w, c, c // 2, 2, 1, ((0, 1), (0, 1))))
    h, w, c = h * 2, w * 2, c // 2
  layers.append(('G head 7x7', h + 6, w + 6, 64, 3, 7, 1, 0))
  for scale in range(2):
    h, w = (height, width) if scale == 0 else ((height + 1) // 2, (width + 1) // 2)
    widths = [(label_channels + 3, 64, 2), (64, 128, 2), (128, 256, 2), (256, 512, 1), (512, 1, 1)]
    for i, (cin, cout, s) in enumerate(widths):
      layers.append((f'D{scale} conv{i}', h, w, cin, cout, 4, s, 2))
      h, w = (h + 4 - 4) // s + 1, (w + 4 - 4) // s + 1
  for i, (div, c) in enumerate([(1, 64), (2, 128), (4, 256), (8, 512), (16, 512)]):
    layers.append((f'VGG block{i + 1}', height // div, width // div, c, c, 3, 1, 1))
  return [
    (*layer[:-1], conv_lib._padding_pairs(layer[-1], layer[5:6] * 2, (layer[6],) * 2, None))
    for layer in layers
  ]


def time_fn(fn, *args, repeats: int) -> tuple[float, object]:
  """(median milliseconds of `repeats` calls after a warm-up, the output)."""
  fn = jax.jit(fn)
  out = jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return float(np.median(times)) * 1e3, out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--height', type=int, default=128)
  parser.add_argument('--width', type=int, default=256)
  parser.add_argument('--batch', type=int, default=1)
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument(
    '--forward', action='store_true', help='time the forward pass only (inference, frozen nets)'
  )
  parser.add_argument('--only', default='', help='layers whose name starts with this')
  args = parser.parse_args()
  lowerings = ('xla', 'im2col', 'kn2row')
  print(
    f'{jax.devices()[0].device_kind}, {jax.device_count()} device(s), jax {jax.__version__}, '
    f'batch {args.batch}: fwd + d/dx + d/dkernel, median ms'
  )
  print(f'| layer | input | Cin→Cout | k | s | {" | ".join(lowerings)} | auto | max rel. err |')
  print('|---|---|---|---|---|' + '---|' * (len(lowerings) + 2))
  totals = dict.fromkeys((*lowerings, 'auto'), 0.0)
  for name, h, w, cin, cout, k, s, pads in network_layers(args.height, args.width):
    if not name.startswith(args.only):
      continue
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (args.batch, h, w, cin))
    kernel = 0.02 * jax.random.normal(keys[1], (k, k, cin, cout))
    y = conv_lib.conv2d(x, kernel, (s, s), pads, 'xla')
    weights = jax.random.normal(keys[2], y.shape)
    row, grads = {}, {}
    for lowering in lowerings:
      if lowering == 'kn2row' and 4 * (x.size // cin) * k**4 * cout > KN2ROW_MAX_BYTES:
        continue

      def loss(x, kernel, low=lowering, s=s, pads=pads, weights=weights):
        # Quadratic, so that the gradient needs the forward pass (a linear loss would let XLA
        # drop it).
        return 0.5 * jnp.sum(jnp.square(conv_lib.conv2d(x, kernel, (s, s), pads, low)) * weights)

      def forward(x, kernel, low=lowering, s=s, pads=pads):
        return conv_lib.conv2d(x, kernel, (s, s), pads, low)

      fn = forward if args.forward else jax.grad(loss, (0, 1))
      row[lowering], grads[lowering] = time_fn(fn, x, kernel, repeats=args.repeats)
    auto = conv_lib.choose_lowering(x.shape, kernel.shape, (s, s), pads, 'cpu')
    err = max(
      float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))
      for low in grads
      for a, b in zip(*(jax.tree.leaves(grads[n]) for n in (low, 'xla')), strict=True)
    )
    for low in lowerings:
      totals[low] += row.get(low, np.nan)
    totals['auto'] += row[auto]
    cells = ' | '.join(f'{row[low]:.1f}' if low in row else '—' for low in lowerings)
    print(
      f'| {name} | {h}×{w} | {cin}→{cout} | {k} | {s} | {cells} | {auto} | {err:.0e} |', flush=True
    )
  cells = ' | '.join(f'{totals[low]:.1f}' for low in lowerings)
  print(f'| **total** | | | | | {cells} | {totals["auto"]:.1f} | |')


if __name__ == '__main__':
  main()
