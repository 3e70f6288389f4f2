"""The tfds builder of the procedural streets data set, one config per resolution."""

import tensorflow_datasets as tfds
from etils import epath

from semgan_jax.data import paired
from semgan_jax.data.streets.constants import (
  CLASS_IDS,
  DEFAULT_SEED,
  SMALL_SPLITS,
  SPLITS,
  TINY_SPLITS,
)
from semgan_jax.data.streets.scene import render_street

_DESCRIPTION = f"""\
Procedural street scenes: label maps of Cityscapes label ids ({len(CLASS_IDS)} of the 35 classes: \
ego vehicle, road, sidewalk, building, pole, traffic light, traffic sign, vegetation, terrain, \
sky, person, car), instance maps in the Cityscapes convention (label_id * 1000 + k for cars and \
persons, the label id elsewhere) and photos rendered from the label maps with per-class textures. \
Every example is a pure function of (seed {DEFAULT_SEED}, split, index); nothing is downloaded. \
Splits: {SPLITS} at 128x256, the first {SMALL_SPLITS} of them at 64x128 and at 32x64 \
(config 32x64_1000), and the first {TINY_SPLITS} at 32x64.
"""


class StreetsConfig(tfds.core.BuilderConfig):
  """A resolution of the streets data set, with its split sizes."""

  def __init__(
    self, *, height: int, width: int, splits: dict[str, int], suffix: str = '', **kwargs
  ):
    super().__init__(name=f'{height}x{width}{suffix}', **kwargs)
    self.height = height
    self.width = width
    self.splits = dict(splits)


class Streets(tfds.core.GeneratorBasedBuilder):
  """Procedural street scenes rendered from DEFAULT_SEED (no download)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  # The same scenes at every resolution (the layout is drawn in resolution-independent units).
  BUILDER_CONFIGS = [
    StreetsConfig(height=128, width=256, splits=SPLITS, description='128x256 (H x W), default.'),
    StreetsConfig(height=64, width=128, splits=SMALL_SPLITS, description='64x128, CPU runs.'),
    StreetsConfig(height=32, width=64, splits=TINY_SPLITS, description='32x64, for tests.'),
    StreetsConfig(
      height=32,
      width=64,
      splits=SMALL_SPLITS,
      suffix='_1000',
      description="32x64 with 64x128's splits, for the many short runs of a reproduction table.",
    ),
  ]
  # See ColoredShapes.code_path: tfds cannot find the file through importlib_resources here.
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    return tfds.core.DatasetInfo(
      builder=self,
      description=_DESCRIPTION,
      features=paired.paired_features(config.height, config.width, png=False),
      supervised_keys=None,
      homepage=None,
      # Storage order == index order, so data-source element i is render_street(i, split=...).
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything is rendered locally.
    return {
      split: self._generate_examples(split, n) for split, n in self.builder_config.splits.items()
    }

  def _generate_examples(self, split: str, num_examples: int):
    config = self.builder_config

    def make(i):
      return render_street(i, split=split, height=config.height, width=config.width)

    yield from enumerate(paired.map_in_order(make, range(num_examples)))
