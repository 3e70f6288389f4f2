"""SemanticGAN on Cityscapes with the paper's full settings (paper 1, §3.1), and its ablation.

Cityscapes cannot be downloaded automatically (it needs a registered account): put
`leftImg8bit_trainvaltest.zip` and `gtFine_trainvaltest.zip` from
https://www.cityscapes-dataset.com/downloads/ into `data.manual_dir` (default
`<data_dir>/downloads/manual`); the first run prepares them at the config's resolution.

Variants, chosen after a colon: `--config=configs/cityscapes.py:<variant>`
  (none), f  SemanticGAN: CRB generator + SIPL (Table 1, column f).
  a          pix2pixHD baseline: ResNet blocks, no SIPL.
  b          Res2Block, no SIPL (the "improved baseline").
  c          ResNet blocks + SIPL.
  d          Res2Block + SIPL.
  e          CRB, no SIPL.
Append `,small` (e.g. `:e,small`) for 128×256 with 3 downsamplings, for a single-GPU try-out.
The SIPL columns (c, d, f) need erfnet_pytorch's published Cityscapes ERFNet, converted once:
`python -m semgan_jax.weights.erfnet --src=erfnet_pretrained.pth` (the file is at
https://github.com/Eromera/erfnet_pytorch/tree/master/trained_models; nothing is downloaded for
you). Without it they stop with that message; `--config.loss.lambda_sipl=0` runs without SIPL.
"""

import ml_collections

# Table 1 of the paper: column → (residual block, SIPL on).
ABLATION = {
  'a': ('resnet', False),
  'b': ('res2net', False),
  'c': ('resnet', True),
  'd': ('res2net', True),
  'e': ('crb', False),
  'f': ('crb', True),
}


def get_config(variant: str = '') -> ml_collections.ConfigDict:
  """Returns the experiment config; `variant` is a Table 1 column (a-f), optionally ',small'."""
  column, _, size = variant.partition(',')
  column = column or 'f'
  if column not in ABLATION or size not in ('', 'small'):
    raise ValueError(
      f'configs/cityscapes.py: unknown variant {variant!r}; expected one of a-f, optionally '
      "followed by ',small'."
    )
  block, sipl = ABLATION[column]

  config = ml_collections.ConfigDict()
  config.task = 'semanticgan'
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.name = 'cityscapes'
  config.data.config_name = '512x1024'  # 1024×512 (W×H), the paper's resolution.
  config.data.height = 512
  config.data.width = 1024
  config.data.num_classes = 35  # Cityscapes label ids (pix2pixHD's label_nc).
  config.data.batch_size = 1  # pix2pixHD at 1024×512; global, split over devices.
  config.data.data_dir = '~/tensorflow_datasets'
  config.data.manual_dir = ''  # Where the official zips are ('' = <data_dir>/downloads/manual).

  config.model = ml_collections.ConfigDict()
  config.model.block = block
  config.model.scale = 4
  config.model.g_base_features = 64  # c7s1-64, d128, d256, d512, d1024, C1024 ×n, u512 ... u64
  config.model.num_downsamplings = 4
  config.model.num_blocks = 9
  config.model.d_base_features = 64  # D64-D128-D256-D512
  config.model.num_d = 3
  config.model.d_num_layers = 3
  config.model.g_ema_decay = 0.0
  config.model.dtype = 'float32'
  # How convolutions are computed: 'auto' picks im2col/kn2row matrix products per layer shape on
  # CPU, where XLA's own convolution is slow for some shapes, and XLA's everywhere else.
  config.model.conv_lowering = 'auto'
  config.model.remat = False  # Recompute the residual trunk in the backward pass (less memory).

  config.loss = ml_collections.ConfigDict()
  config.loss.adversarial = 'lsgan'  # λ1 = 1
  config.loss.lambda_feat = 10.0  # λ3
  config.loss.lambda_vgg = 10.0  # λ4; needs the converted VGG19 weights (semgan_jax.weights.vgg19)
  config.loss.vgg_weights = ''
  config.loss.lambda_sipl = 1.0 if sipl else 0.0  # λ2; needs the converted ERFNet weights
  config.loss.erfnet_weights = ''  # '' = ~/.cache/semgan_jax/weights/erfnet_cityscapes.npz
  config.loss.lambda_l1 = 0.0  # pix2pix's L1 to the paired photo (not in the paper).
  # Gaussian noise on the photo of every D input (std in [-1, 1] units), decayed linearly to 0
  # over instance_noise_steps (0: constant); std 0: off, as in pix2pixHD.
  config.loss.instance_noise_std = 0.0
  config.loss.instance_noise_steps = 0

  config.optim = ml_collections.ConfigDict()
  config.optim.lr = 2e-4
  config.optim.b1 = 0.5
  config.optim.b2 = 0.999
  config.optim.eps = 1e-8
  config.optim.schedule = 'epoch_decay'  # All schedules: semgan_jax/train/optim.py.
  config.optim.epochs_constant = 100
  config.optim.epochs_decay = 100

  config.train = ml_collections.ConfigDict()
  config.train.num_steps = 0  # 0: 200 epochs of 2,975 images.
  config.train.log_every_steps = 100
  config.train.ckpt_every_steps = 5_000
  config.train.sample_every_steps = 1_000
  config.train.num_samples = 4
  config.train.max_checkpoints = 3
  # A step with a non-finite loss stops the run (nothing is saved from it); True skips its update
  # instead, counted in train/skipped_nonfinite.
  config.train.skip_nonfinite_steps = False

  # Held-out pairs translated and compared with their photos (fields: PHOTO_DEFAULTS in
  # semgan_jax/evaluation/photo_evaluator.py); by --mode=eval (every_steps = 0).
  config.evals = ml_collections.ConfigDict()
  config.evals.photos = ml_collections.ConfigDict()
  config.evals.photos.type = 'photos'
  config.evals.photos.split = 'validation'
  # mIoU of the frozen ERFNet on the generated photos (and on the real ones, its upper bound):
  # needs the converted ERFNet weights, as SIPL. Off so that a config without them runs; turn it
  # on with --config.evals.photos.miou=True.
  config.evals.photos.miou = False
  config.evals.photos.segmenter_weights = ''  # '' = the default cache path, as erfnet_weights

  if size == 'small':
    config.data.config_name = '128x256'
    config.data.height = 128
    config.data.width = 256
    config.model.num_downsamplings = 3
    config.model.num_d = 2
    config.data.batch_size = 8
  return config
