"""Writes PyTorch files without torch, for tests: checkpoints (zip, legacy) and TorchScript zips.

The pickles name the same globals torch's would (`torch._utils._rebuild_tensor_v2`,
`torch.FloatStorage`, `__torch__.<module>.<Class>`, ...); stand-in classes are registered under
those module names only while pickling, so the files look to a reader exactly like torch's output.
Every storage is float32. A state dict is written by `write_zip` / `write_legacy`; any object tree
of dicts, lists, `Tensor`s, `IntList`s and `script_object`s by `write_archive` /
`write_legacy_archive`.
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
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# (module, name) → the stand-in pickled as that global; one per name, so pickle finds it again.
_GLOBALS = {}


def _global(module: str, name: str):
  """A class that pickles as the global `module.name` (its module registered while pickling)."""
  if (module, name) not in _GLOBALS:
    _GLOBALS[module, name] = type(name, (), {'__module__': module, '__qualname__': name})
  return _GLOBALS[module, name]


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

  def __init__(self, key: str, view: tuple | None):
    self.key, self.view = key, view


class Tensor:
  """A tensor of a storage; pickles as torch does: `_rebuild_tensor[_v2](storage, offset, ...)`.

  Args:
    key: its storage's key in the writer's `storages`.
    shape: its size.
    stride: its element strides; row-major contiguous if None.
    offset: its first element in the storage.
    view: legacy files only: (view key, offset, size), the part of the storage that the tensor
      addresses (a storage view, as torch < 0.4 could save), or None for the whole storage.
    rebuild: '_rebuild_tensor_v2', or '_rebuild_tensor' (legacy files of torch < 0.4).
  """

  def __init__(
    self, key: str, shape, stride=None, offset=0, view=None, rebuild='_rebuild_tensor_v2'
  ):
    # Python ints: NumPy scalars would pickle as numpy globals, which the readers refuse.
    self.shape = tuple(int(n) for n in shape)
    if stride is None:
      stride = [np.prod(self.shape[i + 1 :], dtype=np.int64) for i in range(len(self.shape))]
    self.stride = tuple(int(s) for s in stride)
    self.offset = int(offset)
    self.storage = _StorageRef(key, view)
    self.rebuild = rebuild
    self._function = _global('torch._utils', rebuild)

  def __reduce__(self):
    args = (self.storage, self.offset, self.shape, self.stride)
    if self.rebuild == '_rebuild_tensor_v2':
      args += (False, collections.OrderedDict())  # requires_grad, backward hooks
    return self._function, args


class IntList:
  """A TorchScript int list attribute: pickles as `torch.jit._pickle.build_intlist(values)`."""

  def __init__(self, values):
    self.values = [int(v) for v in values]
    self._function = _global('torch.jit._pickle', 'build_intlist')

  def __reduce__(self):
    return self._function, (self.values,)


def script_object(qualified_name: str, **attributes):
  """A TorchScript module record, pickled as torch.jit.save does (NEWOBJ of the class, then BUILD).

  Args:
    qualified_name: its class, e.g. `__torch__.inceptionv3.Conv2dLayer`.
    **attributes: its state (submodules, `Tensor`s, plain values); `training=False` is added.
  """
  module, name = qualified_name.rsplit('.', 1)
  obj = _global(module, name)()
  obj.__dict__.update(training=False, **attributes)
  return obj


class _Pickler(pickle.Pickler):
  def __init__(self, file, persistent_id):
    super().__init__(file, protocol=2)
    self._persistent_id = persistent_id

  def persistent_id(self, obj):
    return self._persistent_id(obj) if isinstance(obj, _StorageRef) else None


def write_archive(path, tree, storages: dict[str, np.ndarray], folder='archive', torchscript=False):
  """A zip archive of `tree`, as torch.save (>= 1.6) or torch.jit.save writes one.

  Args:
    path: the file to write.
    tree: the object pickled as `<folder>/data.pkl`.
    storages: key → the contents (saved as float32, flattened) of the storage `<folder>/data/<key>`.
    folder: the archive's top-level folder.
    torchscript: write a `constants.pkl` and no `byteorder` record (little-endian by default), as
      torch.jit.save did for the published FID archive, instead of torch.save's `byteorder`.
  """
  storage_type = _global('torch', 'FloatStorage')
  buffer = io.BytesIO()
  with _fake_torch_modules():
    pid = lambda ref: ('storage', storage_type, ref.key, 'cpu', storages[ref.key].size)
    _Pickler(buffer, pid).dump(tree)
  with zipfile.ZipFile(path, 'w') as archive:
    archive.writestr(f'{folder}/data.pkl', buffer.getvalue())
    if torchscript:
      archive.writestr(f'{folder}/constants.pkl', pickle.dumps((), protocol=2))
    else:
      archive.writestr(f'{folder}/byteorder', 'little')
    for key, array in storages.items():
      archive.writestr(f'{folder}/data/{key}', np.asarray(array).astype('<f4').tobytes())
    archive.writestr(f'{folder}/version', '3\n')


def write_legacy_archive(path, tree, storages: dict[str, np.ndarray], storage_module='torch'):
  """A legacy (pre-1.6) torch.save file of `tree`.

  Args:
    path: the file to write.
    tree: the object pickled after the header.
    storages: key → the contents (saved as float32, flattened) of each storage, written in key
      order after the tree and the key list.
    storage_module: 'torch', or 'torch.cuda' for a file saved from a GPU.
  """
  storage_type = _global(storage_module, 'FloatStorage')
  with open(path, 'wb') as f, _fake_torch_modules():
    sys_info = dict(
      protocol_version=_LEGACY_PROTOCOL, little_endian=True, type_sizes=dict(short=2, int=4, long=8)
    )
    for header in (_LEGACY_MAGIC, _LEGACY_PROTOCOL, sys_info):
      pickle.dump(header, f, protocol=2)
    pid = lambda ref: ('storage', storage_type, ref.key, 'cpu', storages[ref.key].size, ref.view)
    _Pickler(f, pid).dump(tree)
    pickle.dump(sorted(storages), f, protocol=2)
    for key in sorted(storages):
      array = np.asarray(storages[key])
      f.write(np.int64(array.size).astype('<i8').tobytes())
      f.write(array.astype('<f4').tobytes())


def _tree_and_storages(state_dict, layout, rebuild):
  """The pickled tree (an OrderedDict of `Tensor`s) and the storages' float32 contents."""
  arrays = {k: np.ascontiguousarray(v, np.float32) for k, v in state_dict.items()}
  tree = collections.OrderedDict()
  if layout == 'separate':
    storages = {}
    for name, array in arrays.items():
      key = str(len(storages))
      storages[key] = array.ravel()
      tree[name] = Tensor(key, array.shape, rebuild=rebuild)
    return tree, storages
  # One storage for everything: tensors address it by offset, or (legacy) by storage views.
  flat = np.concatenate([a.ravel() for a in arrays.values()])
  offset = 0
  for i, (name, array) in enumerate(arrays.items()):
    if layout == 'offsets':
      tree[name] = Tensor('0', array.shape, offset=offset, rebuild=rebuild)
    else:
      tree[name] = Tensor('0', array.shape, view=(f'view{i}', offset, array.size), rebuild=rebuild)
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
  write_archive(path, *_tree_and_storages(state_dict, layout, '_rebuild_tensor_v2'), folder)


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
  write_legacy_archive(path, tree, storages, storage_module)
