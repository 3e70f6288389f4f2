"""SemGAN (latent → label map) on Cityscapes' label maps at 128×128 (paper 2, §5.0.2, appendix).

The official archives go into `data.manual_dir` as for configs/cityscapes.py (the first run
prepares the 128×128 maps from them: photos resized bilinearly, labels by nearest neighbour). The
label-id maps are read over the `cityscapes22` label set (semgan_jax/data/label_sets.py): the
paper's "22 main classes", which it does not list; ours are the 19 training classes, ego vehicle,
ground and other. Every field not set here, and its comment, is configs/shapes.py's.

Variants, chosen after a colon: `--config=configs/cityscapes_semgan.py:<variant>`
  (none)  the paper's best run (Table 3): lr 2e-4, ks 7, ld 128, batch 32, 5·10⁴ steps.
  quick   a CPU-sized network (widths 16, ks 4, batch 16, 3,000 steps); not yet timed: the
          archives are not available where it was written.
  small   the paper's run at 128×256, the resolution of configs/cityscapes.py:<column>,small:
          the SemGAN half of configs/dream_cityscapes.py.
  tiny    a few steps at 32×64, for tests on a fake copy of the archives.
"""

import ml_collections

from semgan_jax import config_files


def get_config(variant: str = '') -> ml_collections.ConfigDict:
  """Returns the experiment config; `variant` is '', 'quick', 'small' or 'tiny'."""
  if variant not in ('', 'quick', 'small', 'tiny'):
    raise ValueError(
      f'configs/cityscapes_semgan.py: unknown variant {variant!r}; expected one of '
      "'', 'quick', 'small' or 'tiny'."
    )
  config = config_files.sibling(__file__, 'shapes', '' if variant == 'small' else variant)
  config.task = 'semgan'  # A task of semgan_jax.tasks.TASKS.

  data = config.data
  del data['image_size']  # Height and width, as the builder configs name them.
  data.name = 'cityscapes'  # Its label maps only (photos and instances are not read).
  data.config_name = '128x128'  # The builder config (resolution) to prepare and read.
  data.height = 128
  data.width = 128
  data.label_set = 'cityscapes22'  # semgan_jax/data/label_sets.py.
  data.num_classes = 22
  data.manual_dir = ''  # Where the official zips are ('' = <data_dir>/downloads/manual).

  config.model.latent_dim = 128  # Appendix B, Table 3's best Cityscapes run: ld 128,
  config.optim.lr = 2e-4  # lr 2e-4,
  if variant in ('', 'small'):
    config.model.kernel_size = 7  # and ks 7 (the quick and tiny networks keep theirs).
    config.evals.maps.num_images = 2_975  # The whole training split.
    if variant == 'small':
      data.config_name = '128x256'
      data.width = 256
  elif variant == 'quick':
    data.batch_size = 16
    config.evals.maps.num_images = 1_024
  else:
    data.config_name = '32x64'
    data.height = 32
    data.width = 64
    config.model.latent_dim = 8
    config.evals.maps.num_images = 2
  return config
