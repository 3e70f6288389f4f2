"""Reads tensors from PyTorch files without torch and without open unpickling.

Two formats are read, told apart by their first bytes:

  * the zip format of `torch.save` (torch >= 1.6) and `torch.jit.save`: a zip with one top-level
    folder holding `data.pkl` (the object tree, a pickle) and `data/<key>` (one raw buffer per
    storage, little-endian unless a `byteorder` record says otherwise);
  * the legacy format of `torch.save` before 1.6 (e.g. torchvision's 2017 ImageNet weights): a
    sequence of pickles (the magic number, the protocol version, a sys_info dict, the object tree,
    the list of storage keys), then, per key in that order, an int64 element count and the
    storage's raw little-endian bytes. The tar format of torch's first releases is not supported.

A plain `pickle.load` would import and call whatever globals the file names, so a downloaded
weights file could run arbitrary code. Here every pickle is read by an unpickler that resolves only
a short whitelist of globals to local, harmless stand-ins:

  * `torch._utils._rebuild_tensor_v2` (`_rebuild_tensor` in legacy files of torch < 0.4) and
    `_rebuild_parameter` → build a NumPy array from a storage;
  * `torch.<Type>Storage` (also `torch.cuda.<Type>Storage` in legacy files saved from a GPU) → a
    dtype marker for the storage's raw buffer;
  * `collections.OrderedDict`;
  * in zip archives only, `torch.jit._pickle.build_{int,double,bool}list` and TorchScript module
    classes (`__torch__.*`) → `ScriptObject`, a plain dict of the module's attributes that
    remembers the class name; nothing is imported.

Any other global is refused with `UnsafeArchiveError` naming it. `read_archive` returns a file's
object tree and `load_tensors` its tensors under dotted names, whichever the format.
"""

import collections
import io
import os
import pathlib
import pickle
import zipfile
from typing import Any

import ml_dtypes
import numpy as np


class TorchArchiveError(ValueError):
  """The file is not a PyTorch file this reader understands."""


class UnsafeArchiveError(TorchArchiveError):
  """The file's pickle names a global outside the whitelist."""


# torch's storage class names (as pickled by torch.save and torch.jit.save) → element dtype.
_STORAGE_DTYPES = {
  'DoubleStorage': np.dtype(np.float64),
  'FloatStorage': np.dtype(np.float32),
  'HalfStorage': np.dtype(np.float16),
  'BFloat16Storage': np.dtype(ml_dtypes.bfloat16),
  'LongStorage': np.dtype(np.int64),
  'IntStorage': np.dtype(np.int32),
  'ShortStorage': np.dtype(np.int16),
  'CharStorage': np.dtype(np.int8),
  'ByteStorage': np.dtype(np.uint8),
  'BoolStorage': np.dtype(np.bool_),
}

# The first two records of a legacy file.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class ScriptObject(dict):
  """A TorchScript object (usually an `nn.Module`) from `data.pkl`, as a dict of its attributes.

  `qualified_name` is the class the archive named, e.g. `__torch__.inceptionv3.Conv2dLayer`;
  submodules are nested `ScriptObject`s, parameters and buffers NumPy arrays, and the remaining
  attributes (strides, paddings, flags) plain Python values.
  """

  qualified_name = ''

  def __setstate__(self, state):
    # pickle's BUILD calls this with the attribute dict that TorchScript saved for the object.
    if not isinstance(state, dict):
      raise TorchArchiveError(
        f'TorchScript object {self.qualified_name} has a {type(state).__name__} state; only '
        'attribute dicts are supported.'
      )
    self.update(state)

  def __repr__(self):
    return f'{self.qualified_name}({dict.__repr__(self)})'


# Stands in for `torch.<Type>Storage` in the pickle: only carries the element dtype.
_Storage = collections.namedtuple('_Storage', ['name', 'dtype'])


def _rebuild_tensor(storage, storage_offset, size, stride, *unused_flags):
  """`torch._utils._rebuild_tensor_v2`: a view of `storage` (element strides) copied to an array."""
  if not isinstance(storage, np.ndarray):
    raise TorchArchiveError(f'tensor rebuilt from a {type(storage).__name__}, not a storage.')
  size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
  offset = int(storage_offset)
  if len(size) != len(stride) or any(s < 0 for s in size + stride) or offset < 0:
    raise TorchArchiveError(
      f'invalid tensor layout: size={size}, stride={stride}, offset={offset}.'
    )
  if 0 in size:
    return np.zeros(size, storage.dtype)
  # as_strided does no bounds checks, so a corrupt or hostile layout must be rejected here.
  last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
  if last >= storage.size:
    raise TorchArchiveError(
      f'tensor of size {size}, stride {stride}, offset {offset} reads element {last} of a '
      f'storage of {storage.size} elements.'
    )
  view = np.lib.stride_tricks.as_strided(
    storage[offset:], size, tuple(s * storage.itemsize for s in stride), writeable=False
  )
  return np.array(view, copy=True)


def _rebuild_parameter(data, unused_requires_grad, unused_hooks, *unused_state):
  """`torch._utils._rebuild_parameter`: a Parameter is just its tensor here."""
  return data


class _PendingTensor:
  """A legacy tree's tensor, rebuilt once its storage's bytes (which follow the tree) are read."""

  def __init__(self, storage, storage_offset, size, stride, *unused_flags):
    self.args = (storage, storage_offset, size, stride)


class _WhitelistUnpickler(pickle.Unpickler):
  """Resolves only `_FUNCTIONS` and the storage types of `_STORAGE_MODULES`; refuses the rest.

  A subclass per format says where storages come from (`persistent_load`).
  """

  _FUNCTIONS = {}
  _STORAGE_MODULES = ('torch',)
  _ALLOWED = 'tensor rebuilds, storage types and OrderedDict'

  def __init__(self, file, where: str):
    # torch.load's encoding, for str records of files pickled by Python 2.
    super().__init__(file, encoding='utf-8')
    self._where = where

  def find_class(self, module, name):
    if (module, name) in self._FUNCTIONS:
      return self._FUNCTIONS[module, name]
    if module in self._STORAGE_MODULES and name in _STORAGE_DTYPES:
      return _Storage(name, _STORAGE_DTYPES[name])
    raise UnsafeArchiveError(
      f'{self._where}: refused to load the global {module}.{name}; only {self._ALLOWED} are '
      'allowed in a weights file.'
    )

  def _storage_id(self, pid, length: int) -> tuple:
    """(storage type, key, location, numel, ...) of a ('storage', ...) `pid` of `length` items."""
    if not (isinstance(pid, tuple) and len(pid) == length and pid[0] == 'storage'):
      raise TorchArchiveError(f'{self._where}: unsupported persistent id {pid!r}.')
    if not isinstance(pid[1], _Storage):
      raise TorchArchiveError(f'{self._where}: storage of unknown type {pid[1]!r}.')
    return pid[1:]


class _ZipUnpickler(_WhitelistUnpickler):
  """A zip archive's `data.pkl`: storages come from its `data/` entries; TorchScript records too."""

  _FUNCTIONS = {
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('torch.jit._pickle', 'build_intlist'): list,
    ('torch.jit._pickle', 'build_doublelist'): list,
    ('torch.jit._pickle', 'build_boollist'): list,
  }
  _ALLOWED = 'tensor rebuilds, storage types, OrderedDict and TorchScript module records'

  def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, byteorder: str, where):
    super().__init__(io.BytesIO(data), where)
    self._archive = archive
    self._prefix = prefix
    self._byteorder = byteorder
    self._storages = {}
    self._script_classes = {}

  def find_class(self, module, name):
    if module.startswith('__torch__.') or module == '__torch__':
      # One ScriptObject subclass per TorchScript class, so pickle's NEWOBJ can instantiate it.
      qualified = f'{module}.{name}'
      if qualified not in self._script_classes:
        self._script_classes[qualified] = type(name, (ScriptObject,), {'qualified_name': qualified})
      return self._script_classes[qualified]
    return super().find_class(module, name)

  def persistent_load(self, pid):
    storage_type, key, _, numel = self._storage_id(pid, 5)
    if key not in self._storages:
      entry = f'{self._prefix}data/{key}'
      try:
        raw = self._archive.read(entry)
      except KeyError:
        raise TorchArchiveError(f'{self._where}: storage {entry} is missing.') from None
      dtype = storage_type.dtype.newbyteorder('<' if self._byteorder == 'little' else '>')
      if len(raw) < int(numel) * dtype.itemsize:
        raise TorchArchiveError(
          f'{self._where}: storage {entry} has {len(raw)} bytes; {numel} elements of '
          f'{storage_type.name} need {int(numel) * dtype.itemsize}.'
        )
      array = np.frombuffer(raw, dtype, count=int(numel))
      self._storages[key] = array.astype(dtype.newbyteorder('='), copy=False)
    return self._storages[key]


class _LegacyUnpickler(_WhitelistUnpickler):
  """One record of a legacy file: storages are allocated here and filled after the tree."""

  _FUNCTIONS = {
    # torch < 0.4 pickled tensors with `_rebuild_tensor`, later versions with `_rebuild_tensor_v2`.
    ('torch._utils', '_rebuild_tensor'): _PendingTensor,
    ('torch._utils', '_rebuild_tensor_v2'): _PendingTensor,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('collections', 'OrderedDict'): collections.OrderedDict,
  }
  # Files saved from a GPU name `torch.cuda.<Type>Storage`; the bytes are the same.
  _STORAGE_MODULES = ('torch', 'torch.cuda')

  def __init__(self, file, where: str, storages: dict[str, np.ndarray], file_size: int):
    super().__init__(file, where)
    self._storages = storages
    self._file_size = file_size

  def persistent_load(self, pid):
    storage_type, key, _, numel, view = self._storage_id(pid, 6)
    if key not in self._storages:
      # A storage's bytes are in the file, so a larger one is corrupt or hostile (and would
      # otherwise be allocated before anything could notice).
      if not 0 <= int(numel) * storage_type.dtype.itemsize <= self._file_size:
        raise TorchArchiveError(
          f'{self._where}: storage {key} of {numel} elements is larger than the file.'
        )
      # Filled in place once the tree is read; views below share its memory.
      self._storages[key] = np.zeros(int(numel), storage_type.dtype)
    storage = self._storages[key]
    if view is not None:
      _, offset, view_size = view
      if not 0 <= int(offset) <= int(offset) + int(view_size) <= storage.size:
        raise TorchArchiveError(f'{self._where}: storage view {view!r} out of range.')
      storage = storage[int(offset) : int(offset) + int(view_size)]
    return storage


def _read_zip(path: pathlib.Path) -> Any:
  """The object tree of a zip archive, tensors as NumPy arrays."""
  with zipfile.ZipFile(path) as archive:
    # Every record lives under one top-level folder whose name varies ('archive', the file stem).
    pickles = [n for n in archive.namelist() if n.count('/') == 1 and n.endswith('/data.pkl')]
    if len(pickles) != 1:
      raise TorchArchiveError(
        f'{path} is a zip but not a PyTorch archive: expected one <folder>/data.pkl, found '
        f'{len(pickles)}.'
      )
    prefix = pickles[0][: -len('data.pkl')]
    byteorder = 'little'
    if f'{prefix}byteorder' in archive.namelist():
      byteorder = archive.read(f'{prefix}byteorder').decode('ascii').strip()
      if byteorder not in ('little', 'big'):
        raise TorchArchiveError(f'{path}: unknown byteorder record {byteorder!r}.')
    unpickler = _ZipUnpickler(
      archive.read(pickles[0]), archive, prefix, byteorder, f'{path}:{pickles[0]}'
    )
    try:
      return unpickler.load()
    except (pickle.UnpicklingError, EOFError) as e:
      raise TorchArchiveError(f'{path}:{pickles[0]} is not a valid pickle: {e}') from e


def _resolve(node: Any) -> Any:
  """`node` with every `_PendingTensor` rebuilt (with `_rebuild_tensor`'s bounds checks)."""
  if isinstance(node, _PendingTensor):
    return _rebuild_tensor(*node.args)
  if isinstance(node, dict):  # dict or OrderedDict: the whitelist allows no other mapping
    return type(node)((key, _resolve(value)) for key, value in node.items())
  if isinstance(node, list | tuple):
    return type(node)(_resolve(value) for value in node)
  return node


def _read_legacy(path: pathlib.Path) -> Any:
  """The object tree of a legacy file, tensors as NumPy arrays.

  Tensors in the tree refer to storages whose bytes come only after it, so they are rebuilt once
  the bytes have been read.
  """
  where = str(path)
  storages = {}
  file_size = path.stat().st_size
  with open(path, 'rb') as f:

    def load():
      # Each call consumes exactly one pickle, leaving the file at the next record.
      try:
        return _LegacyUnpickler(f, where, storages, file_size).load()
      except TorchArchiveError:
        raise
      except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise TorchArchiveError(
          f'{where} is neither a PyTorch zip archive nor a legacy torch.save file: not a valid '
          f'pickle stream ({e}).'
        ) from e

    if load() != _LEGACY_MAGIC:
      raise TorchArchiveError(
        f'{where} is neither a PyTorch zip archive nor a legacy torch.save file (wrong magic '
        'number).'
      )
    if (protocol := load()) != _LEGACY_PROTOCOL:
      raise TorchArchiveError(f'{where}: unknown legacy protocol {protocol!r}.')
    sys_info = load()
    if not isinstance(sys_info, dict) or not sys_info.get('little_endian', False):
      raise TorchArchiveError(f'{where}: only little-endian legacy files are supported.')
    tree = load()
    keys = load()
    if (
      not isinstance(keys, list)
      or not all(isinstance(key, str) for key in keys)
      or sorted(keys) != sorted(storages)
    ):
      raise TorchArchiveError(
        f'{where}: the storage list does not match the storages the tensors use.'
      )
    for key in keys:
      storage = storages[key]
      header = f.read(8)
      numel = int.from_bytes(header, 'little', signed=True) if len(header) == 8 else -1
      if numel != storage.size:
        raise TorchArchiveError(
          f'{where}: storage {key} records {numel} elements, its tensors need {storage.size}.'
        )
      if f.readinto(storage.view(np.uint8)) != storage.nbytes:
        raise TorchArchiveError(f'{where}: storage {key} is truncated.')
  return _resolve(tree)


def read_archive(path: str | os.PathLike) -> Any:
  """Unpickles a PyTorch file's object tree with the whitelist; storages become NumPy arrays.

  Args:
    path: a `.pt` / `.pth` file written by `torch.save` (the zip format of torch >= 1.6, or the
      legacy one before it) or by `torch.jit.save`.

  Returns:
    The file's object tree: `ScriptObject`s for TorchScript modules, (Ordered)dicts for state
    dicts, NumPy arrays for tensors.

  Raises:
    FileNotFoundError: `path` does not exist.
    TorchArchiveError: neither format, or malformed records, storages or tensors.
    UnsafeArchiveError: a pickle names a global outside the whitelist.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f'no PyTorch archive at {path}.')
  return _read_zip(path) if zipfile.is_zipfile(path) else _read_legacy(path)


def flatten_tensors(tree: Any) -> dict[str, np.ndarray]:
  """Every array in `tree` under its dotted attribute path, e.g. `net.layers.conv.weight`."""
  out = {}

  def visit(node, name):
    if isinstance(node, np.ndarray):
      out[name] = node
    elif isinstance(node, dict):
      for key, value in node.items():
        visit(value, f'{name}.{key}' if name else str(key))
    elif isinstance(node, list | tuple):
      for i, value in enumerate(node):
        visit(value, f'{name}.{i}' if name else str(i))

  visit(tree, '')
  return out


def load_tensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """The parameters and buffers of a PyTorch checkpoint or TorchScript archive, read without torch.

  Args:
    path: a `.pt` / `.pth` file in either format, as `read_archive`.

  Returns:
    A flat dict from dotted names (the module attribute path, e.g. `net.layers.conv.weight`, or a
    state dict's keys) to NumPy arrays in their stored dtype and shape (PyTorch's layouts, e.g.
    OIHW convolution kernels).

  Raises:
    FileNotFoundError, TorchArchiveError, UnsafeArchiveError: as `read_archive`.
  """
  return flatten_tensors(read_archive(path))
