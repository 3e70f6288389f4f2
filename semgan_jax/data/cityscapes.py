"""Cityscapes (gtFine) photos, label-id maps and instance maps, read from the official archives."""

import os

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from semgan_jax.data import archives, paired
from semgan_jax.data.archives import resize_nearest  # noqa: F401 (part of this module's API)

# The label set lives in its own module (no tfds or PIL); its names are part of this one's API.
from semgan_jax.data.cityscapes_labels import (  # noqa: F401
  CLASS_NAMES,
  IGNORE_TRAIN_ID,
  NUM_CLASSES,
  NUM_TRAIN_IDS,
  PALETTE,
  THING_IDS,
  TRAIN_ID_NAMES,
  TRAIN_IDS,
  UNUSED_ID,
)

DOWNLOAD_URL = 'https://www.cityscapes-dataset.com/downloads/'
PHOTO_ARCHIVE = 'leftImg8bit_trainvaltest.zip'
LABEL_ARCHIVE = 'gtFine_trainvaltest.zip'
# tfds split name -> the Cityscapes folder. The test split's labels are withheld (all void).
SPLIT_FOLDERS = {'train': 'train', 'validation': 'val'}
NUM_EXAMPLES = {'train': 2975, 'validation': 500}

_PHOTO_SUFFIX = '_leftImg8bit.png'
_LABEL_SUFFIX = '_gtFine_labelIds.png'
_INSTANCE_SUFFIX = '_gtFine_instanceIds.png'

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Cityscapes needs a (free) account, so it cannot be downloaded for you. Log in at
{DOWNLOAD_URL} and download
  - {PHOTO_ARCHIVE}  (package 3, "leftImg8bit_trainvaltest.zip (11GB)")
  - {LABEL_ARCHIVE}  (package 1, "gtFine_trainvaltest.zip (241MB)")
into the manual directory. Either leave them zipped or extract them there, giving
  leftImg8bit/{{train,val}}/<city>/<city>_<seq>_<frame>{_PHOTO_SUFFIX}
  gtFine/{{train,val}}/<city>/<city>_<seq>_<frame>{_LABEL_SUFFIX}
  gtFine/{{train,val}}/<city>/<city>_<seq>_<frame>{_INSTANCE_SUFFIX}
"""

_DESCRIPTION = """\
Cityscapes fine annotations (2975 train and 500 validation frames): the left 8-bit \
photo, the map of the 35 Cityscapes label ids (0 to 33 used) and the instance map \
(label_id * 1000 + k on countable objects, the label id elsewhere), resized to the config's \
resolution: photos with PIL's antialiased bilinear filter, label and instance maps with nearest \
neighbour (never interpolated).
"""

_CITATION = """\
@inproceedings{Cordts2016Cityscapes,
  title={The Cityscapes Dataset for Semantic Urban Scene Understanding},
  author={Cordts, Marius and Omran, Mohamed and Ramos, Sebastian and Rehfeld, Timo and \
Enzweiler, Markus and Benenson, Rodrigo and Franke, Uwe and Roth, Stefan and Schiele, Bernt},
  booktitle={Proc. of the IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  year={2016}
}
"""


class CityscapesFilesError(FileNotFoundError):
  """The Cityscapes files are missing from the manual directory, or incomplete."""


def missing_files_message(manual_dir) -> str:
  """The error text for a manual directory without the Cityscapes files."""
  return (
    f'Cityscapes files not found in the manual directory {os.fspath(manual_dir)!r}.\n'
    f'{MANUAL_DOWNLOAD_INSTRUCTIONS}'
    'Then call load_source(..., manual_dir=<that directory>) (by default '
    '<data_dir>/downloads/manual).'
  )


def read_example(
  photo: bytes, label: bytes, instance: bytes, *, height: int, width: int, names: tuple[str, ...]
) -> dict[str, np.ndarray]:
  """Decodes, checks and resizes one Cityscapes triple of PNG files.

  Args:
    photo: Bytes of the `_leftImg8bit.png` photo.
    label: Bytes of the `_gtFine_labelIds.png` map.
    instance: Bytes of the `_gtFine_instanceIds.png` map.
    height: Output height.
    width: Output width.
    names: Locations of the three files, for error messages.

  Returns:
    A dict with `image` uint8 (height, width, 3), `label` uint8 (height, width) and `instance`
    int32 (height, width).

  Raises:
    ValueError: If a file cannot be decoded, the maps' size differs from the photo's, or a label
      id is outside [0, NUM_CLASSES).
  """
  photo_image = archives.decode(photo, names[0]).convert('RGB')
  label_image = archives.decode(label, names[1])
  instance_image = archives.decode(instance, names[2])
  for image, name in ((label_image, names[1]), (instance_image, names[2])):
    if image.size != photo_image.size:
      raise ValueError(
        f'{name} is {image.size[0]}x{image.size[1]} (W x H) but its photo {names[0]} is '
        f'{photo_image.size[0]}x{photo_image.size[1]}'
      )
  label_ids = np.asarray(label_image)
  if label_ids.ndim != 2:
    raise ValueError(f'{names[1]} is not a single-channel label-id map (mode {label_image.mode})')
  if label_ids.size and int(label_ids.max()) >= NUM_CLASSES:
    raise ValueError(f'{names[1]} holds label id {int(label_ids.max())} >= {NUM_CLASSES}')
  # instanceIds files are 16-bit PNGs, which PIL opens as 'I;16' or 'I' depending on its version.
  instance_ids = np.asarray(instance_image).astype(np.int32)
  if photo_image.size != (width, height):
    photo_image = photo_image.resize((width, height), Image.Resampling.BILINEAR)
  return {
    'image': np.asarray(photo_image, dtype=np.uint8),
    'label': resize_nearest(label_ids.astype(np.uint8), height, width),
    'instance': resize_nearest(instance_ids, height, width),
  }


# skip_registration: tfds ships a (TensorFlow-based) builder of the same name; registering ours
# would clash with it the moment both are imported. We never look builders up by name.
class Cityscapes(archives.ManualBuilder, skip_registration=True):
  """Cityscapes gtFine train and validation, from the archives in a manual directory."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = [
    archives.ResolutionConfig(height=512, width=1024, description='512x1024 (H x W), the paper.'),
    archives.ResolutionConfig(height=256, width=512, description='256x512 (H x W).'),
    archives.ResolutionConfig(
      height=128, width=256, description='128x256 (H x W), as the streets set.'
    ),
    archives.ResolutionConfig(
      height=128, width=128, description="128x128 (H x W): SemGAN's label maps (paper 2)."
    ),
    archives.ResolutionConfig(height=32, width=64, description='32x64 (H x W), for tests.'),
  ]
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    return tfds.core.DatasetInfo(
      builder=self,
      description=_DESCRIPTION,
      features=paired.paired_features(config.height, config.width, png=True),
      supervised_keys=None,
      homepage='https://www.cityscapes-dataset.com/',
      citation=_CITATION,
      # Storage order == sorted <city>_<seq>_<frame> order, the same at every resolution.
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # The files come from self.manual_dir, checked here before anything is written.
    pairs = find_pairs(self.manual_dir)
    return {split: self._generate_examples(pairs[split]) for split in SPLIT_FOLDERS}

  def _generate_examples(self, triples):
    config = self.builder_config
    photos = archives.Reader(archives.Tree(self.manual_dir, 'leftImg8bit', PHOTO_ARCHIVE))
    labels = archives.Reader(archives.Tree(self.manual_dir, 'gtFine', LABEL_ARCHIVE))

    def make(triple):
      photo, label, instance = triple
      names = (
        photos.tree.describe(photo),
        labels.tree.describe(label),
        labels.tree.describe(instance),
      )
      example = read_example(
        photos.read(photo),
        labels.read(label),
        labels.read(instance),
        height=config.height,
        width=config.width,
        names=names,
      )
      example['image'] = paired.encode_png(example['image'])
      return example

    try:
      yield from enumerate(paired.map_in_order(make, triples))
    finally:
      photos.close()
      labels.close()


def find_pairs(manual_dir) -> dict[str, list[tuple[str, str, str]]]:
  """Matches photos with their label and instance maps by <city>_<seq>_<frame>.

  Args:
    manual_dir: The directory with the archives or extracted folders.

  Returns:
    {tfds split: [(photo, labelIds, instanceIds), ...]} in sorted stem order; the paths are
    relative to manual_dir (members of the zip when the folder is absent).

  Raises:
    CityscapesFilesError: If the files are missing (the message says what to download and where
      to put it), a split is empty, or a photo lacks its maps or a map its photo (naming the
      files).
  """
  manual_dir = epath.Path(manual_dir)
  trees = (
    archives.Tree(manual_dir, 'leftImg8bit', PHOTO_ARCHIVE),
    archives.Tree(manual_dir, 'gtFine', LABEL_ARCHIVE),
  )
  absent = [t for t in trees if t.locate() is None]
  if absent:
    wanted = ', '.join(f'{t.archive} (or its extracted {t.folder}/ folder)' for t in absent)
    raise CityscapesFilesError(f'Missing {wanted}.\n{missing_files_message(manual_dir)}')
  photos, labels = archives.Reader(trees[0]), archives.Reader(trees[1])
  try:
    out = {}
    for split, folder in SPLIT_FOLDERS.items():
      photo_names = archives.by_stem(photos.list(folder), _PHOTO_SUFFIX)
      label_files = labels.list(folder)
      label_names = archives.by_stem(label_files, _LABEL_SUFFIX)
      instance_names = archives.by_stem(label_files, _INSTANCE_SUFFIX)
      if not photo_names:
        raise CityscapesFilesError(
          f'No photos in {trees[0].describe(f"leftImg8bit/{folder}/")} (expected '
          f'<city>/<city>_<seq>_<frame>{_PHOTO_SUFFIX}); the download looks incomplete.\n'
          f'{missing_files_message(manual_dir)}'
        )
      problems = []
      for stem in sorted(photo_names.keys() - label_names.keys()):
        problems.append(f'photo {trees[0].describe(photo_names[stem])} has no {_LABEL_SUFFIX}')
      for stem in sorted(photo_names.keys() - instance_names.keys()):
        problems.append(f'photo {trees[0].describe(photo_names[stem])} has no {_INSTANCE_SUFFIX}')
      for stem in sorted((label_names.keys() | instance_names.keys()) - photo_names.keys()):
        name = label_names.get(stem) or instance_names[stem]
        problems.append(f'{trees[1].describe(name)} has no photo {stem}{_PHOTO_SUFFIX}')
      if problems:
        shown = '\n  '.join(problems[:10])
        more = f'\n  ... and {len(problems) - 10} more' if len(problems) > 10 else ''
        raise CityscapesFilesError(
          f'Unmatched Cityscapes files in {os.fspath(manual_dir)!r} ({split}):\n  {shown}{more}'
        )
      out[split] = [
        (photo_names[s], label_names[s], instance_names[s]) for s in sorted(photo_names)
      ]
    return out
  finally:
    photos.close()
    labels.close()
