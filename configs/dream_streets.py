"""Dream street scenes (paper 2 §6.1): SemGAN's label maps painted by SemanticGAN, no training.

It chains the runs of configs/streets_semgan.py and configs/streets.py (both at 64×128):

  python -m semgan_jax.main --config=configs/streets_semgan.py --workdir=runs/streets_semgan
  python -m semgan_jax.main --config=configs/streets.py --workdir=runs/streets
  python -m semgan_jax.main --mode=dream --config=configs/dream_streets.py --workdir=runs/dream

and writes into <workdir>/dream/: rows of (label map | photo), the label ids as .npy, and a
latent interpolation as a PNG strip and an animated GIF (--num_samples, --sample_seed).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """Returns the dream config."""
  config = ml_collections.ConfigDict()
  config.task = 'dream'  # Runs with --mode=dream only.
  config.seed = 0  # The latents (--sample_seed replaces it).

  config.dream = ml_collections.ConfigDict()
  # The two trained runs, by workdir (each holds its config.json and checkpoints).
  config.dream.semgan_workdir = 'runs/streets_semgan'
  config.dream.semanticgan_workdir = 'runs/streets'
  # Which checkpoint of each (0: the newest readable one).
  config.dream.semgan_step = 0
  config.dream.semanticgan_step = 0
  config.dream.num_samples = 8  # Scenes in the grid (--num_samples replaces it).
  config.dream.interpolation_frames = 8  # Steps of the latent interpolation (slerp).
  config.dream.frame_ms = 200  # Per frame of the GIF.
  return config
