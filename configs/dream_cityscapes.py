"""Dream Cityscapes scenes (paper 2 §6.1): SemGAN's 22-class maps painted by SemanticGAN.

It chains the runs of configs/cityscapes_semgan.py:small and configs/cityscapes.py:f,small (both
at 128×256; both need the Cityscapes archives in data.manual_dir, and the SemanticGAN's SIPL the
converted ERFNet, or --config.loss.lambda_sipl=0):

  python -m semgan_jax.main --config=configs/cityscapes_semgan.py:small \\
      --workdir=runs/cityscapes_semgan_small
  python -m semgan_jax.main --config=configs/cityscapes.py:f,small --workdir=runs/cityscapes_small
  python -m semgan_jax.main --mode=dream --config=configs/dream_cityscapes.py --workdir=runs/dr

SemGAN's classes (the `cityscapes22` label set) go back to one Cityscapes label id each (e.g.
'ground' to 6 'ground', 'other' to 0 'unlabeled'); everything else is configs/dream_streets.py's.
"""

import ml_collections

from semgan_jax import config_files


def get_config() -> ml_collections.ConfigDict:
  """Returns the dream config."""
  config = config_files.sibling(__file__, 'dream_streets')
  config.dream.semgan_workdir = 'runs/cityscapes_semgan_small'
  config.dream.semanticgan_workdir = 'runs/cityscapes_small'
  return config
