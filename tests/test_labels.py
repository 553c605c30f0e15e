"""The id maps against the published tables (training_and_evaluation.md §3), every id of 0..255."""

from __future__ import annotations

import numpy as np
import torch

from flexseg import labels
from flexseg.data.readers import map_label

torch.set_num_threads(1)

# Typed from the published tables, independently of flexseg.labels.
PUBLISHED_CLASSES = (
    "road sidewalk building wall fence pole traffic_light traffic_sign vegetation terrain sky "
    "person rider car truck bus train motorcycle bicycle"
).split()
PUBLISHED_CITYSCAPES = [
    (7, 0), (8, 1), (11, 2), (12, 3), (13, 4), (17, 5), (19, 6), (20, 7), (21, 8), (22, 9),
    (23, 10), (24, 11), (25, 12), (26, 13), (27, 14), (28, 15), (31, 16), (32, 17), (33, 18),
]  # fmt: skip
PUBLISHED_MAPILLARY = [
    (13, 0), (24, 0), (41, 0), (2, 1), (15, 1), (17, 2), (6, 3), (3, 4), (45, 5), (47, 5),
    (48, 6), (50, 7), (30, 8), (29, 9), (27, 10), (19, 11), (20, 12), (21, 12), (22, 12),
    (55, 13), (61, 14), (54, 15), (58, 16), (57, 17), (52, 18),
]  # fmt: skip
# Ids the published Mapillary protocol leaves ignored although other DG repos map them.
MAPILLARY_KEPT_IGNORED = (23, 7, 8, 14, 10, 44, 49, 4)


def every_id() -> np.ndarray:
    return np.arange(256, dtype=np.uint8).reshape(16, 16)


def reference(pairs: list[tuple[int, int]]) -> list[int]:
    out = []
    for raw in range(256):
        train = 255
        for r, t in pairs:
            if r == raw:
                train = t
        out.append(train)
    return out


def test_class_order():
    assert [n.replace(" ", "_") for n in labels.CLASS_NAMES] == PUBLISHED_CLASSES
    assert labels.NUM_CLASSES == 19 and labels.IGNORE_INDEX == 255


def test_cityscapes_and_gta_label_ids():
    mapped = map_label(every_id(), "cityscapes_ids").train_ids.reshape(-1).tolist()
    assert mapped == reference(PUBLISHED_CITYSCAPES)
    # The void ids named by the reference all go to 255.
    for raw in (*range(7), 9, 10, 14, 15, 16, 18, 29, 30):
        assert mapped[raw] == 255


def test_mapillary_v12_index():
    mapped = map_label(every_id(), "mapillary_ids").train_ids.reshape(-1).tolist()
    assert mapped == reference(PUBLISHED_MAPILLARY)
    assert all(mapped[raw] == 255 for raw in MAPILLARY_KEPT_IGNORED)


def test_train_ids_pass_through():
    mapped = map_label(every_id(), "train_ids").train_ids.reshape(-1).tolist()
    assert mapped == [i if i < 19 else 255 for i in range(256)]


def test_ids_foreign_to_the_label_space_are_reported():
    ids = every_id()
    assert sorted(map_label(ids, "cityscapes_ids").unmapped) == list(range(34, 255))
    assert sorted(map_label(ids, "mapillary_ids").unmapped) == list(range(66, 256))
    assert sorted(map_label(ids, "train_ids").unmapped) == list(range(19, 255))
    counts = map_label(np.array([[19, 19, 3], [200, 255, 0]], np.uint8), "train_ids").unmapped
    assert counts == {19: 2, 200: 1}


def test_onehot20_against_a_loop():
    rng = np.random.default_rng(0)
    lab = rng.choice([0, 5, 18, 255], size=(5, 7)).astype(np.uint8)
    before = lab.copy()
    onehot = labels.to_onehot20(lab)
    ref = np.zeros((20, 5, 7), np.float32)
    for y in range(5):
        for x in range(7):
            ref[lab[y, x] if lab[y, x] < 19 else 19, y, x] = 1
    np.testing.assert_array_equal(onehot, ref)
    np.testing.assert_array_equal(lab, before)
