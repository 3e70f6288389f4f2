"""Writes examples/colab.ipynb from the cells below (`python examples/make_colab.py`).

The notebook is generated, not hand-edited, so that its code stays reviewable as Python and
ruff-formatted; tests/test_notebook.py executes the written notebook top to bottom.
"""

import pathlib

import nbformat

CELLS = [
  (
    'markdown',
    """# semgan_jax by hand: SemGAN, SemanticGAN and the dream chain

This notebook drives the library's pure functions directly, as a researcher would: it builds tiny
configs, jit-compiles each train step `(state, batch, rng) -> (state, metrics)`, runs a few dozen
steps of SemGAN (latent → label map) and of SemanticGAN (label map → photo) on the procedural
streets (generated on first use, nothing downloaded), plots the losses and samples, and chains the
two networks into dreamed street scenes. The networks are minute, so it runs top to bottom on a
CPU in a minute or two; the pictures show what a few dozen steps give, not trained models
(`python -m semgan_jax.main` trains real runs).

Run it from the repository root after `pip install -e '.[notebook]'` (on Colab: clone the
repository, `%cd` into it and install it the same way).""",
  ),
  (
    'code',
    """import pathlib
import tempfile

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from semgan_jax import config_files, data, images
from semgan_jax.data import cityscapes_labels, label_sets
from semgan_jax.data.paired import create_paired_iterator
from semgan_jax.tasks import dream
from semgan_jax.train import semanticgan_step, semgan_step
from semgan_jax.train.state import create_train_state


def load_config(name, variant=''):
  # configs/ holds plain files with a get_config(); loaded by path from the repository root.
  return config_files.load(pathlib.Path('configs') / f'{name}.py', variant)


data_dir = tempfile.mkdtemp(prefix='semgan_jax_tfds_')
print(jax.devices())""",
  ),
  ('markdown', '## SemGAN: latent vector → street layout (13 classes at 32×64)'),
  (
    'code',
    """maps_config = load_config('streets_semgan', 'tiny')
maps_config.model.g_base_features = maps_config.model.d_base_features = 8
streets = label_sets.get_label_set(maps_config.data.label_set)
source = label_sets.RelabeledSource(
  data.load_source('streets', data_dir, config_name=maps_config.data.config_name), streets
)
maps_batches = data.create_input_iterator(
  source,
  global_batch_size=16,
  num_classes=streets.num_classes,
  seed=0,
  include_onehot=False,
)
maps_state = create_train_state(maps_config, jax.random.key(0))
maps_step = jax.jit(semgan_step.make_train_step(palette=streets.palette), donate_argnums=0)
maps_losses = []
for step in range(60):
  batch = {'label': next(maps_batches)['label']}
  maps_state, metrics = maps_step(maps_state, batch, jax.random.fold_in(jax.random.key(1), step))
  maps_losses.append((float(metrics['train/g_loss']), float(metrics['train/d_loss'])))
plt.plot(np.array(maps_losses), label=['G (feature matching)', 'D (BCE)'])
plt.xlabel('step')
plt.legend()
plt.show()""",
  ),
  (
    'code',
    """z = semgan_step.sample_latents(jax.random.key(2), 8, maps_config.model.latent_dim)
classes = np.asarray(jnp.argmax(semgan_step.generate(maps_state, z), axis=-1))
grid = images.make_grid(data.colorize(classes, streets.palette), columns=4)
plt.figure(figsize=(10, 3))
plt.imshow(images.upscale_nearest(grid, 2))
plt.axis('off')
plt.title('SemGAN samples (argmax of the per-pixel softmax)')
plt.show()""",
  ),
  ('markdown', '## SemanticGAN: label map → photo (35 Cityscapes label ids ⊕ instance boundaries)'),
  (
    'code',
    """photos_config = load_config('streets', 'tiny')
pairs = create_paired_iterator(
  data.load_source('streets', data_dir, config_name=photos_config.data.config_name),
  global_batch_size=8,
  num_classes=photos_config.data.num_classes,
  seed=0,
)
photos_state = semanticgan_step.create_semanticgan_state(photos_config, jax.random.key(3))
photos_step = jax.jit(
  semanticgan_step.make_semanticgan_step(
    num_classes=photos_config.data.num_classes, lambda_vgg=0.0
  ),
  donate_argnums=0,
)
photo_losses = []
for step in range(40):
  batch = next(pairs)
  photos_state, metrics = photos_step(photos_state, batch, jax.random.key(step))
  photo_losses.append((float(metrics['train/g_loss']), float(metrics['train/d_loss'])))
plt.plot(np.array(photo_losses), label=['G (LSGAN + 10·feature matching)', 'D (LSGAN)'])
plt.xlabel('step')
plt.legend()
plt.show()""",
  ),
  (
    'code',
    """fake = semanticgan_step.translate(
  photos_state, batch['label'], batch['instance'], num_classes=photos_config.data.num_classes
)
row = np.concatenate(
  [
    data.colorize(batch['label'][0], cityscapes_labels.PALETTE),
    images.signed_to_uint8(np.asarray(fake[0])),
    batch['image'][0],
  ],
  axis=1,
)
plt.figure(figsize=(10, 2))
plt.imshow(row)
plt.axis('off')
plt.title('label map | generated | real')
plt.show()""",
  ),
  ('markdown', '## The dream chain: latents → SemGAN layouts → label ids and instances → photos'),
  (
    'code',
    """label_ids = streets.to_label_id[classes]  # SemGAN's classes → the translator's label ids
instances = dream.instance_maps(label_ids)  # one instance per connected car or person blob
dreamed = semanticgan_step.translate(
  photos_state, label_ids, instances, num_classes=photos_config.data.num_classes
)
tiles = dream.pair_tiles(label_ids, np.asarray(dreamed))
plt.figure(figsize=(10, 6))
plt.imshow(images.make_grid(tiles, columns=4))
plt.axis('off')
plt.title('dreamed layouts and their photos')
plt.show()
print('label ids in the dream:', sorted(np.unique(label_ids).tolist()))""",
  ),
]


def main():
  notebook = nbformat.v4.new_notebook()
  notebook.metadata.update(
    kernelspec={'name': 'python3', 'display_name': 'Python 3', 'language': 'python'},
    language_info={'name': 'python'},
  )
  for kind, source in CELLS:
    make = nbformat.v4.new_code_cell if kind == 'code' else nbformat.v4.new_markdown_cell
    notebook.cells.append(make(source))
  path = pathlib.Path(__file__).with_name('colab.ipynb')
  nbformat.write(notebook, path)
  print(f'wrote {path}')


if __name__ == '__main__':
  main()
