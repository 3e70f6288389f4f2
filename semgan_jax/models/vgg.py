"""VGG19 features for the perceptual loss: torchvision's `vgg19().features` up to relu5_1.

pix2pixHD's VGGLoss compares five activations of an ImageNet VGG19 — relu1_1, relu2_1, relu3_1,
relu4_1, relu5_1 — so only the first 13 of the 16 convolutions are built (conv5_2..conv5_4 and
the classifier would be computed and thrown away). The layers are torchvision's: 3×3
convolutions with bias, padding 1, ReLU, and 2×2 max pools of stride 2 (floor mode) between the
blocks.

Input normalisation: torchvision's weights were trained on images in [0, 1] normalised with the
ImageNet mean and std, so `VGG19Features` maps generator-space images in [-1, 1] to that input
first (`imagenet_normalize`). pix2pixHD itself feeds [-1, 1] images to the network unnormalised;
we use the normalisation the weights expect instead, so the features are the ones the network
learnt (the loss weights stay pix2pixHD's).

Parameter names are the VGG paper's, `conv<block>_<index>` (`kernel` (3, 3, in, out), `bias`);
`TORCHVISION_INDICES` maps them to torchvision's `features.<i>` modules.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from semgan_jax.models.conv import Conv

# ImageNet statistics of torchvision's pretrained models, for RGB inputs in [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (name, output channels) of VGG19's convolutions; a 2×2 max pool precedes each block's first
# convolution (`conv<b>_1`) from the second block on.
VGG19_CONVS = (
  ('conv1_1', 64), ('conv1_2', 64),
  ('conv2_1', 128), ('conv2_2', 128),
  ('conv3_1', 256), ('conv3_2', 256), ('conv3_3', 256), ('conv3_4', 256),
  ('conv4_1', 512), ('conv4_2', 512), ('conv4_3', 512), ('conv4_4', 512),
  ('conv5_1', 512), ('conv5_2', 512), ('conv5_3', 512), ('conv5_4', 512),
)  # fmt: skip
# The position of each convolution in torchvision's `vgg19().features` Sequential (ReLUs and pools
# take the indices between), e.g. conv2_1 is `features.5`.
TORCHVISION_INDICES = {
  'conv1_1': 0, 'conv1_2': 2,
  'conv2_1': 5, 'conv2_2': 7,
  'conv3_1': 10, 'conv3_2': 12, 'conv3_3': 14, 'conv3_4': 16,
  'conv4_1': 19, 'conv4_2': 21, 'conv4_3': 23, 'conv4_4': 25,
  'conv5_1': 28, 'conv5_2': 30, 'conv5_3': 32, 'conv5_4': 34,
}  # fmt: skip
# The activations pix2pixHD's VGGLoss compares: the ReLU after the first convolution of each block.
FEATURE_LAYERS = ('conv1_1', 'conv2_1', 'conv3_1', 'conv4_1', 'conv5_1')
_NAMES = [name for name, _ in VGG19_CONVS]
# The convolutions `VGG19Features` builds: everything up to the last feature layer.
USED_CONVS = VGG19_CONVS[: _NAMES.index(FEATURE_LAYERS[-1]) + 1]


def imagenet_normalize(images: jax.Array) -> jax.Array:
  """Maps RGB images in [-1, 1] to torchvision's input: ((x + 1) / 2 - mean) / std per channel.

  Args:
    images: (..., 3) images in [-1, 1], the generator's output range.

  Returns:
    The normalised images, same shape and dtype.
  """
  mean = jnp.asarray(IMAGENET_MEAN, images.dtype)
  std = jnp.asarray(IMAGENET_STD, images.dtype)
  return ((images + 1) / 2 - mean) / std


class VGG19Features(nn.Module):
  """VGG19's relu1_1, relu2_1, relu3_1, relu4_1 and relu5_1 activations of [-1, 1] images.

  Attributes:
    dtype: computation dtype (the features come out in it).
    param_dtype: parameter dtype.
    precision: convolution precision; None (the backend's default) suits a training loss.
    conv_lowering: how convolutions are computed (`semgan_jax.models.conv.LOWERINGS`).
  """

  dtype: jnp.dtype = jnp.float32
  param_dtype: jnp.dtype = jnp.float32
  precision: str | jax.lax.Precision | None = None
  conv_lowering: str = 'auto'

  @nn.compact
  def __call__(self, images: jax.Array) -> tuple[jax.Array, ...]:
    """Maps (B, H, W, 3) images in [-1, 1] to the five feature maps.

    Args:
      images: (B, H, W, 3) RGB in [-1, 1]; normalised here as the ImageNet weights expect.

    Returns:
      (relu1_1, relu2_1, relu3_1, relu4_1, relu5_1), of shapes (B, H, W, 64), (B, H/2, W/2, 128),
      (B, H/4, W/4, 256), (B, H/8, W/8, 512) and (B, H/16, W/16, 512) (halvings round down).
    """
    # Normalising in float32 keeps the small ImageNet std divisions exact under bfloat16.
    x = imagenet_normalize(images.astype(jnp.float32)).astype(self.dtype)
    features = []
    for name, channels in USED_CONVS:
      if name.endswith('_1') and name != 'conv1_1':
        x = nn.max_pool(x, (2, 2), strides=(2, 2), padding='VALID')
      x = Conv(
        channels,
        (3, 3),
        padding=((1, 1), (1, 1)),
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        precision=self.precision,
        lowering=self.conv_lowering,
        name=name,
      )(x)
      x = nn.relu(x)
      if name in FEATURE_LAYERS:
        features.append(x)
    return tuple(features)
