"""SIPL's Cityscapes ERFNet weights: convert erfnet_pytorch's published file, load and validate.

The published weights are erfnet_pytorch's `trained_models/erfnet_pretrained.pth` (Romera et al.;
licensed CC BY-NC 4.0), a state dict saved from `nn.DataParallel`: keys such as
`module.encoder.layers.0.conv3x1_1.weight`, `module.decoder.output_conv.weight`, BatchNorm
`weight`, `bias`, `running_mean`, `running_var` (and `num_batches_tracked` from torch 0.4 on).
semgan_jax never downloads it: the user fetches it and runs the converter, which reads it without
torch and without open unpickling (`torch_archive`), in the legacy or the zip format of torch.save,
with or without the `module.` prefix.

The converted `.npz` holds the variables of `ERFNet()` (20 classes) as float32 arrays under
`/`-joined paths: `params/...` (`kernel`, `bias`, BatchNorm `scale`) and `batch_stats/...` (`mean`,
`var`); a segmenter run may export a narrower `ERFNet(width=w)`, which loads the same way
(`erfnet.width_of(variables)` gives w back). Convolution kernels go from torch's OIHW to HWIO; the
transposed convolutions' kernels from torch's (in, out, kh, kw) to HWIO flipped spatially, which
`ERFNet`'s paddings expect (see `semgan_jax.models.erfnet`). The encoder's `output_conv` (only used
by erfnet_pytorch to train the encoder alone) and the step counters are dropped. The `.npz` is
loaded with `allow_pickle=False`.

  curl -LO https://github.com/Eromera/erfnet_pytorch/raw/master/trained_models/erfnet_pretrained.pth
  python -m semgan_jax.weights.erfnet --src erfnet_pretrained.pth [--out NPZ]
"""

import functools
import pathlib
import re
import sys

import jax.numpy as jnp
import numpy as np

from semgan_jax.models.erfnet import BASE_FEATURES, SIZE_DIVISOR, ERFNet
from semgan_jax.weights import npz_io, published

PUBLISHED_URL = (
  'https://github.com/Eromera/erfnet_pytorch/tree/master/trained_models/erfnet_pretrained.pth'
)
PUBLISHED_RAW_URL = (
  'https://github.com/Eromera/erfnet_pytorch/raw/master/trained_models/erfnet_pretrained.pth'
)
PUBLISHED_FILE = 'erfnet_pretrained.pth'
# nn.DataParallel saves every key under this prefix; a plain model's state dict has none.
_DATA_PARALLEL_PREFIX = 'module.'
# (collection, Flax leaf) → torch state-dict leaf; `weight` is a conv kernel or a BatchNorm scale.
_SOURCE_LEAVES = {
  ('params', 'kernel'): 'weight',
  ('params', 'scale'): 'weight',
  ('params', 'bias'): 'bias',
  ('batch_stats', 'mean'): 'running_mean',
  ('batch_stats', 'var'): 'running_var',
}

HOW_TO_GET_WEIGHTS = (
  "Download erfnet_pytorch's published Cityscapes ERFNet weights yourself (semgan_jax never "
  f'downloads anything; they are licensed CC BY-NC 4.0) from\n  {PUBLISHED_URL}\n'
  'and convert them; the converter reads the file without torch:\n'
  f'  curl -LO {PUBLISHED_RAW_URL}\n'
  f'  python -m semgan_jax.weights.erfnet --src {PUBLISHED_FILE}'
)


def source_name(key: str) -> str:
  """erfnet_pytorch's state-dict name of one of our keys, without the `module.` prefix.

  E.g. `params/encoder/layers_3/bn1/scale` → `encoder.layers.3.bn1.weight`.
  """
  collection, *modules, leaf = key.split('/')
  modules = [re.sub(r'^layers_(\d+)$', r'layers.\1', module) for module in modules]
  return '.'.join([*modules, _SOURCE_LEAVES[collection, leaf]])


def _is_transposed_conv_kernel(key: str) -> bool:
  """Whether `key` is a `ConvTranspose2d` kernel: the decoder's upsampler `conv`s, `output_conv`."""
  return key.startswith('params/decoder/') and key.endswith(('/conv/kernel', '/output_conv/kernel'))


def _to_flax(key: str, tensor: np.ndarray) -> np.ndarray:
  """A source tensor in our layout, float32."""
  array = np.asarray(tensor, np.float32)
  if _is_transposed_conv_kernel(key):
    # (in, out, kh, kw), flipped spatially: torch's ConvTranspose2d as lax.conv_transpose.
    return np.ascontiguousarray(array[:, :, ::-1, ::-1].transpose(2, 3, 0, 1))
  if key.endswith('/kernel'):
    return array.transpose(2, 3, 1, 0)  # OIHW → HWIO
  return array


def expected_source_shapes() -> dict[str, tuple[int, ...]]:
  """The tensors of erfnet_pytorch's 20-class state dict that `ERFNet` uses, with their shapes."""
  shapes = {}
  for key, shape in expected_shapes().items():
    if key.endswith('/kernel'):
      height, width, cin, cout = shape
      transposed = _is_transposed_conv_kernel(key)
      shape = (cin, cout, height, width) if transposed else (cout, cin, height, width)
    shapes[source_name(key)] = shape
  return shapes


def _is_unused_source_tensor(name: str) -> bool:
  """BatchNorm step counters and the encoder-only classifier, which the full network never uses."""
  return name.endswith('.num_batches_tracked') or name.startswith('encoder.output_conv.')


def _to_arrays(tensors: dict[str, np.ndarray], src: pathlib.Path) -> dict[str, np.ndarray]:
  """erfnet_pytorch's state dict (with or without `module.`) → `ERFNet()`'s variables."""
  used = {}
  for name, tensor in tensors.items():
    name = name.removeprefix(_DATA_PARALLEL_PREFIX)
    if name in used:
      raise ValueError(f'{src} holds {name} both with and without {_DATA_PARALLEL_PREFIX!r}.')
    if not _is_unused_source_tensor(name):
      used[name] = tensor
  npz_io.check_shapes(
    {name: tensor.shape for name, tensor in used.items()},
    expected_source_shapes(),
    source=str(src),
    what="erfnet_pytorch's ERFNet (20 classes)",
    how_to_fix=HOW_TO_GET_WEIGHTS,
  )
  return {key: _to_flax(key, used[source_name(key)]) for key in expected_shapes()}


_IMAGE = (1, SIZE_DIVISOR, SIZE_DIVISOR, 3)
# Where a file's width shows: the initial block's BatchNorm has 16·width channels.
_WIDTH_KEY = 'params/encoder/initial_block/bn/bias'


@functools.cache
def _shapes_at(width: float) -> published.Shapes:
  return published.cached_shapes(lambda key: ERFNet(width=width).init(key, jnp.zeros(_IMAGE)))()


def _shapes_for(shapes: published.Shapes) -> published.Shapes:
  """The expected shapes of the width a file's initial block says (the published 1 otherwise)."""
  channels = shapes.get(_WIDTH_KEY, (BASE_FEATURES[0],))
  width = channels[0] / BASE_FEATURES[0] if len(channels) == 1 else 1.0
  try:
    return _shapes_at(width)
  except ValueError:  # Not a width ERFNet can have: compare with the published network.
    return _shapes_at(1.0)


WEIGHTS = published.WeightFile(
  name='ERFNet',
  module='semgan_jax.weights.erfnet',
  cache_name='erfnet_cityscapes.npz',
  published_file=PUBLISHED_FILE,
  description=f"Converts erfnet_pytorch's published Cityscapes ERFNet weights ({PUBLISHED_FILE}, "
  f'download it from {PUBLISHED_URL}) to the .npz that semgan_jax loads; reads the file '
  'without torch.',
  how_to_get=HOW_TO_GET_WEIGHTS,
  architecture='ERFNet (20 classes)',
  expected_shapes=functools.partial(_shapes_at, 1.0),
  to_arrays=_to_arrays,
  # erfnet_pytorch publishes no digest of its file (and this project could not fetch it to take
  # one), so any file of the right architecture converts without a warning.
  digest=None,
  other_producers="or exported by a segmenter run (`config.task='segmenter'`, its workdir's "
  '`erfnet_streets.npz`) with model.num_classes=20',
  shapes_for=_shapes_for,
)
# The module's interface (`load_params` returns `{'params': ..., 'batch_stats': ...}`, to apply as
# `ERFNet(width=erfnet.width_of(variables)).apply(variables, images)`; the published width is 1).
expected_shapes = WEIGHTS.expected_shapes
check_architecture = WEIGHTS.check_architecture
default_weights_path = WEIGHTS.default_path
convert = WEIGHTS.convert
load_params = WEIGHTS.load
ensure_weights = WEIGHTS.ensure
main = WEIGHTS.main

if __name__ == '__main__':
  sys.exit(main())
