"""Our safe weight format: flat `.npz` files of float32 arrays named `module/.../leaf`."""

import os
import pathlib
import secrets
import zipfile

import numpy as np
from flax import traverse_util


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


def read_arrays(npz_path: pathlib.Path, hint: str) -> dict[str, np.ndarray]:
  """Every array of an `.npz`, read without pickle.

  Args:
    npz_path: the file.
    hint: how to make a good file, appended to the error.

  Raises:
    ValueError: not a zip of `.npy` arrays (e.g. a PyTorch file or a truncated download), or an
      array that cannot be read without pickle; names the file.
  """
  if not zipfile.is_zipfile(npz_path):
    raise ValueError(f'{npz_path} is not an .npz archive (a zip of .npy arrays); {hint}.')
  try:
    with np.load(npz_path, allow_pickle=False) as npz:
      return {key: npz[key] for key in npz.files}
  except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
    # numpy's own message here suggests allow_pickle=True, which is never the fix for weights.
    reason = 'it holds Python objects' if 'pickle' in str(e) else str(e)
    raise ValueError(f'{npz_path} is not a readable .npz of arrays ({reason}); {hint}.') from None


def checked_float_tree(flat: dict[str, np.ndarray], source: pathlib.Path) -> dict:
  """`flat`'s `/`-joined keys as a nested dict of float32 arrays, after checking every value.

  Raises:
    ValueError: an array that is not floating point, or holds NaN or infinity (names the key).
  """
  for key, value in flat.items():
    if not np.issubdtype(value.dtype, np.floating):
      raise ValueError(f'{source}: {key} has dtype {value.dtype}; expected floating point.')
    if not np.isfinite(value).all():
      bad = int(value.size - np.isfinite(value).sum())
      raise ValueError(
        f'{source}: {key} holds {bad} NaN or infinite values of {value.size}; the file is damaged '
        'or was written from a diverged run. Convert or export it again.'
      )
  return traverse_util.unflatten_dict(
    {tuple(key.split('/')): value.astype(np.float32, copy=False) for key, value in flat.items()}
  )


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
