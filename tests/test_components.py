"""Tests of the per-map object scores (semgan_jax/evaluation/components.py)."""

import numpy as np

from semgan_jax.data import colored_shapes as cs
from semgan_jax.evaluation import components

NAMES = cs.CLASS_NAMES


def _clean_map():
  """A disk, a 10x10 square and an 8x20 rectangle, apart from each other."""
  labels = np.zeros((64, 64), np.int32)
  labels[cs.disk_mask(np.array([40.3, 20.7]))] = cs.CIRCLE
  labels[5:15, 40:50] = cs.SQUARE
  labels[50:58, 35:55] = cs.RECTANGLE
  return labels


def _scores(*maps):
  per_map = components.map_scores(np.stack(maps), NAMES, 'colored_shapes')
  return per_map, components.summarize({k: [v] for k, v in per_map.items()})


def test_a_clean_map_scores_one_of_each_and_perfect_shapes():
  per_map, summary = _scores(_clean_map())
  for name in ('circle', 'rectangle', 'square'):
    assert summary[f'components/{name}'] == 1.0 and summary[f'single/{name}'] == 1.0
  assert summary['small_components'] == 0.0
  assert summary['shape/circle_iou'] > 0.97
  assert summary['shape/square_iou'] == 1.0 and summary['shape/rectangle_fill'] == 1.0
  assert all(v.shape == (1,) for v in per_map.values())


def test_the_real_data_set_scores_near_one():
  maps = cs.render_colored_shapes(num_examples=200)['label']
  _, summary = _scores(*maps)
  assert summary['single/circle'] == 1.0 and summary['shape/circle_iou'] > 0.97
  assert summary['components/square'] <= 1.0 and summary['small_components'] < 0.2


def test_defects_are_counted():
  extra = _clean_map()
  extra[30:40, 50:60] = cs.SQUARE  # A second square,
  extra[0, 0] = cs.CIRCLE  # a stray circle pixel,
  blob = _clean_map()
  blob[blob == cs.CIRCLE] = 0
  blob[10:34, 2:22] = cs.CIRCLE  # a box where the disk should be,
  blob[50:58, 35:45] = 0
  blob[54:58, 35:45] = cs.RECTANGLE  # and an L-shaped rectangle.
  no_square = _clean_map()
  no_square[no_square == cs.SQUARE] = 0
  per_map, summary = _scores(extra, blob, no_square)
  np.testing.assert_array_equal(per_map['components/square'], [2, 1, 0])
  np.testing.assert_array_equal(per_map['single/square'], [0, 1, 0])
  np.testing.assert_array_equal(per_map['components/circle'], [2, 1, 1])
  np.testing.assert_array_equal(per_map['small_components'], [1, 0, 0])
  assert per_map['shape/circle_iou'][1] < 0.8 and per_map['shape/rectangle_fill'][1] < 0.8
  # The map without a square does not count in the square's shape score.
  assert np.isnan(per_map['shape/square_iou'][2]) and summary['shape/square_iou'] == 1.0


def test_other_data_sets_get_components_only():
  per_map = components.map_scores(_clean_map()[None], NAMES, 'streets')
  assert 'components/circle' in per_map and not any(k.startswith('shape/') for k in per_map)
  assert np.isnan(components.summarize({'x': []})['x'])
