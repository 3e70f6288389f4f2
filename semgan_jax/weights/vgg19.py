"""The ImageNet VGG19 weights of the perceptual loss: convert torchvision's file, load and validate.

The published weights are torchvision's `vgg19-dcbb9e9d.pth`, a state dict of `features.<i>`
convolutions (i = 0, 2, 5, ..., 34; `weight` (out, in, 3, 3) and `bias`) and `classifier.*`
linear layers. semgan_jax never downloads it: the user fetches it from `PUBLISHED_URL` and runs the
converter, which reads it without torch and without open unpickling (`torch_archive`). The file
dates from 2017 and is in torch's legacy (pre-1.6) serialisation; a zip re-save of the same state
dict converts too.

The converted `.npz` holds the 13 convolutions `VGG19Features` uses (conv1_1 .. conv5_1, the
perceptual loss stops at relu5_1) as float32 `<conv>/kernel` (3, 3, in, out) and `<conv>/bias`.
The source must still hold all 16 convolutions of VGG19 with the right shapes, so a VGG16 or a
batch-norm VGG is refused; conv5_2..conv5_4 and the classifier are dropped. The `.npz` is loaded
with `allow_pickle=False`.

  curl -LO https://download.pytorch.org/models/vgg19-dcbb9e9d.pth
  python -m semgan_jax.weights.vgg19 --src vgg19-dcbb9e9d.pth [--out NPZ]
"""

import pathlib
import sys

import jax.numpy as jnp
import numpy as np

from semgan_jax.models.vgg import TORCHVISION_INDICES, USED_CONVS, VGG19_CONVS, VGG19Features
from semgan_jax.weights import npz_io, published

PUBLISHED_URL = 'https://download.pytorch.org/models/vgg19-dcbb9e9d.pth'
PUBLISHED_FILE = 'vgg19-dcbb9e9d.pth'
# torchvision names each weights file after the first 8 hex digits of its SHA-256 (torch.hub checks
# them on download); a file whose digest differs is not the published one.
PUBLISHED_SHA256_PREFIX = 'dcbb9e9d'
# Source keys outside `features.` with this prefix (the fully connected layers) are not needed.
_IGNORED_PREFIX = 'classifier.'

HOW_TO_GET_WEIGHTS = (
  'Download the published torchvision ImageNet VGG19 weights yourself (semgan_jax never downloads '
  'anything) and convert them; the converter reads the file without torch:\n'
  f'  curl -LO {PUBLISHED_URL}\n'
  f'  python -m semgan_jax.weights.vgg19 --src {PUBLISHED_FILE}'
)


def expected_source_shapes() -> dict[str, tuple[int, ...]]:
  """The `features.*` tensors of torchvision's VGG19 state dict (all 16 convolutions), shapes."""
  shapes = {}
  in_channels = 3
  for name, channels in VGG19_CONVS:
    prefix = f'features.{TORCHVISION_INDICES[name]}'
    shapes[f'{prefix}.weight'] = (channels, in_channels, 3, 3)
    shapes[f'{prefix}.bias'] = (channels,)
    in_channels = channels
  return shapes


def _to_arrays(tensors: dict[str, np.ndarray], src: pathlib.Path) -> dict[str, np.ndarray]:
  """torchvision's state dict (all 16 convolutions checked) → the 13 convolutions we use, HWIO."""
  features = {k: v.shape for k, v in tensors.items() if not k.startswith(_IGNORED_PREFIX)}
  npz_io.check_shapes(
    features,
    expected_source_shapes(),
    source=str(src),
    what="torchvision's VGG19",
    how_to_fix=HOW_TO_GET_WEIGHTS,
  )
  arrays = {}
  for name, _ in USED_CONVS:
    prefix = f'features.{TORCHVISION_INDICES[name]}'
    kernel = np.asarray(tensors[f'{prefix}.weight'], np.float32)
    arrays[f'{name}/kernel'] = kernel.transpose(2, 3, 1, 0)  # torch's OIHW to Flax's HWIO.
    arrays[f'{name}/bias'] = np.asarray(tensors[f'{prefix}.bias'], np.float32)
  return arrays


WEIGHTS = published.WeightFile(
  name='VGG19',
  module='semgan_jax.weights.vgg19',
  cache_name='vgg19.npz',
  published_file=PUBLISHED_FILE,
  description=f'Converts the published torchvision VGG19 weights ({PUBLISHED_FILE}, download it '
  f'from {PUBLISHED_URL}) to the .npz that semgan_jax loads; reads the file without torch.',
  how_to_get=HOW_TO_GET_WEIGHTS,
  architecture='VGG19Features (conv1_1 .. conv5_1)',
  expected_shapes=published.cached_shapes(
    lambda key: VGG19Features().init(key, jnp.zeros((1, 32, 32, 3))), params_only=True
  ),
  to_arrays=_to_arrays,
  digest=('sha256', PUBLISHED_SHA256_PREFIX),
  digest_consequence='perceptual losses computed with it differ from pix2pixHD-style training '
  'with torchvision weights.',
)
# The module's interface (`load_params` returns the `params` of `VGG19Features`).
expected_shapes = WEIGHTS.expected_shapes
check_architecture = WEIGHTS.check_architecture
default_weights_path = WEIGHTS.default_path
convert = WEIGHTS.convert
load_params = WEIGHTS.load
ensure_weights = WEIGHTS.ensure
main = WEIGHTS.main

if __name__ == '__main__':
  sys.exit(main())
