"""Compact class sets over the Cityscapes label ids, for SemGAN on label-id data sets.

SemGAN's softmax has one channel per class, so it learns street layouts over the few classes a
data set uses rather than over all 35 label ids. A `LabelSet` maps every label id to one of its
classes (`from_label_id`, total over the 35 ids) and every class back to one label id
(`to_label_id`): the id that a label-to-photo translator trained on the label ids sees for it,
which the dream chain (latent → SemGAN map → SemanticGAN photo) uses.
"""

import dataclasses

import numpy as np

from semgan_jax.data import cityscapes_labels as cs
from semgan_jax.data.streets import constants as streets

# The colour of the catch-all class: no Cityscapes class is white, so it stays distinguishable in
# palette images (SWD compares maps as palette images; the RGB baseline is read back by colour).
OTHER_COLOR = (255, 255, 255)


@dataclasses.dataclass(frozen=True)
class LabelSet:
  """K classes over the 35 Cityscapes label ids.

  Attributes:
    name: the `config.data.label_set` value that selects it.
    class_names: the name of each class, by class index.
    palette: (K, 3) uint8, the colour of each class.
    from_label_id: (35,) int32, the class of each label id (every id has one).
    to_label_id: (K,) int32, the label id each class stands for.
  """

  name: str
  class_names: tuple[str, ...]
  palette: np.ndarray
  from_label_id: np.ndarray
  to_label_id: np.ndarray

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


def grouped(name: str, groups: tuple[tuple[str, tuple[int, ...]], ...]) -> LabelSet:
  """Class 0 'other' (white) for every id no group names, then one class per `(name, label
  ids)` group, in order, standing for its first id (whose Cityscapes colour it takes)."""
  named = [i for _, ids in groups for i in ids]
  if len(set(named)) != len(named) or not all(0 < i < cs.NUM_CLASSES for i in named):
    raise ValueError(f'{name}: the groups must name distinct ids in [1, {cs.NUM_CLASSES}).')
  to_label_id = np.array([0] + [ids[0] for _, ids in groups], np.int32)
  from_label_id = np.zeros(cs.NUM_CLASSES, np.int32)
  for cls, (_, ids) in enumerate(groups, start=1):
    from_label_id[list(ids)] = cls
  return LabelSet(
    name=name,
    class_names=('other',) + tuple(group for group, _ in groups),
    palette=np.array([OTHER_COLOR] + [cs.PALETTE[ids[0]] for _, ids in groups], np.uint8),
    from_label_id=from_label_id,
    to_label_id=to_label_id,
  )


def one_id_per_class(name: str, label_ids: tuple[int, ...]) -> LabelSet:
  """A set whose classes are `label_ids`, one each (Cityscapes names and colours), and class 0
  'other' for every remaining id, which goes back to 0 'unlabeled'."""
  return grouped(name, tuple((cs.CLASS_NAMES[i], (i,)) for i in label_ids))


# Paper 2 trains SemGAN on Cityscapes with "22 main classes" without listing them. Ours: the 19
# training classes (the ones every Cityscapes benchmark scores), with the ids they leave out
# merged into their nearest class (parking and rail track into 'ground', guard rail into fence,
# bridge and tunnel into building, polegroup into pole, caravan and trailer into truck), plus
# the ego vehicle (a fixed shape at the bottom of every frame, which a layout model should
# draw), 'ground', and 'other' (unlabeled, rectification border, out of roi, static, dynamic).
CITYSCAPES_22 = (
  ('ego vehicle', (1,)),
  ('ground', (6, 9, 10)),
  ('road', (7,)),
  ('sidewalk', (8,)),
  ('building', (11, 15, 16)),
  ('wall', (12,)),
  ('fence', (13, 14)),
  ('pole', (17, 18)),
  ('traffic light', (19,)),
  ('traffic sign', (20,)),
  ('vegetation', (21,)),
  ('terrain', (22,)),
  ('sky', (23,)),
  ('person', (24,)),
  ('rider', (25,)),
  ('car', (26,)),
  ('truck', (27, 29, 30)),
  ('bus', (28,)),
  ('train', (31,)),
  ('motorcycle', (32,)),
  ('bicycle', (33,)),
)

LABEL_SETS: dict[str, LabelSet] = {
  # The 12 label ids the procedural street scenes draw (13 classes with 'other').
  'streets': one_id_per_class('streets', streets.CLASS_IDS),
  'cityscapes22': grouped('cityscapes22', CITYSCAPES_22),
}


def get_label_set(name: str) -> LabelSet:
  if name not in LABEL_SETS:
    raise ValueError(f'unknown label set {name!r}; expected one of {sorted(LABEL_SETS)}.')
  return LABEL_SETS[name]


class RelabeledSource:
  """A data source of label-id maps seen through a label set: each element is `{'label': the
  (H, W) class map}`, the other features (photos, instances) left unread by callers."""

  def __init__(self, source, label_set: LabelSet):
    self._source, self._table = source, label_set.from_label_id

  def __len__(self) -> int:
    return len(self._source)

  def _relabel(self, example) -> dict:
    label = np.asarray(example['label']).astype(np.int64)
    if label.size and (label.min() < 0 or label.max() >= len(self._table)):
      bad = label.min() if label.min() < 0 else label.max()
      raise ValueError(f'label id {bad} is not a Cityscapes label id (0 to {len(self._table) - 1})')
    return {'label': self._table[label]}

  def __getitem__(self, index):
    return self._relabel(self._source[index])

  def __getitems__(self, indices):
    return [self._relabel(e) for e in self._source.__getitems__(indices)]

  def __getattr__(self, name):
    return getattr(self._source, name)
