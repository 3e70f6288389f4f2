"""CMP Facades (base + extended, 606 rectified facades, 12 classes), read from the official zips.

Paper 2 (§5.0.3) trains SemGAN on its label maps at 128×128. The database ships each facade as
`cmp_<b|x><NNNN>.jpg` (the photo), `.png` (the annotation: a palette image whose pixel values are
1 to 12, one per class) and `.xml` (the annotated rectangles, not read here).
"""

import os

import numpy as np
import tensorflow_datasets as tfds
from etils import epath
from PIL import Image

from semgan_jax.data import archives, paired

DOWNLOAD_URL = 'https://cmp.felk.cvut.cz/~tylecr1/facade/'
# (archive, the folder its members sit in): base is 378 facades, extended 228.
ARCHIVES = (('CMP_facade_DB_base.zip', 'base'), ('CMP_facade_DB_extended.zip', 'extended'))
NUM_EXAMPLES = 606

# In the order of the database's label_names.txt: pixel value v of an annotation is class v - 1.
CLASS_NAMES = (
  'background',
  'facade',
  'window',
  'door',
  'cornice',
  'sill',
  'balcony',
  'blind',
  'deco',
  'molding',
  'pillar',
  'shop',
)
NUM_CLASSES = len(CLASS_NAMES)
# Ours: a jet-like ramp in class order (dark blue background to dark red shop), as the
# database's own colour images look; not read from the files.
PALETTE = np.array(
  [
    (0, 0, 170),
    (0, 0, 255),
    (0, 85, 255),
    (0, 170, 255),
    (0, 255, 255),
    (85, 255, 170),
    (170, 255, 85),
    (255, 255, 0),
    (255, 170, 0),
    (255, 85, 0),
    (255, 0, 0),
    (170, 0, 0),
  ],
  np.uint8,
)

MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
Download the CMP Facade Database's two archives from {DOWNLOAD_URL}
  - {ARCHIVES[0][0]}  (378 facades)
  - {ARCHIVES[1][0]}  (228 facades)
into the manual directory. Either leave them zipped or extract them there, giving
  base/cmp_b<NNNN>.jpg and base/cmp_b<NNNN>.png
  extended/cmp_x<NNNN>.jpg and extended/cmp_x<NNNN>.png
"""

_DESCRIPTION = """\
The CMP Facade Database (606 rectified facades of several cities and styles, base and extended \
sets together): the photo and the map of its 12 classes (0 background to 11 shop; the files' \
pixel value minus one), resized to the config's resolution: photos with PIL's antialiased \
bilinear filter, label maps with nearest neighbour. Facades of any aspect ratio are squeezed to \
the square, as paper 2 does.
"""

_CITATION = """\
@inproceedings{Tylecek13,
  author = {Radim Tyle{\\v c}ek and Radim {\\v S}{\\'a}ra},
  title = {Spatial Pattern Templates for Recognition of Objects with Regular Structure},
  booktitle = {Proc. GCPR},
  year = {2013},
  address = {Saarbrucken, Germany},
}
"""


class FacadesFilesError(FileNotFoundError):
  """The CMP Facades files are missing from the manual directory, or incomplete."""


def missing_files_message(manual_dir) -> str:
  """The error text for a manual directory without the CMP Facades files."""
  return (
    f'CMP Facades files not found in the manual directory {os.fspath(manual_dir)!r}.\n'
    f'{MANUAL_DOWNLOAD_INSTRUCTIONS}'
    'Then call load_source(..., manual_dir=<that directory>) (by default '
    '<data_dir>/downloads/manual), or set config.data.manual_dir.'
  )


def read_example(
  photo: bytes, label: bytes, *, height: int, width: int, names: tuple[str, str]
) -> dict[str, np.ndarray]:
  """Decodes, checks and resizes one facade (its `.jpg` photo and `.png` annotation).

  Args:
    photo: Bytes of the photo.
    label: Bytes of the annotation.
    height: Output height.
    width: Output width.
    names: Locations of the two files, for error messages.

  Returns:
    A dict with `image` uint8 (height, width, 3) and `label` uint8 (height, width), class ids
    0 to NUM_CLASSES - 1.

  Raises:
    ValueError: If a file cannot be decoded, the annotation is not a single-channel map, its size
      differs from the photo's, or it holds a value outside [1, NUM_CLASSES].
  """
  photo_image = archives.decode(photo, names[0]).convert('RGB')
  label_image = archives.decode(label, names[1])
  if label_image.size != photo_image.size:
    raise ValueError(
      f'{names[1]} is {label_image.size[0]}x{label_image.size[1]} (W x H) but its photo '
      f'{names[0]} is {photo_image.size[0]}x{photo_image.size[1]}'
    )
  values = np.asarray(label_image)
  if values.ndim != 2:
    raise ValueError(
      f'{names[1]} is not a single-channel class map (mode {label_image.mode}); CMP annotations '
      f'are palette images with values 1 to {NUM_CLASSES}'
    )
  if values.size:
    low, high = int(values.min()), int(values.max())
    if low < 1 or high > NUM_CLASSES:
      bad = low if low < 1 else high
      raise ValueError(
        f'{names[1]} holds value {bad}; CMP annotations use 1 ({CLASS_NAMES[0]}) to '
        f'{NUM_CLASSES} ({CLASS_NAMES[-1]})'
      )
  if photo_image.size != (width, height):
    photo_image = photo_image.resize((width, height), Image.Resampling.BILINEAR)
  return {
    'image': np.asarray(photo_image, dtype=np.uint8),
    'label': archives.resize_nearest((values - 1).astype(np.uint8), height, width),
  }


def find_pairs(manual_dir) -> list[tuple[archives.Tree, str, str]]:
  """Matches every photo with its annotation, base first, each set in file-name order.

  Args:
    manual_dir: The directory with the archives or extracted folders.

  Returns:
    [(tree, photo, annotation), ...]: the paths are relative to manual_dir (members of the zip
    when the folder is absent).

  Raises:
    FacadesFilesError: If an archive is missing (the message says what to download and where to
      put it), holds no facades, or a photo lacks its annotation or an annotation its photo.
  """
  manual_dir = epath.Path(manual_dir)
  trees = [archives.Tree(manual_dir, folder, archive) for archive, folder in ARCHIVES]
  absent = [t for t in trees if t.locate() is None]
  if absent:
    wanted = ', '.join(f'{t.archive} (or its extracted {t.folder}/ folder)' for t in absent)
    raise FacadesFilesError(f'Missing {wanted}.\n{missing_files_message(manual_dir)}')
  out, problems = [], []
  for tree in trees:
    reader = archives.Reader(tree)
    try:
      names = reader.list()
    finally:
      reader.close()
    photos = archives.by_stem(names, '.jpg')
    labels = archives.by_stem(names, '.png')
    if not photos and not labels:
      raise FacadesFilesError(
        f'No facades in {tree.describe(tree.folder + "/")} (expected cmp_*.jpg and cmp_*.png); '
        f'the download looks incomplete.\n{missing_files_message(manual_dir)}'
      )
    for stem in sorted(photos.keys() - labels.keys()):
      problems.append(f'photo {tree.describe(photos[stem])} has no annotation {stem}.png')
    for stem in sorted(labels.keys() - photos.keys()):
      problems.append(f'annotation {tree.describe(labels[stem])} has no photo {stem}.jpg')
    out += [(tree, photos[s], labels[s]) for s in sorted(photos.keys() & labels.keys())]
  if problems:
    shown = '\n  '.join(problems[:10])
    more = f'\n  ... and {len(problems) - 10} more' if len(problems) > 10 else ''
    raise FacadesFilesError(
      f'Unmatched CMP Facades files in {os.fspath(manual_dir)!r}:\n  {shown}{more}'
    )
  return out


class Facades(archives.ManualBuilder, skip_registration=True):
  """CMP Facades, base and extended, from the archives in a manual directory: one `train` split.

  The photos are kept (PNG) beside the maps for label-to-photo use; SemGAN reads the maps only.
  """

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = [
    archives.ResolutionConfig(
      height=128, width=128, description="128x128 (H x W): paper 2's label maps."
    ),
    archives.ResolutionConfig(height=256, width=256, description='256x256 (H x W).'),
    archives.ResolutionConfig(height=32, width=32, description='32x32 (H x W), for tests.'),
  ]
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    shape = (config.height, config.width)
    return tfds.core.DatasetInfo(
      builder=self,
      description=_DESCRIPTION,
      features=tfds.features.FeaturesDict(
        {
          'image': tfds.features.Image(shape=(*shape, 3), dtype=np.uint8, encoding_format='png'),
          'label': tfds.features.Tensor(
            shape=shape, dtype=np.uint8, encoding=tfds.features.Encoding.ZLIB
          ),
        }
      ),
      supervised_keys=None,
      homepage=DOWNLOAD_URL,
      citation=_CITATION,
      disable_shuffling=True,  # Storage order == base then extended, by file name.
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # The files come from self.manual_dir, checked here before anything is written.
    return {'train': self._generate_examples(find_pairs(self.manual_dir))}

  def _generate_examples(self, pairs):
    config = self.builder_config
    readers = {}

    def make(pair):
      tree, photo, label = pair
      reader = readers[tree.folder]
      example = read_example(
        reader.read(photo),
        reader.read(label),
        height=config.height,
        width=config.width,
        names=(tree.describe(photo), tree.describe(label)),
      )
      example['image'] = paired.encode_png(example['image'])
      return example

    try:
      for tree in {p[0].folder: p[0] for p in pairs}.values():
        readers[tree.folder] = archives.Reader(tree)
      yield from enumerate(paired.map_in_order(make, pairs))
    finally:
      for reader in readers.values():
        reader.close()
