"""Data sets and input pipelines for semantic label maps."""

from semgan_jax.data.colored_shapes import (
  CIRCLE_RADIUS,
  CLASS_NAMES,
  DEFAULT_SEED,
  IMAGE_SIZE,
  NUM_CLASSES,
  NUM_EXAMPLES,
  PALETTE,
  SQUARE_SIZE,
  ColoredShapes,
  render_colored_shapes,
)
from semgan_jax.data.pipeline import (
  DATASETS,
  DatasetSpec,
  colorize,
  create_input_iterator,
  get_dataset_spec,
  load_source,
)

__all__ = [
  'CIRCLE_RADIUS',
  'CLASS_NAMES',
  'DATASETS',
  'DEFAULT_SEED',
  'IMAGE_SIZE',
  'NUM_CLASSES',
  'NUM_EXAMPLES',
  'PALETTE',
  'SQUARE_SIZE',
  'ColoredShapes',
  'DatasetSpec',
  'colorize',
  'create_input_iterator',
  'get_dataset_spec',
  'load_source',
  'render_colored_shapes',
]
