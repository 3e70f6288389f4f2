"""SemanticGAN (label map → photo) on the procedural streets set: the embedded, CPU-sized default.

Variants, chosen after a colon: `--config=configs/streets.py:<variant>`
  (none)  a CPU run of 13 to 18 minutes on 2 cores at 64×128 (2,000 steps, 8 + 8 epochs): CRB
          generator with 1/4 of the paper's widths, 3 downsamplings, 3 blocks and
          resize-convolution up-sampling; two PatchGAN scales; pix2pix's L1 term for VGG's.
  tiny    a few steps of a minute network, for tests and smoke checks.
The paper's full settings on Cityscapes are configs/cityscapes.py.
"""

import ml_collections


def get_config(variant: str = '') -> ml_collections.ConfigDict:
  """Returns the experiment config; `variant` is '' or 'tiny'."""
  config = ml_collections.ConfigDict()
  config.task = 'semanticgan'  # A task of semgan_jax.tasks.TASKS: what main.py trains.
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.name = 'streets'  # A paired data set of semgan_jax.data.DATASETS.
  config.data.config_name = '64x128'  # The builder config (resolution) to prepare and read.
  config.data.height = 64
  config.data.width = 128
  config.data.num_classes = 35  # Cityscapes label ids.
  config.data.batch_size = 8  # Global.
  config.data.data_dir = '~/tensorflow_datasets'

  config.model = ml_collections.ConfigDict()
  # 'resnet' (pix2pixHD), 'res2net', 'crb' (the paper) or 'crb_grouped' (a grouped reading of it).
  config.model.block = 'crb'
  config.model.scale = 4  # Groups of the Res2/CRB blocks.
  config.model.g_base_features = 16  # c7s1-k width; the paper's 64.
  config.model.num_downsamplings = 3  # d-layers (the paper's 4).
  config.model.num_blocks = 3  # Residual blocks at the bottleneck (pix2pixHD: 9).
  config.model.d_base_features = 16  # PatchGAN D64-...; the paper's 64.
  config.model.num_d = 2  # Discriminator scales (pix2pixHD: 3 at 1024×512).
  config.model.d_num_layers = 3  # Strided PatchGAN layers (70×70 patches at 3).
  # G's up-sampling: 'transpose' (3×3 stride-2 transposed convolutions, the paper's) or 'resize'
  # (nearest ×2, then a 3×3 convolution, same parameters). Resize here: the transposed ones put
  # a checkerboard at 3.2× the real photos' Nyquist power and double SWD's finest level
  # (RESULTS.md, "The embedded streets default", 3 seeds each).
  config.model.upsample = 'resize'
  config.model.g_ema_decay = 0.0  # EMA of G's weights for samples (off, as in the paper).
  config.model.dtype = 'float32'
  # How convolutions are computed: 'auto' picks im2col/kn2row matrix products per layer shape on
  # CPU, where XLA's own convolution is slow for some shapes, and XLA's everywhere else.
  config.model.conv_lowering = 'auto'
  config.model.remat = False  # Recompute the residual trunk in the backward pass (less memory).

  config.loss = ml_collections.ConfigDict()
  config.loss.adversarial = 'lsgan'  # pix2pixHD's default; or 'bce', 'hinge'.
  config.loss.lambda_feat = 10.0  # Discriminator feature matching (eq. 7's λ3).
  # VGG19 perceptual loss (λ4 = 10 in the paper). Off here: it needs the published ImageNet
  # weights, which a fresh machine does not have (see semgan_jax.weights.vgg19 to convert them).
  config.loss.lambda_vgg = 0.0
  config.loss.vgg_weights = ''  # Converted .npz ('' = ~/.cache/semgan_jax/weights/vgg19.npz).
  # SIPL (λ2 = 1 in the paper): off here, as it needs a frozen ERFNet trained on these photos.
  # configs/streets_erfnet.py trains one (~10 min on 2 cores) and exports it; then run with
  # --config.loss.lambda_sipl=1 --config.loss.erfnet_weights=<its workdir>/erfnet_streets.npz.
  config.loss.lambda_sipl = 0.0
  config.loss.erfnet_weights = ''  # '' = ~/.cache/semgan_jax/weights/erfnet_cityscapes.npz
  # pix2pix's L1 to the paired photo, in place of the paper's VGG term (off here): without
  # either, G fills what the map leaves open (lane and curb marks, bricks, leaves, clouds) with
  # colour noise, 4.1× the real photos' colour high band; at 100 it is 0.7× and L1 0.207 against
  # 0.240 (RESULTS.md, "The embedded streets default", 3 seeds). 0: the paper's loss minus VGG.
  config.loss.lambda_l1 = 100.0
  # Gaussian noise on the photo of every D input (std in [-1, 1] units), decayed linearly to 0
  # over instance_noise_steps (0: constant); std 0: off, as in pix2pixHD. (It hides colour noise
  # from D, so it adds to it here: RESULTS.md, as above.)
  config.loss.instance_noise_std = 0.0
  config.loss.instance_noise_steps = 0

  config.optim = ml_collections.ConfigDict()
  config.optim.lr = 2e-4
  config.optim.b1 = 0.5
  config.optim.b2 = 0.999
  config.optim.eps = 1e-8
  # pix2pixHD's schedule: lr constant for E epochs, then linearly to 0 over E more (100 + 100);
  # all schedules: semgan_jax/train/optim.py. 8 + 8 epochs of the 1,000 pairs (2,000 steps):
  # at 4 + 4 the generator has barely begun to follow the map (RESULTS.md, as above).
  config.optim.schedule = 'epoch_decay'
  config.optim.epochs_constant = 8
  config.optim.epochs_decay = 8

  config.train = ml_collections.ConfigDict()
  config.train.num_steps = 0  # 0: the schedule's length, (E + E) epochs.
  config.train.log_every_steps = 50
  config.train.ckpt_every_steps = 500
  config.train.sample_every_steps = 250
  config.train.num_samples = 8  # Validation pairs shown as label | generated | real rows.
  config.train.max_checkpoints = 3
  # A step with a non-finite loss stops the run (nothing is saved from it); True skips its update
  # instead, counted in train/skipped_nonfinite.
  config.train.skip_nonfinite_steps = False

  # Held-out pairs translated and compared with their photos (fields: PHOTO_DEFAULTS in
  # semgan_jax/evaluation/photo_evaluator.py); at the end of training and by --mode=eval.
  config.evals = ml_collections.ConfigDict()
  config.evals.photos = ml_collections.ConfigDict()
  config.evals.photos.type = 'photos'
  config.evals.photos.every_steps = 2_000  # At the end of training.
  config.evals.photos.split = 'validation'
  config.evals.photos.num_images = 0  # All 100 validation pairs at 64x128.
  config.evals.photos.batch_size = 8
  config.evals.photos.swd = True
  # FID: needs the converted Inception weights (README, "FID weights"); ~4 images/s on a CPU.
  config.evals.photos.fid = False
  # KID from the same Inception features: unbiased, so steadier than FID on 100 images.
  config.evals.photos.kid = False
  # ERFNet mIoU of generated and real photos: needs a segmenter trained on these photos
  # (configs/streets_erfnet.py) given as segmenter_weights.
  config.evals.photos.miou = False
  config.evals.photos.segmenter_weights = ''

  if variant == 'tiny':
    config.data.config_name = '32x64'
    config.data.height = 32
    config.data.width = 64
    config.model.g_base_features = 4
    config.model.num_downsamplings = 2
    config.model.num_blocks = 1
    config.model.d_base_features = 4
    config.model.num_d = 2
    config.train.num_steps = 4
    config.train.log_every_steps = 2
    config.train.ckpt_every_steps = 2
    config.train.sample_every_steps = 2
    config.train.num_samples = 4
    config.evals.photos.every_steps = 4
    config.evals.photos.num_images = 12  # Of the 20 validation pairs; a padded last batch.
  elif variant:
    raise ValueError(f"configs/streets.py: unknown variant {variant!r}; expected '' or 'tiny'.")
  return config
