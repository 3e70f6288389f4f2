"""The Cityscapes label set: the 35 label ids, their names, colours, training ids and things."""

import numpy as np

# The 34 label ids of cityscapesScripts' `labels.py` (0 to 33), as (name, train id, has
# instances, colour). Id -1 ('license plate') is left out: the official tools never write it
# into a labelIds or instanceIds file (plates stay part of their vehicle there).
_LABELS = (
  ('unlabeled', 255, False, (0, 0, 0)),
  ('ego vehicle', 255, False, (0, 0, 0)),
  ('rectification border', 255, False, (0, 0, 0)),
  ('out of roi', 255, False, (0, 0, 0)),
  ('static', 255, False, (0, 0, 0)),
  ('dynamic', 255, False, (111, 74, 0)),
  ('ground', 255, False, (81, 0, 81)),
  ('road', 0, False, (128, 64, 128)),
  ('sidewalk', 1, False, (244, 35, 232)),
  ('parking', 255, False, (250, 170, 160)),
  ('rail track', 255, False, (230, 150, 140)),
  ('building', 2, False, (70, 70, 70)),
  ('wall', 3, False, (102, 102, 156)),
  ('fence', 4, False, (190, 153, 153)),
  ('guard rail', 255, False, (180, 165, 180)),
  ('bridge', 255, False, (150, 100, 100)),
  ('tunnel', 255, False, (150, 120, 90)),
  ('pole', 5, False, (153, 153, 153)),
  ('polegroup', 255, False, (153, 153, 153)),
  ('traffic light', 6, False, (250, 170, 30)),
  ('traffic sign', 7, False, (220, 220, 0)),
  ('vegetation', 8, False, (107, 142, 35)),
  ('terrain', 9, False, (152, 251, 152)),
  ('sky', 10, False, (70, 130, 180)),
  ('person', 11, True, (220, 20, 60)),
  ('rider', 12, True, (255, 0, 0)),
  ('car', 13, True, (0, 0, 142)),
  ('truck', 14, True, (0, 0, 70)),
  ('bus', 15, True, (0, 60, 100)),
  ('caravan', 255, True, (0, 0, 90)),
  ('trailer', 255, True, (0, 0, 110)),
  ('train', 16, True, (0, 80, 100)),
  ('motorcycle', 17, True, (0, 0, 230)),
  ('bicycle', 18, True, (119, 11, 32)),
)

# One-hot width of the label-id maps: pix2pixHD's label_nc = 35 for Cityscapes, i.e. ids 0 to 33
# plus one channel (id 34) that no Cityscapes file uses. Label id -1 (license plate), should a
# map carry it, counts as 0 'unlabeled', as cityscapesScripts' evaluation treats it.
NUM_CLASSES = 35
UNUSED_ID = 34
CLASS_NAMES = tuple(name for name, *_ in _LABELS) + ('unused',)
PALETTE = np.array([color for *_, color in _LABELS] + [(0, 0, 0)], dtype=np.uint8)
# Label ids whose objects carry instance numbers (`label_id * 1000 + k` in instanceIds maps).
THING_IDS = tuple(i for i, (_, _, things, _) in enumerate(_LABELS) if things)
# The 19 training ids (0 to 18) of each label id, IGNORE_TRAIN_ID for the rest (ERFNet's classes).
IGNORE_TRAIN_ID = 255
TRAIN_IDS = np.array([train_id for _, train_id, *_ in _LABELS] + [IGNORE_TRAIN_ID], dtype=np.uint8)
NUM_TRAIN_IDS = 19
# The class name of each training id, in id order ('road', 'sidewalk', ..., 'bicycle').
TRAIN_ID_NAMES = tuple(
  dict(zip(TRAIN_IDS.tolist(), CLASS_NAMES, strict=True))[i] for i in range(NUM_TRAIN_IDS)
)
