"""Writes PyTorch state-dict checkpoints (zip and legacy formats) without torch, for tests.

The pickles name the same globals torch's would (`torch._utils._rebuild_tensor_v2`,
`torch.FloatStorage`, ...); stand-in classes are registered under those module names only while
pickling, so the files look to a reader exactly like torch.save output.
"""

import collections
import contextlib
import io
import pickle
import sys
import types
import zipfile

import numpy as np
import pytest

# torch.save's legacy header: magic number, protocol version, sys_info.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001


def _fake_global(module: str, name: str):
  """A class that pickles as the global `module.name`."""
  return type(name, (), {'__module__': module, '__qualname__': name})


_GLOBALS = {
  (module, name): _fake_global(module, name)
  for module, name in [
    ('torch', 'FloatStorage'),
    ('torch.cuda', 'FloatStorage'),
    ('torch._utils', '_rebuild_tensor'),
    ('torch._utils', '_rebuild_tensor_v2'),
  ]
}


@contextlib.contextmanager
def _fake_torch_modules():
  """Registers the stand-ins' modules, so that pickle can save references to them."""
  modules = {}
  for (module, name), obj in _GLOBALS.items():
    for i in range(module.count('.') + 1):  # parents too: pickle imports the top-level package
      parent = '.'.join(module.split('.')[: i + 1])
      modules.setdefault(parent, types.ModuleType(parent))
    setattr(modules[module], name, obj)
  with pytest.MonkeyPatch.context() as mp:
    for module_name, module in modules.items():
      mp.setitem(sys.modules, module_name, module)
    yield


class _StorageRef:
  """A storage in the object tree: pickled as a persistent id."""

  def __init__(self, key: str, numel: int, view: tuple | None = None):
    self.key, self.numel, self.view = key, numel, view


class _Tensor:
  """Pickles as torch does: `_rebuild_tensor[_v2](storage, offset, size, stride, ...)`."""

  def __init__(self, storage: _StorageRef, offset: int, shape, rebuild: str):
    self.storage, self.offset, self.shape, self.rebuild = storage, offset, tuple(shape), rebuild

  def __reduce__(self):
    # Python ints: NumPy scalars would pickle as numpy globals, which the readers refuse.
    shape = tuple(int(n) for n in self.shape)
    stride = tuple(int(np.prod(shape[i + 1 :], dtype=np.int64)) for i in range(len(shape)))
    args = (self.storage, int(self.offset), shape, stride)
    if self.rebuild == '_rebuild_tensor_v2':
      args += (False, collections.OrderedDict())  # requires_grad, backward hooks
    return _GLOBALS['torch._utils', self.rebuild], args


class _Pickler(pickle.Pickler):
  def __init__(self, file, persistent_id):
    super().__init__(file, protocol=2)
    self._persistent_id = persistent_id

  def persistent_id(self, obj):
    return self._persistent_id(obj) if isinstance(obj, _StorageRef) else None


def _tree_and_storages(state_dict, layout, rebuild):
  """The pickled tree (an OrderedDict of `_Tensor`s) and the storages' float32 contents."""
  arrays = {k: np.ascontiguousarray(v, np.float32) for k, v in state_dict.items()}
  tree = collections.OrderedDict()
  if layout == 'separate':
    storages = {}
    for name, array in arrays.items():
      key = str(len(storages))
      storages[key] = array.ravel()
      tree[name] = _Tensor(_StorageRef(key, array.size), 0, array.shape, rebuild)
    return tree, storages
  # One storage for everything: tensors address it by offset, or (legacy) by storage views.
  flat = np.concatenate([a.ravel() for a in arrays.values()])
  offset = 0
  for i, (name, array) in enumerate(arrays.items()):
    if layout == 'offsets':
      tree[name] = _Tensor(_StorageRef('0', flat.size), offset, array.shape, rebuild)
    else:
      view = (f'view{i}', offset, array.size)
      tree[name] = _Tensor(_StorageRef('0', flat.size, view), 0, array.shape, rebuild)
    offset += array.size
  return tree, {'0': flat}


def write_zip(path, state_dict: dict[str, np.ndarray], layout: str = 'separate', folder='archive'):
  """A torch.save (>= 1.6) zip checkpoint of `state_dict` (float32 tensors).

  Args:
    path: the file to write.
    state_dict: name → array.
    layout: 'separate' (one storage per tensor, as torch saves a state dict) or 'offsets' (one
      shared storage, tensors at offsets).
    folder: the archive's top-level folder.
  """
  tree, storages = _tree_and_storages(state_dict, layout, '_rebuild_tensor_v2')
  storage_type = _GLOBALS['torch', 'FloatStorage']
  buffer = io.BytesIO()
  with _fake_torch_modules():
    pid = lambda ref: ('storage', storage_type, ref.key, 'cpu', ref.numel)
    _Pickler(buffer, pid).dump(tree)
  with zipfile.ZipFile(path, 'w') as archive:
    archive.writestr(f'{folder}/data.pkl', buffer.getvalue())
    archive.writestr(f'{folder}/byteorder', 'little')
    for key, array in storages.items():
      archive.writestr(f'{folder}/data/{key}', array.astype('<f4').tobytes())
    archive.writestr(f'{folder}/version', '3\n')


def write_legacy(
  path,
  state_dict: dict[str, np.ndarray],
  layout: str = 'separate',
  rebuild: str = '_rebuild_tensor',
  storage_module: str = 'torch',
):
  """A legacy (pre-1.6) torch.save checkpoint of `state_dict` (float32 tensors).

  Args:
    path: the file to write.
    state_dict: name → array.
    layout: 'separate', 'offsets' (as `write_zip`) or 'views' (one root storage, each tensor
      on a storage view of it, as torch < 0.4 could save).
    rebuild: '_rebuild_tensor' (torch < 0.4, as torchvision's 2017 files) or '_rebuild_tensor_v2'.
    storage_module: 'torch', or 'torch.cuda' for a file saved from a GPU.
  """
  tree, storages = _tree_and_storages(state_dict, layout, rebuild)
  storage_type = _GLOBALS[storage_module, 'FloatStorage']
  with open(path, 'wb') as f, _fake_torch_modules():
    sys_info = dict(
      protocol_version=LEGACY_PROTOCOL, little_endian=True, type_sizes=dict(short=2, int=4, long=8)
    )
    for header in (LEGACY_MAGIC, LEGACY_PROTOCOL, sys_info):
      pickle.dump(header, f, protocol=2)
    pid = lambda ref: ('storage', storage_type, ref.key, 'cpu', ref.numel, ref.view)
    _Pickler(f, pid).dump(tree)
    pickle.dump(sorted(storages), f, protocol=2)
    for key in sorted(storages):
      f.write(np.int64(storages[key].size).astype('<i8').tobytes())
      f.write(storages[key].astype('<f4').tobytes())
