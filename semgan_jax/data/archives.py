"""Reading manually downloaded data sets: a file tree that is either extracted or still zipped.

Cityscapes and CMP Facades come as official zip archives that users download by hand. Either
layout is read the same way: a `Tree` names the folder the archive extracts to and the archive
itself, and a `Reader` lists and reads its members from whichever of the two exists.
`ManualBuilder` is the tfds builder base of such data sets, with one config per resolution.
"""

import dataclasses
import io
import os
import zipfile

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image


@dataclasses.dataclass
class Tree:
  """A file tree in the manual directory: an extracted folder, or the zip beside it."""

  root: epath.Path  # The manual directory.
  folder: str  # The top folder of the archive's members ('leftImg8bit', 'base', ...).
  archive: str  # The zip's file name.

  def locate(self) -> str | None:
    """'folder' or 'zip' for whichever exists (the folder first), None if neither does."""
    if (self.root / self.folder).is_dir():
      return 'folder'
    if (self.root / self.archive).is_file():
      return 'zip'
    return None

  def describe(self, name: str) -> str:
    """A member's full location, for error messages."""
    if self.locate() == 'zip':
      return f'{self.root / self.archive}:{name}'
    return os.fspath(self.root / name)


class Reader:
  """Lists and reads the files of a `Tree`, from the folder or straight out of the zip."""

  def __init__(self, tree: Tree):
    self.tree = tree
    self.kind = tree.locate()
    self._zip = zipfile.ZipFile(tree.root / tree.archive) if self.kind == 'zip' else None

  def close(self):
    if self._zip is not None:
      self._zip.close()

  def list(self, subfolder: str = '') -> list[str]:
    """Paths relative to the manual directory ('<folder>/<subfolder>/.../<file>') of the files
    under `subfolder` of the tree's folder (all of them when '')."""
    prefix = f'{self.tree.folder}/{subfolder}/' if subfolder else f'{self.tree.folder}/'
    if self._zip is not None:
      return [n for n in self._zip.namelist() if n.startswith(prefix) and not n.endswith('/')]
    top = self.tree.root / prefix
    if not top.is_dir():
      return []
    root = os.fspath(self.tree.root)
    return [
      os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, '/')
      for dirpath, _, files in os.walk(os.fspath(top))
      for f in files
    ]

  def read(self, name: str) -> bytes:
    if self._zip is not None:
      return self._zip.read(name)
    return (self.tree.root / name).read_bytes()


def by_stem(names: list[str], suffix: str) -> dict[str, str]:
  """{file name without suffix: path} of the files whose name ends in suffix. Names starting
  with '.' are skipped: they are not data files (e.g. macOS '._' entries in a zip)."""
  out = {}
  for name in names:
    base = name.rsplit('/', 1)[-1]
    if base.endswith(suffix) and not base.startswith('.'):
      out[base[: -len(suffix)]] = name
  return out


def decode(data: bytes, what: str) -> Image.Image:
  """The decoded image of a file's bytes; ValueError naming `what` if it cannot be decoded."""
  try:
    image = Image.open(io.BytesIO(data))
    image.load()
  except Exception as e:
    raise ValueError(f'Cannot decode {what}: {e}') from e
  return image


def resize_nearest(array: np.ndarray, height: int, width: int) -> np.ndarray:
  """Nearest-neighbour resize of an (H, W) map: every output pixel copies one input pixel.

  Output pixel (i, j) takes the input pixel under its centre, so ids are never mixed and a map
  made of aligned k x k blocks comes back exactly when shrunk by k.

  Args:
    array: (H, W) array of any dtype.
    height: Output height.
    width: Output width.

  Returns:
    The (height, width) array, same dtype.
  """
  in_h, in_w = array.shape[:2]
  if (in_h, in_w) == (height, width):
    return array
  rows = ((np.arange(height) + 0.5) * (in_h / height)).astype(np.int64)
  cols = ((np.arange(width) + 0.5) * (in_w / width)).astype(np.int64)
  return array[np.minimum(rows, in_h - 1)[:, None], np.minimum(cols, in_w - 1)[None, :]]


class ResolutionConfig(tfds.core.BuilderConfig):
  """A resolution of a data set, named '<height>x<width>'."""

  def __init__(self, *, height: int, width: int, **kwargs):
    super().__init__(name=f'{height}x{width}', **kwargs)
    self.height = height
    self.width = width


class ManualBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A builder whose files the user downloads by hand into a manual directory."""

  def __init__(self, *, manual_dir: epath.PathLike | None = None, **kwargs):
    """Makes the builder.

    Args:
      manual_dir: Directory holding the archives or their extracted folders;
        `<data_dir>/downloads/manual` (tfds's convention) when None.
      **kwargs: Passed on to `tfds.core.GeneratorBasedBuilder` (data_dir, config, ...).
    """
    super().__init__(**kwargs)
    if manual_dir is None:
      manual_dir = epath.Path(self.data_dir_root) / 'downloads' / 'manual'
    self.manual_dir = epath.Path(os.path.expanduser(os.fspath(manual_dir)))
