"""Where the streets SemanticGAN's speckle is: the spectrum of its photos against the real ones.

  python experiments/speckle.py runs/streets [runs/other ...] [--step=N] [--per-class]

For each SemanticGAN workdir (its config.json and a checkpoint), translates every validation
pair and prints, next to the L1 to the real photo, the power of the generated photos relative to
the real ones in frequency bands (radial, in cycles per pixel, of the grey image's 2-D FFT):
`low` below 1/8, `mid` 1/8 to 1/4, `high` 1/4 to 1/2, and `nyq`, the rows and columns at exactly
1/2 cycle per pixel, where a stride-2 transposed convolution's checkerboard puts its energy; and
`chroma_mid`, `chroma_high`, the same bands of the two colour-opponent channels (R − G and
R + G − 2B, summed), where colour noise shows: the real photos' fine detail is nearly grey. A
ratio of 1 is the real photos' power; speckle shows as high and nyq ratios well above 1.

`--per-class` adds, for each workdir, where the colour noise is: per class of the label map, the
mean colour-opponent power of the photos' 3×3 high-pass residual (generated and real), their
ratio and the class's share of the generated photos' total.
"""

import argparse
import json
import pathlib
import sys

import jax
import ml_collections
import numpy as np
from scipy import ndimage

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from semgan_jax import images, parallel  # noqa: E402
from semgan_jax.tasks import get_task  # noqa: E402
from semgan_jax.train import runner  # noqa: E402
from semgan_jax.train.semanticgan_step import translate  # noqa: E402

BANDS = ('low', 'mid', 'high', 'nyq', 'chroma_mid', 'chroma_high')


def _band_means(planes: np.ndarray) -> dict[str, float]:
  """Mean power per frequency band of (N, H, W) planes, their means removed."""
  planes = planes - planes.mean(axis=(1, 2), keepdims=True)
  power = (np.abs(np.fft.fft2(planes)) ** 2).mean(axis=0)
  h, w = power.shape
  fy, fx = np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing='ij')
  radius = np.hypot(fy, fx)
  masks = {
    'low': (radius > 0) & (radius < 1 / 8),
    'mid': (radius >= 1 / 8) & (radius < 1 / 4),
    'high': radius >= 1 / 4,
    'nyq': (np.abs(fy) == 0.5) | (np.abs(fx) == 0.5),
  }
  return {name: float(power[mask].mean()) for name, mask in masks.items()}


def band_power(photos: np.ndarray) -> dict[str, float]:
  """Mean power per band (BANDS) of (N, H, W, 3) uint8 photos: grey, and colour-opponent."""
  rgb = photos.astype(np.float64) / 255.0
  r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
  powers = _band_means(rgb.mean(axis=-1))
  red_green = _band_means((r - g) / np.sqrt(2))
  yellow_blue = _band_means((r + g - 2 * b) / np.sqrt(6))
  for band in ('mid', 'high'):
    powers[f'chroma_{band}'] = red_green[band] + yellow_blue[band]
  return powers


def class_chroma(generated, real, labels, class_names) -> list[tuple[str, float, float, float]]:
  """Colour noise per class: (name, pixel fraction, generated power / real power, share).

  The power is that of the two colour-opponent channels' 3×3 high-pass residual (the channel
  minus its 3×3 mean), per pixel of the class, in the generated and the real photos.
  """

  def residual_power(photos):
    rgb = photos.astype(np.float64) / 255.0
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    power = 0.0
    for plane in ((r - g) / np.sqrt(2), (r + g - 2 * b) / np.sqrt(6)):
      power = power + (plane - ndimage.uniform_filter(plane, (1, 3, 3), mode='reflect')) ** 2
    return power

  gen, ref = residual_power(generated), residual_power(real)
  rows = []
  for label in np.unique(labels):
    mask = labels == label
    share = gen[mask].sum() / gen.sum()
    rows.append((class_names[label], mask.mean(), gen[mask].mean() / ref[mask].mean(), share))
  return rows


def translate_validation(workdir: str, step: int | None) -> tuple[np.ndarray, ...]:
  """(generated, real) uint8 photos and (N, H, W) label maps of the whole validation split, and
  the data set's class names."""
  config = ml_collections.ConfigDict(
    json.loads((pathlib.Path(workdir) / 'config.json').read_text())
  )
  task = get_task(config)
  run = runner.open_run(task, config, workdir, mode='sample')
  state = runner._restore(run, step)
  source = run.data.load_split('validation')
  batch = config.data.batch_size
  fn = jax.jit(lambda s, label, inst: translate(s, label, inst, config.data.num_classes))
  generated, real, labels_all = [], [], []
  for start in range(0, len(source) - len(source) % batch, batch):
    examples = [source[i] for i in range(start, start + batch)]
    labels = np.stack([e['label'] for e in examples]).astype(np.int32)
    instances = np.stack([e['instance'] for e in examples]).astype(np.int32)
    out = fn(
      state,
      parallel.make_global_batch(labels, run.mesh),
      parallel.make_global_batch(instances, run.mesh),
    )
    generated.append(np.asarray(images.signed_to_uint8(jax.device_get(out))))
    real.append(np.stack([e['image'] for e in examples]))
    labels_all.append(labels)
  stacked = (np.concatenate(x) for x in (generated, real, labels_all))
  return (*stacked, run.spec.class_names)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('workdirs', nargs='+')
  parser.add_argument('--step', type=int, default=0, help='checkpoint (0: the newest)')
  parser.add_argument('--per-class', action='store_true', help='colour noise per class, too')
  args = parser.parse_args(argv)
  per_class = {}
  print(f'| workdir | step | L1 | {" | ".join(f"{b} ratio" for b in BANDS)} |')
  print('|---|---|---|' + '---|' * len(BANDS))
  for workdir in args.workdirs:
    generated, real, labels, names = translate_validation(workdir, args.step or None)
    if args.per_class:
      per_class[workdir] = class_chroma(generated, real, labels, names)
    gen, ref = band_power(generated), band_power(real)
    l1 = np.abs(generated.astype(np.float64) - real).mean() / 127.5
    steps = (pathlib.Path(workdir) / 'checkpoints').iterdir()
    step = max(int(p.name) for p in steps if p.name.isdigit())
    ratios = ' | '.join(f'{gen[b] / ref[b]:.2f}' for b in BANDS)
    print(f'| {workdir} | {args.step or step} | {l1:.3f} | {ratios} |')
  for workdir, rows in per_class.items():
    print(f'\nColour noise per class, {workdir}:\n')
    print('| class | pixels | generated / real | share of the generated |')
    print('|---|---|---|---|')
    for name, fraction, ratio, share in rows:
      print(f'| {name} | {fraction:.3f} | {ratio:.2f} | {share:.2f} |')


if __name__ == '__main__':
  main()
