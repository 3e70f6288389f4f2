"""Shared test setup: 8 fake CPU devices, a persistent compilation cache and the tiny config."""

import importlib.util
import os
import pathlib

import pytest

# Before jax creates its CPU backend: every test process sees 8 CPU devices, so the multi-device
# code paths (sharded batches, replicated state) run on one machine.
# XLA:CPU's compiler dominates the suite's time (compiles, not steps), so tests compile at
# optimization level 0 (about half the compile time, for slower steps of tiny networks) and with
# XLA's older LLVM-IR kernel emitters instead of its MLIR fusion emitters (half the backend compile
# time again: 24.8 -> 12.4 s over the 628 compiles of test_one_pass_step_equals_the_plain_
# formulation). Tests compare within one setting, with float64 references, or to float rounding
# of the largest element, so results do not depend on either flag.
FAST_COMPILE_FLAGS = '--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false'
os.environ['XLA_FLAGS'] = ' '.join(
  filter(
    None,
    [
      os.environ.get('XLA_FLAGS', ''),
      FAST_COMPILE_FLAGS,
      '--xla_force_host_platform_device_count=8',
    ],
  )
)

import jax  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# XLA:CPU compiles slowly (tens of seconds for a train state), so compiled executables are kept
# on disk: repeated compiles within the session, the CLI subprocesses and later sessions reuse them.
CACHE_DIR = os.environ.get('JAX_COMPILATION_CACHE_DIR') or '/tmp/semgan_jax_test_cache'
jax.config.update('jax_compilation_cache_dir', CACHE_DIR)
jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)


def _load_config_module(name: str):
  """Imports configs/<name>.py by path (configs/ is not a package)."""
  spec = importlib.util.spec_from_file_location(
    f'configs_{name}', REPO_ROOT / 'configs' / f'{name}.py'
  )
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope='session')
def repo_root() -> pathlib.Path:
  return REPO_ROOT


@pytest.fixture(scope='session')
def compilation_cache_dir() -> str:
  return CACHE_DIR


@pytest.fixture(scope='session')
def tfds_dir(tmp_path_factory) -> str:
  """A tfds data_dir with colored_shapes prepared once for the session."""
  from semgan_jax import data

  path = str(tmp_path_factory.mktemp('tfds'))
  data.load_source('colored_shapes', path)
  return path


@pytest.fixture(scope='session')
def tiny_config(tfds_dir):
  """configs/shapes.py:tiny reading the session's data set; copy it before changing fields."""
  config = _load_config_module('shapes').get_config('tiny')
  config.data.data_dir = tfds_dir
  return config


@pytest.fixture(scope='session')
def streets_config(tfds_dir):
  """configs/streets.py:tiny (32x64) reading the session's data dir; copy it before changing."""
  config = _load_config_module('streets').get_config('tiny')
  config.data.data_dir = tfds_dir
  return config


@pytest.fixture(scope='session')
def erfnet_npz(tmp_path_factory) -> pathlib.Path:
  """Random 20-class ERFNet variables in our weights format (what the converter writes)."""
  import jax.numpy as jnp
  import numpy as np
  from flax import traverse_util

  from semgan_jax.models import ERFNet
  from semgan_jax.weights import npz_io

  variables = ERFNet().init(jax.random.key(5), jnp.zeros((1, 32, 64, 3)))
  flat = traverse_util.flatten_dict(jax.device_get(variables), sep='/')
  path = tmp_path_factory.mktemp('erfnet') / 'erfnet.npz'
  return npz_io.write_npz_atomically(path, {k: np.asarray(v) for k, v in flat.items()})


@pytest.fixture(scope='session')
def file_listing():
  """A function mapping a directory to {path: mtime} of everything under it (to prove no writes)."""
  return _file_listing


def _file_listing(root) -> dict[str, int]:
  """Every file under `root` with its modification time, and every directory."""
  out = {}
  for dirpath, dirnames, filenames in os.walk(root):
    for name in dirnames:
      out[os.path.join(dirpath, name) + '/'] = 0
    for name in filenames:
      path = os.path.join(dirpath, name)
      out[path] = os.stat(path).st_mtime_ns
  return out


def read_scalars(workdir) -> dict[int, dict[str, float]]:
  """Every scalar of every TensorBoard event file in `workdir`, by step (TFRecord framing)."""
  import struct

  from tensorboardX.proto import event_pb2

  scalars = {}
  for path in sorted(pathlib.Path(workdir).glob('events.out.tfevents.*')):
    raw = path.read_bytes()
    pos = 0
    while pos < len(raw):
      (length,) = struct.unpack('<Q', raw[pos : pos + 8])
      event = event_pb2.Event.FromString(raw[pos + 12 : pos + 12 + length])
      pos += 12 + length + 4
      for value in event.summary.value:
        if value.HasField('simple_value'):
          scalars.setdefault(event.step, {})[value.tag] = value.simple_value
  return scalars
