"""The label-to-photo generator's input: one-hot label map ⊕ instance-boundary map (pix2pixHD)."""

import jax
import jax.numpy as jnp
import numpy as np


def _as_bhw(x, what: str):
  """Accepts (B, H, W) or (B, H, W, 1) id maps and returns (B, H, W)."""
  if x.ndim == 4 and x.shape[-1] == 1:
    x = x[..., 0]
  if x.ndim != 3:
    raise ValueError(f'{what} must be (B, H, W) or (B, H, W, 1), got shape {x.shape}.')
  if not jnp.issubdtype(x.dtype, jnp.integer):
    raise ValueError(f'{what} must hold integer ids, got dtype {x.dtype}.')
  return x


def instance_boundary_map(instance_ids, dtype=jnp.float32) -> jax.Array:
  """pix2pixHD's edge map: 1 where any 4-neighbour has a different instance id, else 0.

  Both pixels on either side of an instance boundary are marked, so boundaries are two pixels
  thick; image borders are not edges. Works under `jax.jit`.

  Args:
    instance_ids: (B, H, W) or (B, H, W, 1) integer instance ids.
    dtype: dtype of the result.

  Returns:
    (B, H, W, 1) array of 0s and 1s.
  """
  ids = _as_bhw(jnp.asarray(instance_ids), 'instance_ids')
  across = ids[:, :, 1:] != ids[:, :, :-1]  # (B, H, W-1): pixel j differs from pixel j+1.
  down = ids[:, 1:, :] != ids[:, :-1, :]  # (B, H-1, W): row i differs from row i+1.
  no_pad = (0, 0)
  edge = (
    jnp.pad(across, (no_pad, no_pad, (1, 0)))  # differs from its left neighbour
    | jnp.pad(across, (no_pad, no_pad, (0, 1)))  # differs from its right neighbour
    | jnp.pad(down, (no_pad, (1, 0), no_pad))  # differs from the one above
    | jnp.pad(down, (no_pad, (0, 1), no_pad))  # differs from the one below
  )
  return edge[..., None].astype(dtype)


def label_to_generator_input(labels, instances, num_classes: int, dtype=jnp.float32) -> jax.Array:
  """Concatenates the one-hot label map and the instance-boundary map on the channel axis.

  Ids are checked against `[0, num_classes)` when `labels` holds concrete values (a NumPy array or
  an addressable `jax.Array` outside `jit`). Under `jax.jit` they cannot be checked: an
  out-of-range id then silently becomes an all-zero one-hot vector, so validate in the input
  pipeline.

  Args:
    labels: (B, H, W) or (B, H, W, 1) integer label ids in [0, num_classes).
    instances: (B, H, W) or (B, H, W, 1) integer instance ids, same batch and spatial size.
    num_classes: number of label ids (35 for Cityscapes' label ids).
    dtype: dtype of the result.

  Returns:
    (B, H, W, num_classes + 1) array: channels [0, num_classes) are the one-hot labels, the last
    is the boundary map.
  """
  labels = _as_bhw(labels, 'labels')
  if not isinstance(labels, jax.core.Tracer) and (
    not isinstance(labels, jax.Array) or labels.is_fully_addressable
  ):
    values = np.asarray(labels)
    if values.size and (values.min() < 0 or values.max() >= num_classes):
      raise ValueError(
        f'label ids must lie in [0, {num_classes}); got ids from {values.min()} to {values.max()}.'
      )
  boundaries = instance_boundary_map(instances, dtype)
  if boundaries.shape[:3] != labels.shape:
    raise ValueError(f'labels {labels.shape} and instances {boundaries.shape[:3]} differ in size.')
  return jnp.concatenate([jax.nn.one_hot(labels, num_classes, dtype=dtype), boundaries], axis=-1)
