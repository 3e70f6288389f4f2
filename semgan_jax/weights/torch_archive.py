"""Reads tensors from PyTorch / TorchScript zip archives without torch and without open unpickling.

A `.pt` file written by `torch.save` (zip format) or `torch.jit.save` is a zip with one top-level
folder holding `data.pkl` (the object tree, a pickle) and `data/<key>` (one raw little-endian buffer
per storage). A plain `pickle.load` of `data.pkl` would import and call whatever globals the file
names, so a downloaded weights file could run arbitrary code. Here the pickle is read by an
unpickler that resolves only a short whitelist of globals to local, harmless stand-ins:

  * `torch._utils._rebuild_tensor_v2` / `_rebuild_parameter` → build a NumPy array from a storage;
  * `torch.<Type>Storage` → a dtype marker for the storage's raw buffer;
  * `collections.OrderedDict` and `torch.jit._pickle.build_{int,double,bool}list`;
  * TorchScript module classes (`__torch__.*`) → `ScriptObject`, a plain dict of the module's
    attributes that remembers the class name; nothing is imported.

Any other global is refused with `UnsafeArchiveError` naming it. The legacy (pre-1.6, non-zip)
`torch.save` format is not supported.
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
  """The file is not a PyTorch zip archive this reader understands."""


class UnsafeArchiveError(TorchArchiveError):
  """The archive's pickle names a global outside the whitelist."""


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


class _Storage:
  """Stands in for `torch.<Type>Storage` in the pickle: only carries the element dtype."""

  def __init__(self, name: str, dtype: np.dtype):
    self.name = name
    self.dtype = dtype


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


class _RestrictedUnpickler(pickle.Unpickler):
  """Resolves only whitelisted globals; storages come from the archive's `data/` entries."""

  _FUNCTIONS = {
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('torch.jit._pickle', 'build_intlist'): list,
    ('torch.jit._pickle', 'build_doublelist'): list,
    ('torch.jit._pickle', 'build_boollist'): list,
  }

  def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, byteorder: str, where):
    super().__init__(io.BytesIO(data))
    self._archive = archive
    self._prefix = prefix
    self._byteorder = byteorder
    self._where = where
    self._storages = {}
    self._script_classes = {}

  def find_class(self, module, name):
    if (module, name) in self._FUNCTIONS:
      return self._FUNCTIONS[module, name]
    if module == 'torch' and name in _STORAGE_DTYPES:
      return _Storage(name, _STORAGE_DTYPES[name])
    if module.startswith('__torch__.') or module == '__torch__':
      # One ScriptObject subclass per TorchScript class, so pickle's NEWOBJ can instantiate it.
      qualified = f'{module}.{name}'
      if qualified not in self._script_classes:
        self._script_classes[qualified] = type(name, (ScriptObject,), {'qualified_name': qualified})
      return self._script_classes[qualified]
    raise UnsafeArchiveError(
      f'{self._where}: refused to load the global {module}.{name}; only tensor rebuilds, storage '
      'types, OrderedDict and TorchScript module records are allowed in a weights archive.'
    )

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == 'storage'):
      raise TorchArchiveError(f'{self._where}: unsupported persistent id {pid!r}.')
    _, storage_type, key, _, numel = pid
    if not isinstance(storage_type, _Storage):
      raise TorchArchiveError(f'{self._where}: storage of unknown type {storage_type!r}.')
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


def read_archive(path: str | os.PathLike) -> Any:
  """Unpickles an archive's `data.pkl` with the whitelist; storages become NumPy arrays.

  Args:
    path: a `.pt` / `.pth` file in PyTorch's zip format (torch.save or torch.jit.save).

  Returns:
    The archive's object tree: `ScriptObject`s for TorchScript modules, (Ordered)dicts for state
    dicts, NumPy arrays for tensors.

  Raises:
    FileNotFoundError: `path` does not exist.
    TorchArchiveError: not a zip, no `data.pkl`, or malformed storages and tensors.
    UnsafeArchiveError: the pickle names a global outside the whitelist.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f'no PyTorch archive at {path}.')
  if not zipfile.is_zipfile(path):
    raise TorchArchiveError(
      f'{path} is not a zip archive: not a PyTorch file, or one in the legacy (pre-1.6) torch.save '
      'format, which this reader does not support.'
    )
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
    unpickler = _RestrictedUnpickler(
      archive.read(pickles[0]), archive, prefix, byteorder, f'{path}:{pickles[0]}'
    )
    try:
      return unpickler.load()
    except (pickle.UnpicklingError, EOFError) as e:
      raise TorchArchiveError(f'{path}:{pickles[0]} is not a valid pickle: {e}') from e


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
  """The parameters and buffers of a PyTorch / TorchScript archive, read without torch.

  Args:
    path: a `.pt` / `.pth` file in PyTorch's zip format.

  Returns:
    A flat dict from dotted names (the module attribute path, e.g. `net.layers.conv.weight`, or a
    state dict's keys) to NumPy arrays in their stored dtype and shape (PyTorch's layouts, e.g.
    OIHW convolution kernels).

  Raises:
    FileNotFoundError, TorchArchiveError, UnsafeArchiveError: as `read_archive`.
  """
  return flatten_tensors(read_archive(path))
