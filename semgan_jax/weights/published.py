"""The one protocol of every converter: a `WeightFile` describes a published weights file.

A description holds what differs between the published files (FID Inception-v3, VGG19, ERFNet):
the architecture's expected shapes, the published file's name and digest, how the user gets it,
the tensor mapping (`to_arrays`: the source's tensors → our `/`-joined float32 arrays) and the
cache path of the converted `.npz`. Everything else is written once here: reading the source
without torch (`torch_archive`), the digest check (`hashlib.file_digest`), the architecture
check, the atomic write, the validated load (format, architecture, dtype, finite values), the
"never download" lookup and the `python -m` command line.
"""

import argparse
import dataclasses
import functools
import hashlib
import os
import pathlib
import warnings
from collections.abc import Callable

import numpy as np

from semgan_jax.weights import npz_io, torch_archive

Shapes = dict[str, tuple[int, ...]]


def cache_path(filename: str) -> pathlib.Path:
  """`$XDG_CACHE_HOME/semgan_jax/weights/<filename>` (XDG_CACHE_HOME: ~/.cache): converted files."""
  cache = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return pathlib.Path(cache) / 'semgan_jax' / 'weights' / filename


def file_digest(path: pathlib.Path, algorithm: str) -> str:
  """The hex digest of a file, read in chunks."""
  with open(path, 'rb') as f:
    return hashlib.file_digest(f, algorithm).hexdigest()


@dataclasses.dataclass(frozen=True)
class WeightFile:
  """A published weights file and the `.npz` semgan_jax converts it to.

  Attributes:
    name: what the weights are, for messages (e.g. 'VGG19').
    module: the converter's module, run as `python -m <module>`.
    cache_name: the converted file's name under `cache_path`.
    published_file: the published file's name (e.g. 'vgg19-dcbb9e9d.pth').
    description: the converter's `--help` text.
    how_to_get: how the user gets and converts the published file (semgan_jax never downloads).
    architecture: the network the `.npz` holds, for messages (e.g. 'ERFNet (20 classes)').
    expected_shapes: our keys → shapes of that network (cached).
    to_arrays: (the source's tensors by dotted name, the source path) → our float32 arrays; raises
      a ValueError naming the first tensor that does not fit.
    digest: (hashlib algorithm, hex digest or its published prefix) of the published file, or None
      where none is published; another file still converts, with a warning that ends with
      `digest_consequence`.
    digest_consequence: why a different file matters (e.g. 'FID scores are not comparable').
    find_source: locates an installed published file (None: the user passes `--src`).
    other_producers: other ways a matching `.npz` is made (e.g. a segmenter run's export), named
      in the architecture error.
    shapes_for: for a network with a size option (ERFNet's width), the expected shapes of the size
      a file's shapes say it is; None: always `expected_shapes()`.
  """

  name: str
  module: str
  cache_name: str
  published_file: str
  description: str
  how_to_get: str
  architecture: str
  expected_shapes: Callable[[], Shapes]
  to_arrays: Callable[[dict[str, np.ndarray], pathlib.Path], dict[str, np.ndarray]]
  digest: tuple[str, str] | None
  digest_consequence: str = ''
  find_source: Callable[[], pathlib.Path | None] | None = None
  other_producers: str = ''
  shapes_for: Callable[[Shapes], Shapes] | None = None

  def default_path(self) -> pathlib.Path:
    """`$XDG_CACHE_HOME/semgan_jax/weights/<cache_name>` (XDG_CACHE_HOME: ~/.cache)."""
    return cache_path(self.cache_name)

  def how_to_make(self, path: pathlib.Path) -> str:
    """`how_to_get`, with `--out <path>` when `path` is not the default location."""
    return self.how_to_get + (f' --out {path}' if path != self.default_path() else '')

  def check_architecture(self, shapes: Shapes, source: str) -> None:
    """Raises a ValueError naming the first key that is missing, extra or of the wrong shape."""
    npz_io.check_shapes(
      shapes,
      self.shapes_for(shapes) if self.shapes_for else self.expected_shapes(),
      source=source,
      what=self.architecture,
      how_to_fix=f'It must be {self._producers()} (`python -m {self.module} --help` says where '
      f'the published {self.published_file} comes from).',
    )

  def _producers(self) -> str:
    producers = f' {self.other_producers}' if self.other_producers else ''
    return f'converted by `python -m {self.module}`{producers}'

  def check_digest(self, src: pathlib.Path) -> None:
    """Warns when `src` is not the published file (its digest differs)."""
    if self.digest is None:
      return
    algorithm, expected = self.digest
    if not file_digest(src, algorithm).startswith(expected):
      warnings.warn(
        f'{src} is not the published {self.published_file} ({algorithm.upper()} differs); '
        f'{self.digest_consequence}',
        stacklevel=3,
      )

  def convert(self, src: str | os.PathLike, out_npz: str | os.PathLike) -> pathlib.Path:
    """Converts the published file to our `.npz`, atomically (complete or not at all).

    Raises:
      FileNotFoundError: `src` does not exist.
      torch_archive.TorchArchiveError: `src` is not a readable PyTorch file.
      torch_archive.UnsafeArchiveError: `src` names a global outside the reader's whitelist.
      ValueError: `src` is not this architecture (names the first wrong tensor).
    """
    src, out_npz = pathlib.Path(src), pathlib.Path(out_npz)
    tensors = torch_archive.load_tensors(src)
    self.check_digest(src)
    arrays = self.to_arrays(tensors, src)
    self.check_architecture({key: value.shape for key, value in arrays.items()}, str(src))
    return npz_io.write_npz_atomically(out_npz, arrays)

  def load(self, npz_path: str | os.PathLike) -> dict:
    """The nested float32 arrays of a converted `.npz`, validated.

    Raises:
      FileNotFoundError: no file at `npz_path` (the message says how to make one).
      ValueError: not an `.npz` of arrays, another architecture, not floating point, or not
        finite (each names the file and the first offending key).
    """
    npz_path = pathlib.Path(npz_path)
    if not npz_path.is_file():
      raise FileNotFoundError(f'no {self.name} weights at {npz_path}. {self.how_to_make(npz_path)}')
    flat = npz_io.read_arrays(npz_path, hint=f'expected a file {self._producers()}')
    self.check_architecture({key: value.shape for key, value in flat.items()}, str(npz_path))
    return npz_io.checked_float_tree(flat, npz_path)

  def ensure(self, path: str | os.PathLike | None = None) -> pathlib.Path:
    """The converted file (`default_path()` if `path` is None); never downloads anything.

    Converts an installed published file (`find_source`) when the `.npz` is missing; otherwise a
    missing file is a FileNotFoundError that says how to get and convert it. Not validated here:
    `load` does that.
    """
    path = pathlib.Path(path) if path is not None else self.default_path()
    if path.is_file():
      return path
    src = self.find_source() if self.find_source else None
    if src is None:
      raise FileNotFoundError(f'no {self.name} weights at {path}. {self.how_to_make(path)}')
    return self.convert(src, path)

  def main(self, argv: list[str] | None = None) -> int:
    """`python -m <module> [--src FILE] [--out NPZ]`: converts the published file."""
    parser = argparse.ArgumentParser(prog=f'python -m {self.module}', description=self.description)
    found = ' (default: the installed published file)' if self.find_source else ''
    parser.add_argument(
      '--src',
      type=pathlib.Path,
      required=self.find_source is None,
      help=f'the downloaded {self.published_file}{found}',
    )
    parser.add_argument(
      '--out', type=pathlib.Path, default=self.default_path(), help='the .npz to write'
    )
    args = parser.parse_args(argv)
    src = args.src or self.find_source()
    if src is None:
      parser.exit(
        1, f'error: no --src given and no installed {self.published_file}.\n{self.how_to_get}\n'
      )
    try:
      out = self.convert(src, args.out)
    except (FileNotFoundError, ValueError) as e:  # TorchArchiveError is a ValueError
      parser.exit(1, f'error: {e}\n')
    print(f'wrote {len(self.expected_shapes())} tensors from {src} to {out}')
    return 0


def cached_shapes(init: Callable, params_only: bool = False) -> Callable[[], Shapes]:
  """An `expected_shapes` for `WeightFile`: `/`-joined keys → shapes of `init(key)`'s variables.

  The network is traced once (`jax.eval_shape`, nothing computed), on the first call.

  Args:
    init: a function of a PRNG key returning the network's variables (e.g. a partial of
      `Module.init` with a dummy input).
    params_only: keep only the `params` collection, without its name in the keys.
  """

  @functools.cache
  def expected_shapes() -> Shapes:
    import jax
    from flax import traverse_util

    variables = jax.eval_shape(init, jax.random.key(0))
    flat = traverse_util.flatten_dict(variables['params'] if params_only else variables, sep='/')
    return {key: tuple(value.shape) for key, value in sorted(flat.items())}

  return expected_shapes
