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

import functools
import hashlib
import os
import pathlib
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from semgan_jax.models.vgg import TORCHVISION_INDICES, USED_CONVS, VGG19_CONVS, VGG19Features
from semgan_jax.weights import npz_io, torch_archive

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


def _how_to_get_weights(path: pathlib.Path) -> str:
  """`HOW_TO_GET_WEIGHTS`, with `--out` when `path` is not the default location."""
  return npz_io.how_to_make(HOW_TO_GET_WEIGHTS, path, default_weights_path())


def default_weights_path() -> pathlib.Path:
  """`$XDG_CACHE_HOME/semgan_jax/weights/vgg19.npz` (XDG_CACHE_HOME: ~/.cache)."""
  return npz_io.cache_path('vgg19.npz')


@functools.cache
def expected_shapes() -> dict[str, tuple[int, ...]]:
  """Every parameter of `VGG19Features` under its `/`-joined path, with its shape."""
  image = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
  # eval_shape traces the initialisation without computing it.
  variables = jax.eval_shape(VGG19Features().init, jax.random.key(0), image)
  flat = traverse_util.flatten_dict(variables['params'], sep='/')
  return {key: tuple(value.shape) for key, value in sorted(flat.items())}


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


def check_architecture(shapes: dict[str, tuple[int, ...]], source: str) -> None:
  """Raises a ValueError naming the first key that is missing, extra or of the wrong shape.

  Args:
    shapes: our `/`-joined keys → shapes, as read from a weights file.
    source: the file, for the message.
  """
  npz_io.check_shapes(
    shapes,
    expected_shapes(),
    source=source,
    what='VGG19Features (conv1_1 .. conv5_1)',
    how_to_fix=HOW_TO_GET_WEIGHTS,
  )


def _sha256(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()


def convert(src_pth: str | os.PathLike, out_npz: str | os.PathLike) -> pathlib.Path:
  """Converts torchvision's VGG19 state dict to our `.npz`, atomically.

  Args:
    src_pth: `vgg19-dcbb9e9d.pth` (read without torch; `classifier.*` tensors are ignored).
    out_npz: where to write; parent folders are created. The file appears complete or not at all
      (written to a temporary file in the same folder, then renamed).

  Returns:
    `out_npz` as a Path.

  Raises:
    FileNotFoundError: `src_pth` does not exist.
    torch_archive.TorchArchiveError: `src_pth` is not a readable PyTorch checkpoint.
    torch_archive.UnsafeArchiveError: `src_pth` names a global outside the reader's whitelist.
    ValueError: the checkpoint is not torchvision's VGG19 (names the first wrong key).
  """
  src_pth, out_npz = pathlib.Path(src_pth), pathlib.Path(out_npz)
  tensors = torch_archive.load_tensors(src_pth)
  if not _sha256(src_pth).startswith(PUBLISHED_SHA256_PREFIX):
    warnings.warn(
      f'{src_pth} is not the published {PUBLISHED_FILE} (SHA-256 differs); perceptual losses '
      'computed with it differ from pix2pixHD-style training with torchvision weights.',
      stacklevel=2,
    )
  features = {k: v.shape for k, v in tensors.items() if not k.startswith(_IGNORED_PREFIX)}
  npz_io.check_shapes(
    features,
    expected_source_shapes(),
    source=str(src_pth),
    what="torchvision's VGG19",
    how_to_fix=HOW_TO_GET_WEIGHTS,
  )
  arrays = {}
  for name, _ in USED_CONVS:
    prefix = f'features.{TORCHVISION_INDICES[name]}'
    # torch's OIHW kernels to Flax's HWIO.
    kernel = np.asarray(tensors[f'{prefix}.weight'], np.float32)
    arrays[f'{name}/kernel'] = kernel.transpose(2, 3, 1, 0)
    arrays[f'{name}/bias'] = np.asarray(tensors[f'{prefix}.bias'], np.float32)
  check_architecture({k: v.shape for k, v in arrays.items()}, str(src_pth))

  return npz_io.write_npz_atomically(out_npz, arrays)


def load_params(npz_path: str | os.PathLike) -> dict:
  """Loads and validates converted weights.

  Args:
    npz_path: a `.npz` written by `convert`.

  Returns:
    The `params` pytree of `VGG19Features` (nested dicts of float32 NumPy arrays), to apply as
    `VGG19Features().apply({'params': params}, images)`.

  Raises:
    FileNotFoundError: no file at `npz_path` (the message says how to make one).
    ValueError: not an `.npz`, or an `.npz` of another architecture (names the first wrong key).
  """
  npz_path = pathlib.Path(npz_path)
  return npz_io.load_checked_params(
    npz_path, check_architecture, f'no VGG19 weights at {npz_path}. {_how_to_get_weights(npz_path)}'
  )


def ensure_weights(path: str | os.PathLike | None = None) -> pathlib.Path:
  """The converted weights file; never downloads or converts anything.

  Args:
    path: where the `.npz` is or should be; `default_weights_path()` if None.

  Returns:
    The path of an existing `.npz` (not validated here; `load_params` does that).

  Raises:
    FileNotFoundError: no `.npz` at `path`; the message gives the URL to download from and the
      conversion command.
  """
  return npz_io.existing_file(path, default_weights_path(), 'VGG19', HOW_TO_GET_WEIGHTS)


def main(argv: list[str] | None = None) -> int:
  """`python -m semgan_jax.weights.vgg19`: converts torchvision's VGG19 weights."""
  return npz_io.converter_main(
    argv,
    module='semgan_jax.weights.vgg19',
    description=f'Converts the published torchvision VGG19 weights ({PUBLISHED_FILE}, download it '
    f'from {PUBLISHED_URL}) to the .npz that semgan_jax loads; reads the file without torch.',
    source_file=PUBLISHED_FILE,
    convert=convert,
    default_out=default_weights_path(),
    num_tensors=len(expected_shapes()),
  )


if __name__ == '__main__':
  sys.exit(main())
