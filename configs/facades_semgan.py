"""SemGAN (latent → label map) on CMP Facades' label maps at 128×128 (paper 2, §5.0.3, appendix).

The database's two official zips (base and extended: 606 facades, 12 classes) go into
`data.manual_dir`, zipped or extracted; the first run prepares the 128×128 maps from them (labels
by nearest neighbour; facades of any aspect ratio are squeezed to the square, as in the paper).
Every field not set here, and its comment, is configs/shapes.py's.

Variants, chosen after a colon: `--config=configs/facades_semgan.py:<variant>`
  (none)  the paper's best run (Table 4): lr 2e-4, ks 7, ld 300, batch 32, 5·10⁴ steps.
  quick   a CPU-sized network (widths 16, ks 4, batch 16, 3,000 steps); not yet timed: the
          archives are not available where it was written.
  tiny    a few steps at 32×32, for tests on a fake copy of the archives.
"""

import ml_collections

from semgan_jax import config_files


def get_config(variant: str = '') -> ml_collections.ConfigDict:
  """Returns the experiment config; `variant` is '', 'quick' or 'tiny'."""
  if variant not in ('', 'quick', 'tiny'):
    raise ValueError(
      f"configs/facades_semgan.py: unknown variant {variant!r}; expected '', 'quick' or 'tiny'."
    )
  config = config_files.sibling(__file__, 'shapes', variant)
  config.task = 'semgan'  # A task of semgan_jax.tasks.TASKS.

  data = config.data
  data.name = 'facades'  # Its label maps only (the photos are not read).
  data.config_name = '128x128'  # The builder config (resolution) to prepare and read.
  data.image_size = 128
  data.num_classes = 12  # background, facade, window, door, ..., shop.
  data.manual_dir = ''  # Where the official zips are ('' = <data_dir>/downloads/manual).

  config.model.latent_dim = 300  # Appendix B, Table 4's best Facades run: ld 300,
  config.optim.lr = 2e-4  # lr 2e-4,
  if not variant:
    config.model.kernel_size = 7  # and ks 7 (the quick and tiny networks keep theirs).
    config.evals.maps.num_images = 606  # All the facades.
  elif variant == 'quick':
    data.batch_size = 16
    config.evals.maps.num_images = 606
  else:
    data.config_name = '32x32'
    data.image_size = 32
    config.model.latent_dim = 8
    config.evals.maps.num_images = 2
  return config
