"""SIPL's Cityscapes ERFNet weights: convert erfnet_pytorch's published file, load and validate.

The published weights are erfnet_pytorch's `trained_models/erfnet_pretrained.pth` (Romera et al.;
licensed CC BY-NC 4.0), a state dict saved from `nn.DataParallel`: keys such as
`module.encoder.layers.0.conv3x1_1.weight`, `module.decoder.output_conv.weight`, BatchNorm
`weight`, `bias`, `running_mean`, `running_var` (and `num_batches_tracked` from torch 0.4 on).
semgan_jax never downloads it: the user fetches it and runs the converter, which reads it without
torch and without open unpickling (`torch_archive`), in the legacy or the zip format of torch.save,
with or without the `module.` prefix.

The converted `.npz` holds the variables of `ERFNet()` (20 classes) as float32 arrays under
`/`-joined paths: `params/...` (`kernel`, `bias`, BatchNorm `scale`) and `batch_stats/...`
(`mean`, `var`). Convolution kernels go from torch's OIHW to HWIO; the transposed convolutions'
kernels from torch's (in, out, kh, kw) to HWIO flipped spatially, which `ERFNet`'s paddings expect
(see `semgan_jax.models.erfnet`). The encoder's `output_conv` (only used by erfnet_pytorch to
train the encoder alone) and the step counters are dropped. The `.npz` is loaded with
`allow_pickle=False`.

  curl -LO https://github.com/Eromera/erfnet_pytorch/raw/master/trained_models/erfnet_pretrained.pth
  python -m semgan_jax.weights.erfnet --src erfnet_pretrained.pth [--out NPZ]
"""

import functools
import os
import pathlib
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from semgan_jax.models.erfnet import SIZE_DIVISOR, ERFNet
from semgan_jax.weights import npz_io, torch_archive

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


def _how_to_get_weights(path: pathlib.Path) -> str:
  """`HOW_TO_GET_WEIGHTS`, with `--out` when `path` is not the default location."""
  return npz_io.how_to_make(HOW_TO_GET_WEIGHTS, path, default_weights_path())


def default_weights_path() -> pathlib.Path:
  """`$XDG_CACHE_HOME/semgan_jax/weights/erfnet_cityscapes.npz` (XDG_CACHE_HOME: ~/.cache)."""
  return npz_io.cache_path('erfnet_cityscapes.npz')


@functools.cache
def expected_shapes() -> dict[str, tuple[int, ...]]:
  """Every variable of `ERFNet()` (`params/...`, `batch_stats/...`) with its shape."""
  image = jax.ShapeDtypeStruct((1, SIZE_DIVISOR, SIZE_DIVISOR, 3), jnp.float32)
  # eval_shape traces the initialisation without computing it.
  variables = jax.eval_shape(ERFNet().init, jax.random.key(0), image)
  flat = traverse_util.flatten_dict(variables, sep='/')
  return {key: tuple(value.shape) for key, value in sorted(flat.items())}


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
    what='ERFNet (20 classes)',
    how_to_fix=HOW_TO_GET_WEIGHTS,
  )


def convert(src_pth: str | os.PathLike, out_npz: str | os.PathLike) -> pathlib.Path:
  """Converts erfnet_pytorch's published state dict to our `.npz`, atomically.

  Args:
    src_pth: `erfnet_pretrained.pth` (read without torch), keys with or without `module.`.
    out_npz: where to write; parent folders are created. The file appears complete or not at all
      (written to a temporary file in the same folder, then renamed).

  Returns:
    `out_npz` as a Path.

  Raises:
    FileNotFoundError: `src_pth` does not exist.
    torch_archive.TorchArchiveError: `src_pth` is not a readable PyTorch checkpoint.
    torch_archive.UnsafeArchiveError: `src_pth` names a global outside the reader's whitelist.
    ValueError: the checkpoint is not erfnet_pytorch's 20-class ERFNet (names the first wrong key).
  """
  src_pth, out_npz = pathlib.Path(src_pth), pathlib.Path(out_npz)
  tensors = {}
  for name, tensor in torch_archive.load_tensors(src_pth).items():
    name = name.removeprefix(_DATA_PARALLEL_PREFIX)
    if name in tensors:
      raise ValueError(f'{src_pth} holds {name} both with and without {_DATA_PARALLEL_PREFIX!r}.')
    if not _is_unused_source_tensor(name):
      tensors[name] = tensor
  npz_io.check_shapes(
    {name: tensor.shape for name, tensor in tensors.items()},
    expected_source_shapes(),
    source=str(src_pth),
    what="erfnet_pytorch's ERFNet (20 classes)",
    how_to_fix=HOW_TO_GET_WEIGHTS,
  )
  arrays = {key: _to_flax(key, tensors[source_name(key)]) for key in expected_shapes()}
  return npz_io.write_npz_atomically(out_npz, arrays)


def load_params(npz_path: str | os.PathLike) -> dict:
  """Loads and validates converted weights.

  Args:
    npz_path: a `.npz` written by `convert`.

  Returns:
    The variables of `ERFNet()`, `{'params': ..., 'batch_stats': ...}` (nested dicts of float32
    NumPy arrays), to apply as `ERFNet().apply(variables, images)`.

  Raises:
    FileNotFoundError: no file at `npz_path` (the message says how to make one).
    ValueError: not an `.npz`, or an `.npz` of another architecture (names the first wrong key).
  """
  npz_path = pathlib.Path(npz_path)
  return npz_io.load_checked_params(
    npz_path,
    check_architecture,
    f'no ERFNet weights at {npz_path}. {_how_to_get_weights(npz_path)}',
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
  return npz_io.existing_file(path, default_weights_path(), 'ERFNet', HOW_TO_GET_WEIGHTS)


def main(argv: list[str] | None = None) -> int:
  """`python -m semgan_jax.weights.erfnet`: converts erfnet_pytorch's Cityscapes weights."""
  return npz_io.converter_main(
    argv,
    module='semgan_jax.weights.erfnet',
    description=f"Converts erfnet_pytorch's published Cityscapes ERFNet weights ({PUBLISHED_FILE}, "
    f'download it from {PUBLISHED_URL}) to the .npz that semgan_jax loads; reads the file '
    'without torch.',
    source_file=PUBLISHED_FILE,
    convert=convert,
    default_out=default_weights_path(),
    num_tensors=len(expected_shapes()),
  )


if __name__ == '__main__':
  sys.exit(main())
