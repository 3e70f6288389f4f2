"""Our safe weight format: flat `.npz` files of float32 arrays named `module/.../leaf`."""

import argparse
import os
import pathlib
import secrets
import zipfile
from collections.abc import Callable

import numpy as np
from flax import traverse_util


def cache_path(filename: str) -> pathlib.Path:
  """`$XDG_CACHE_HOME/semgan_jax/weights/<filename>` (XDG_CACHE_HOME: ~/.cache): converted files."""
  cache = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return pathlib.Path(cache) / 'semgan_jax' / 'weights' / filename


def how_to_make(how_to: str, path: pathlib.Path, default: pathlib.Path) -> str:
  """A converter's instructions `how_to`, with `--out <path>` when `path` is not the default."""
  return how_to + (f' --out {path}' if path != default else '')


def existing_file(path, default: pathlib.Path, what: str, how_to: str) -> pathlib.Path:
  """`path` (or `default` if None) if it is a file; never downloads or converts anything.

  Raises:
    FileNotFoundError: no file there; the message says how to make one (`how_to`).
  """
  path = pathlib.Path(path) if path is not None else default
  if path.is_file():
    return path
  raise FileNotFoundError(f'no {what} weights at {path}. {how_to_make(how_to, path, default)}')


def converter_main(
  argv: list[str] | None,
  *,
  module: str,
  description: str,
  source_file: str,
  convert: Callable[[pathlib.Path, pathlib.Path], pathlib.Path],
  default_out: pathlib.Path,
  num_tensors: int,
) -> int:
  """The command line of a converter that takes the downloaded file: `--src FILE [--out NPZ]`."""
  parser = argparse.ArgumentParser(prog=f'python -m {module}', description=description)
  parser.add_argument(
    '--src', type=pathlib.Path, required=True, help=f'the downloaded {source_file}'
  )
  parser.add_argument('--out', type=pathlib.Path, default=default_out, help='the .npz to write')
  args = parser.parse_args(argv)
  try:
    out = convert(args.src, args.out)
  except (FileNotFoundError, ValueError) as e:  # TorchArchiveError is a ValueError
    parser.exit(1, f'error: {e}\n')
  print(f'wrote {num_tensors} tensors from {args.src} to {out}')
  return 0


def write_npz_atomically(out_npz: pathlib.Path, arrays: dict[str, np.ndarray]) -> pathlib.Path:
  """Writes `arrays` to `out_npz` through a temporary file and a rename: never half a file."""
  out_npz.parent.mkdir(parents=True, exist_ok=True)
  # A unique name beside the target (so the rename is atomic), opened exclusively; unlike mkstemp's
  # 0600 file, open() honours the umask, so the result is as readable as any other cache file.
  tmp = out_npz.with_name(f'.{out_npz.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp')
  try:
    with open(tmp, 'xb') as f:
      np.savez(f, **arrays)
    os.replace(tmp, out_npz)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise
  return out_npz


def check_shapes(
  shapes: dict[str, tuple[int, ...]],
  expected: dict[str, tuple[int, ...]],
  *,
  source: str,
  what: str,
  how_to_fix: str,
) -> None:
  """Raises a ValueError naming the first key of `shapes` that is missing, extra or misshapen.

  Args:
    shapes: the keys → shapes a weights file holds.
    expected: the keys → shapes the architecture needs.
    source: the file, for the message.
    what: the architecture, for the message (e.g. 'VGG19Features (conv1_1 .. conv5_1)').
    how_to_fix: appended to the message (where the right file comes from).
  """
  problems = []
  for key, shape in expected.items():
    if key not in shapes:
      problems.append(f'{key} is missing (expected shape {shape})')
    elif tuple(shapes[key]) != shape:
      problems.append(f'{key} has shape {tuple(shapes[key])}, expected {shape}')
  problems += [f'{key} is not a variable of {what}' for key in shapes if key not in expected]
  if problems:
    more = f' (and {len(problems) - 1} more differences)' if len(problems) > 1 else ''
    raise ValueError(
      f'{source} is a weights file of the wrong architecture for {what}: '
      f'{problems[0]}{more}. {how_to_fix}'
    )


def load_checked_params(
  npz_path: pathlib.Path,
  check_architecture: Callable[[dict[str, tuple[int, ...]], str], None],
  missing_message: str,
) -> dict:
  """Reads a converted `.npz` (no pickle), validates it, returns the nested float32 params.

  Args:
    npz_path: the file.
    check_architecture: raises a ValueError naming the first missing, extra or misshapen key.
    missing_message: the FileNotFoundError's message when there is no file (how to make one).

  Raises:
    FileNotFoundError: no file at `npz_path`.
    ValueError: not an `.npz` of arrays, another architecture, or non-float arrays.
  """
  if not npz_path.is_file():
    raise FileNotFoundError(missing_message)
  try:
    with np.load(npz_path, allow_pickle=False) as npz:
      flat = {key: npz[key] for key in npz.files}
  except (ValueError, OSError, zipfile.BadZipFile) as e:
    raise ValueError(f'{npz_path} is not a readable .npz of arrays: {e}') from e
  check_architecture({k: v.shape for k, v in flat.items()}, str(npz_path))
  for key, value in flat.items():
    if not np.issubdtype(value.dtype, np.floating):
      raise ValueError(f'{npz_path}: {key} has dtype {value.dtype}; expected floating point.')
  return traverse_util.unflatten_dict(
    {tuple(key.split('/')): value.astype(np.float32, copy=False) for key, value in flat.items()}
  )
