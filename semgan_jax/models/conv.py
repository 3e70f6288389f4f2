"""2-D convolutions with a choice of lowering: XLA's own, im2col or kn2row matrix products.

XLA:CPU computes some convolutions far below the machine's matmul speed, and differentiates some
much worse still: the kernel gradient of a stride-1 4×4 convolution with 256 inputs on a 17×33
map (the PatchGAN's fourth layer at 256×128) takes 0.7 s where the same numbers as one matrix
product take 7 ms, and a 3×3 1024→1024 convolution on the residual trunk's 8×16 map runs at a
third of the matmul speed. Two rewrites of the same sum turn each convolution into one large
matrix product plus data movement, and JAX differentiates them into matrix products too:

* **im2col**: the `kh·kw` shifted (strided) views of the padded input are concatenated on the
  channel axis and multiplied by the kernel reshaped to `(kh·kw·Cin, Cout)`. Best where the
  output map is small and the channels many (the patch matrix is then small).
* **kn2row**: the padded input is multiplied by all taps at once, `(Cin, kh·kw·Cout)`, and the
  `kh·kw` shifted slices of the product are summed. Best for stride 1 with few taps and for
  narrow outputs (an RGB head, a one-channel logit map), where the product is small.

`choose_lowering` picks one per layer shape on the CPU backend, from measurements on the
SemanticGAN networks (`benchmarks/conv_lowering.py` prints them); every other backend keeps XLA's
own convolution, which cuDNN and the TPU compiler handle. All lowerings compute the same sum and
give the same values and gradients to float rounding; the parameters are those of
`flax.linen.Conv`, so checkpoints do not depend on the lowering.
"""

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

LOWERINGS = ('auto', 'xla', 'im2col', 'kn2row')

# CPU rule thresholds (see `choose_lowering`).
_SMALL_OUTPUT_PIXELS = 1024  # output pixels (batch included) up to which im2col wins
_KN2ROW_MAX_TAPS = 4  # kn2row's sum of shifted slices costs taps × the product: 2×2 at most
_NARROW_OUTPUT = 8  # output channels up to which kn2row wins at any tap count (large maps)
_LARGE_MAP = 16384  # output pixels an image from which narrow outputs use kn2row
# kn2row's (pixels, taps, Cout) product is read and written once per tap: past ~100 MB memory
# traffic makes it slower than XLA's convolution (VGG's first block: faster at 256×128, 4× slower
# at 512×256).
_KN2ROW_MAX_BYTES = 128 << 20


def _padding_pairs(padding, kernel_size: Sequence[int], strides: Sequence[int], in_size):
  """Flax/lax padding ('SAME', 'VALID', an int or pairs) as explicit (before, after) pairs."""
  if isinstance(padding, str):
    return lax.padtype_to_pads(in_size, kernel_size, strides, padding.upper())
  if isinstance(padding, int):
    return [(padding, padding)] * 2
  return [(int(p), int(p)) if isinstance(p, int) else (int(p[0]), int(p[1])) for p in padding]


def _output_size(n: int, k: int, s: int, pad: tuple[int, int]) -> int:
  return (n + pad[0] + pad[1] - k) // s + 1


def choose_lowering(
  input_shape: Sequence[int],
  kernel_shape: Sequence[int],
  strides: Sequence[int],
  padding_pairs: Sequence[tuple[int, int]],
  backend: str | None = None,
) -> str:
  """The lowering 'auto' resolves to for an NHWC input and HWIO kernel on `backend`.

  On CPU, in this order (each rule from a measured case, `benchmarks/conv_lowering.py`):
    1. im2col when the kernel is larger than the output map (SemGAN's 11×11 kernels on 8×8 and
       4×4 maps: XLA takes seconds where the matrix product takes 0.1 s);
    2. kn2row for narrow outputs (≤ 8 channels) on large maps (≥ 16384 output pixels an image:
       an RGB head at 256×128 is 8× faster; on small maps XLA's is faster);
    3. im2col when the output, batch included, has at most 1024 pixels (small maps with many
       channels, where XLA's convolution and above all its kernel gradient are slow);
    4. kn2row for other stride-1 convolutions of at most 2×2 taps (the phases of the
       transposed convolution; 3×3 layers such as VGG's are faster with XLA's);
    5. im2col for stride-1 convolutions whose output is larger than their input, with at least
       64 input channels (the PatchGAN's 4×4 layer with padding 2: XLA's kernel gradient is
       50-100× slower than the matrix product);
    6. XLA's own convolution otherwise (strided layers, the 7×7 stem, large maps).
  kn2row is only chosen while its (pixels, taps, Cout) product stays under 128 MiB. On every
  other backend (GPU, TPU): XLA's own.
  """
  backend = backend or jax.default_backend()
  if backend != 'cpu':
    return 'xla'
  batch, in_h, in_w, cin = input_shape
  kh, kw, _, cout = kernel_shape
  out_h = _output_size(in_h, kh, strides[0], padding_pairs[0])
  out_w = _output_size(in_w, kw, strides[1], padding_pairs[1])
  taps = kh * kw
  padded_pixels = batch * (in_h + sum(padding_pairs[0])) * (in_w + sum(padding_pairs[1]))
  kn2row_fits = 4 * padded_pixels * taps * cout <= _KN2ROW_MAX_BYTES
  stride_1 = tuple(strides) == (1, 1)
  if kh > out_h or kw > out_w:
    return 'im2col'
  if stride_1 and cout <= _NARROW_OUTPUT and out_h * out_w >= _LARGE_MAP and kn2row_fits:
    return 'kn2row'
  if batch * out_h * out_w <= _SMALL_OUTPUT_PIXELS:
    return 'im2col'
  if stride_1 and taps <= _KN2ROW_MAX_TAPS and kn2row_fits:
    return 'kn2row'
  if stride_1 and (out_h > in_h or out_w > in_w) and cin >= 64:
    return 'im2col'
  return 'xla'


def _strided_window(x: jax.Array, i: int, j: int, strides, out_h: int, out_w: int) -> jax.Array:
  """x[:, i::sh, j::sw, :] limited to out_h × out_w positions (x already padded)."""
  sh, sw = strides
  limit = (x.shape[0], i + sh * (out_h - 1) + 1, j + sw * (out_w - 1) + 1, x.shape[3])
  return lax.slice(x, (0, i, j, 0), limit, (1, sh, sw, 1))


def conv2d(
  x: jax.Array,
  kernel: jax.Array,
  strides: Sequence[int] = (1, 1),
  padding='VALID',
  lowering: str = 'auto',
  precision=None,
) -> jax.Array:
  """A cross-correlation of (B, H, W, Cin) with a (kh, kw, Cin, Cout) kernel, as `lax.conv`.

  Args:
    x: NHWC input.
    kernel: HWIO kernel.
    strides: (sh, sw).
    padding: 'SAME', 'VALID', an int, or ((top, bottom), (left, right)) zero padding.
    lowering: 'auto' (`choose_lowering`), 'xla', 'im2col' or 'kn2row'.
    precision: `lax.Precision` of the products (None: the backend's default).

  Returns:
    (B, H', W', Cout), equal to `lax.conv_general_dilated(x, kernel, strides, padding)` in NHWC.
  """
  if lowering not in LOWERINGS:
    raise ValueError(f'conv lowering={lowering!r}; expected one of {LOWERINGS}.')
  if x.ndim != 4 or kernel.ndim != 4 or x.shape[-1] != kernel.shape[2]:
    raise ValueError(
      f'conv2d: input {x.shape} (B, H, W, Cin) and kernel {kernel.shape} (kh, kw, Cin, Cout) '
      'do not match.'
    )
  strides = tuple(int(s) for s in strides)
  kh, kw, cin, cout = kernel.shape
  pads = _padding_pairs(padding, (kh, kw), strides, x.shape[1:3])
  if lowering == 'auto':
    lowering = choose_lowering(x.shape, kernel.shape, strides, pads)
  if lowering == 'xla':
    return lax.conv_general_dilated(
      x, kernel, strides, pads, dimension_numbers=('NHWC', 'HWIO', 'NHWC'), precision=precision
    )
  out_h = _output_size(x.shape[1], kh, strides[0], pads[0])
  out_w = _output_size(x.shape[2], kw, strides[1], pads[1])
  # lax.pad, not jnp.pad: negative pads crop (the transposed convolution's phases use them).
  zero = jnp.zeros((), x.dtype)
  x = lax.pad(x, zero, ((0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)))
  if lowering == 'im2col':
    patches = jnp.concatenate(
      [_strided_window(x, i, j, strides, out_h, out_w) for i in range(kh) for j in range(kw)],
      axis=-1,
    )
    return jnp.einsum(
      'bhwk,ko->bhwo', patches, kernel.reshape(kh * kw * cin, cout), precision=precision
    )
  # kn2row: every input pixel times every tap, then each output sums its taps' shifted slices.
  taps = kernel.reshape(kh * kw, cin, cout).transpose(1, 0, 2)
  products = jnp.einsum('bhwc,cto->bhwto', x, taps, precision=precision)
  return _sum_tap_windows(products, kw, strides, (out_h, out_w))


def _tap_windows_sum(products, kw, strides, out_size):
  y = None
  for t in range(products.shape[3]):
    i, j = divmod(t, kw)
    term = _strided_window(products[:, :, :, t, :], i, j, strides, *out_size)
    y = term if y is None else y + term
  return y


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _sum_tap_windows(products, kw, strides, out_size):
  """Σ_t products[:, i_t::s, j_t::s, t, :] over the taps t = (i_t, j_t), kn2row's last step."""
  return _tap_windows_sum(products, kw, strides, out_size)


def _sum_tap_windows_fwd(products, kw, strides, out_size):
  return _tap_windows_sum(products, kw, strides, out_size), products.shape


def _sum_tap_windows_bwd(kw, strides, out_size, shape, grad):
  # The transpose: tap t = (i, j) of padded pixel (h, w) received grad[h - i, w - j]. One stack of
  # shifted windows of the padded gradient (an im2col of it), not the per-tap pad-and-add that
  # autodiff of the slices gives, which XLA:CPU runs ~8× slower (a 7×7 RGB head: 0.75 s).
  if tuple(strides) != (1, 1):
    _, vjp = jax.vjp(
      lambda p: _tap_windows_sum(p, kw, strides, out_size), jnp.zeros(shape, grad.dtype)
    )
    return vjp(grad)
  batch, height, width, num_taps, _ = shape
  kh = num_taps // kw
  padded = jnp.pad(grad, ((0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1), (0, 0)))
  windows = []
  for t in range(num_taps):
    i, j = divmod(t, kw)
    start = (0, kh - 1 - i, kw - 1 - j, 0)
    limit = (batch, start[1] + height, start[2] + width, grad.shape[3])
    windows.append(lax.slice(padded, start, limit))
  return (jnp.stack(windows, axis=3),)


_sum_tap_windows.defvjp(_sum_tap_windows_fwd, _sum_tap_windows_bwd)


class Conv2DModule(nn.Module):
  """The parameters and dtype handling of a 2-D NHWC convolution layer, as `flax.linen.Conv`.

  Subclasses say how the (promoted) input and kernel are convolved (`convolve`); the parameter
  names, shapes and initialisers are Flax's, so checkpoints do not depend on the computation.
  """

  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] = (1, 1)
  padding: str | int | Sequence[tuple[int, int]] = 'SAME'
  use_bias: bool = True
  kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
  bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()
  dtype: jnp.dtype | None = None
  param_dtype: jnp.dtype = jnp.float32
  lowering: str = 'auto'

  def convolve(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
    raise NotImplementedError

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim != 4:
      raise ValueError(f'{type(self).__name__} expects (B, H, W, C) inputs; got shape {x.shape}.')
    kernel_shape = (*self.kernel_size, x.shape[-1], self.features)
    kernel = self.param('kernel', self.kernel_init, kernel_shape, self.param_dtype)
    bias = (
      self.param('bias', self.bias_init, (self.features,), self.param_dtype)
      if self.use_bias
      else None
    )
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = self.convolve(x, kernel)
    if bias is not None:
      y = y + bias
    return y


class Conv(Conv2DModule):
  """`flax.linen.Conv` for 2-D NHWC inputs, computed by `conv2d` with a chosen lowering.

  Same fields (those this project uses), parameter names, shapes and initialisers as the Flax
  layer, so checkpoints are interchangeable; `lowering` only changes how the sum is computed.
  """

  precision: str | lax.Precision | None = None

  def convolve(self, x: jax.Array, kernel: jax.Array) -> jax.Array:
    return conv2d(x, kernel, self.strides, self.padding, self.lowering, self.precision)
