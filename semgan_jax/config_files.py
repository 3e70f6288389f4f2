"""Config files (`configs/<name>.py` with a `get_config(variant)`), loaded by path.

configs/ is a folder of plain files, not a package, so a config that builds on another one
(configs/streets_semgan.py on configs/shapes.py) loads it through `sibling`.
"""

import importlib.util
import pathlib

import ml_collections


def load(path: str | pathlib.Path, variant: str = '') -> ml_collections.ConfigDict:
  """`get_config(variant)` of the config file at `path`."""
  path = pathlib.Path(path)
  spec = importlib.util.spec_from_file_location(f'semgan_jax_configs_{path.stem}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant) if variant else module.get_config()


def sibling(config_file: str, name: str, variant: str = '') -> ml_collections.ConfigDict:
  """`get_config(variant)` of `<name>.py` in the folder of `config_file` (pass `__file__`)."""
  return load(pathlib.Path(config_file).with_name(f'{name}.py'), variant)
