"""Data sets and input pipelines: label maps, and paired label maps and photos."""

from semgan_jax.data.cityscapes import Cityscapes, CityscapesFilesError
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
from semgan_jax.data.facades import Facades, FacadesFilesError
from semgan_jax.data.paired import create_paired_iterator
from semgan_jax.data.pipeline import (
  DATASETS,
  DatasetSpec,
  PreparedDataError,
  colorize,
  create_input_iterator,
  get_dataset_spec,
  load_source,
)
from semgan_jax.data.streets import Streets, render_street

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
  'Cityscapes',
  'CityscapesFilesError',
  'ColoredShapes',
  'DatasetSpec',
  'Facades',
  'FacadesFilesError',
  'PreparedDataError',
  'Streets',
  'colorize',
  'create_input_iterator',
  'create_paired_iterator',
  'get_dataset_spec',
  'load_source',
  'render_colored_shapes',
  'render_street',
]
