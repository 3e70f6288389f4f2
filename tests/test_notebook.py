"""examples/colab.ipynb runs top to bottom, and is what examples/make_colab.py writes."""

import importlib.util
import json

import nbformat
from conftest import FAST_COMPILE_FLAGS
from nbclient import NotebookClient


def test_the_notebook_is_generated_from_its_script(repo_root):
  spec = importlib.util.spec_from_file_location('make_colab', repo_root / 'examples/make_colab.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  notebook = nbformat.read(repo_root / 'examples/colab.ipynb', as_version=4)
  assert [(c.cell_type, c.source) for c in notebook.cells] == list(module.CELLS)


def test_the_notebook_runs_top_to_bottom(repo_root, compilation_cache_dir, monkeypatch):
  # The kernel is a fresh process on one CPU device, compiled as fast as the other tests.
  monkeypatch.setenv('XLA_FLAGS', FAST_COMPILE_FLAGS)
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', compilation_cache_dir)
  monkeypatch.delenv('MPLBACKEND', raising=False)  # The kernel's inline backend shows the plots.
  notebook = nbformat.read(repo_root / 'examples/colab.ipynb', as_version=4)
  client = NotebookClient(
    notebook, timeout=600, kernel_name='python3', resources={'metadata': {'path': str(repo_root)}}
  )
  client.execute()  # Raises CellExecutionError, with the cell and its traceback, on any error.
  outputs = [o for cell in notebook.cells if cell.cell_type == 'code' for o in cell.outputs]
  pictures = [o for o in outputs if 'image/png' in o.get('data', {})]
  assert len(pictures) == 5, json.dumps([o.get('output_type') for o in outputs])
  printed = ''.join(o.get('text', '') for o in outputs if o.output_type == 'stream')
  assert 'label ids in the dream:' in printed
