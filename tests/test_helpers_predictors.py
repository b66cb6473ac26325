"""The shared inference test helpers (tests/helpers/predictors.py) do what the tests rely on."""

import numpy as np

from tests.helpers.predictors import (
    objects_image,
    same_partition,
    threshold_predictor,
    threshold_predictor_labels,
)


def test_same_partition_ignores_numbering_only():
    a = np.array([[1, 1, 0], [2, 2, 0]])
    assert same_partition(a, np.array([[5, 5, 0], [3, 3, 0]]))
    assert not same_partition(a, np.array([[1, 1, 0], [1, 1, 0]]))  # merged
    assert not same_partition(a, np.array([[1, 2, 0], [3, 3, 0]]))  # split
    assert not same_partition(a, np.array([[1, 1, 1], [2, 2, 0]]))  # grown


def test_threshold_predictor_is_exact():
    labels = np.zeros((20, 30), np.int32)
    labels[2:8, 3:9] = 1
    labels[10:18, 5:25] = 2
    image = objects_image(labels)
    ((masks, scores),) = threshold_predictor([image])
    assert len(masks) == 2 and np.allclose(scores, 220 / 255)
    assert same_partition(threshold_predictor_labels(image), (masks * np.array([1, 2])[:, None, None]).sum(0))
