"""The 19 Cityscapes training classes, the id maps of every dataset the pipeline reads, and the
weather conditions images are tagged with.

Every label the pipeline hands to a model is in Cityscapes *train ids*: 0..18 for the classes
below, ``IGNORE_INDEX`` (255) for void. Raw ids are converted with lookup tables of 256 entries
(``uint8 -> uint8``); an id that has no entry maps to 255.
"""

from __future__ import annotations

import numpy as np

IGNORE_INDEX = 255
NUM_CLASSES = 19

# FLEX-Seg generates its set in these conditions (paper, "Implementation Details"); ACDC's
# folders hold the adverse four, listed in alphabetical order.
STANDARD = "standard"
ADVERSE_CONDITIONS = ("fog", "rain", "snow", "night")
CONDITIONS = (STANDARD, *ADVERSE_CONDITIONS)
ACDC_CONDITIONS = tuple(sorted(ADVERSE_CONDITIONS))

CLASS_NAMES: tuple[str, ...] = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)

# Cityscapes colours (RGB), indexed by train id; void is drawn black.
PALETTE: np.ndarray = np.array(
    [
        (128, 64, 128),
        (244, 35, 232),
        (70, 70, 70),
        (102, 102, 156),
        (190, 153, 153),
        (153, 153, 153),
        (250, 170, 30),
        (220, 220, 0),
        (107, 142, 35),
        (152, 251, 152),
        (70, 130, 180),
        (220, 20, 60),
        (255, 0, 0),
        (0, 0, 142),
        (0, 0, 70),
        (0, 60, 100),
        (0, 80, 100),
        (0, 0, 230),
        (119, 11, 32),
    ],
    dtype=np.uint8,
)

# "Thing" classes in the COCO-stuff sense, used by the ImageNet feature distance.
THING_CLASSES: tuple[int, ...] = (6, 7, 11, 12, 13, 14, 15, 16, 17, 18)

# GTA5 and Cityscapes share the Cityscapes label ids; this is the labelIds -> trainIds table.
CITYSCAPES_ID_TO_TRAIN_ID: dict[int, int] = {
    7: 0,
    8: 1,
    11: 2,
    12: 3,
    13: 4,
    17: 5,
    19: 6,
    20: 7,
    21: 8,
    22: 9,
    23: 10,
    24: 11,
    25: 12,
    26: 13,
    27: 14,
    28: 15,
    31: 16,
    32: 17,
    33: 18,
}

# Mapillary Vistas v1.2 (66 classes, palettized PNG index) -> trainIds. Classes not listed here
# (crosswalk-zebra, bike-lane, guard-rail, street-light, sign-back, ...) stay ignored, as in the
# DAFormer/HRDA evaluation; mapping more of them changes the MV numbers.
MAPILLARY_ID_TO_TRAIN_ID: dict[int, int] = {
    13: 0,  # road
    24: 0,  # lane marking - general
    41: 0,  # manhole
    2: 1,  # curb
    15: 1,  # sidewalk
    17: 2,  # building
    6: 3,  # wall
    3: 4,  # fence
    45: 5,  # pole
    47: 5,  # utility pole
    48: 6,  # traffic light
    50: 7,  # traffic sign (front)
    30: 8,  # vegetation
    29: 9,  # terrain
    27: 10,  # sky
    19: 11,  # person
    20: 12,  # bicyclist
    21: 12,  # motorcyclist
    22: 12,  # other rider
    55: 13,  # car
    61: 14,  # truck
    54: 15,  # bus
    58: 16,  # on rails
    57: 17,  # motorcycle
    52: 18,  # bicycle
}

MAPILLARY_NUM_CLASSES = 66

# Train ids written by datasets that already use them (BDD100K, ACDC, Dark Zurich, generated).
IDENTITY_TRAIN_IDS: dict[int, int] = {i: i for i in range(NUM_CLASSES)}


def lookup_table(mapping: dict[int, int]) -> np.ndarray:
    """A 256-entry uint8 table: ``table[raw_id]`` is the train id, 255 where ``raw_id`` is unmapped."""
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for raw, train in mapping.items():
        table[raw] = train
    return table


def unmapped_ids(label: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    """The raw ids present in ``label`` that ``mapping`` does not know (255 excluded)."""
    present = np.unique(label)
    known = np.array(sorted(set(mapping) | {IGNORE_INDEX}))
    return present[~np.isin(present, known)]


def colorize(label: np.ndarray) -> np.ndarray:
    """An (H, W, 3) RGB uint8 picture of a train-id label; void is black."""
    out = np.zeros((*label.shape, 3), dtype=np.uint8)
    valid = label < NUM_CLASSES
    out[valid] = PALETTE[label[valid]]
    return out


def to_onehot20(label: np.ndarray) -> np.ndarray:
    """The 20-channel one-hot map of the DGInStyle ControlNet: channels 0..18 the classes, 19 void.

    Returns float32 (20, H, W). The input is not modified (the anchor code rewrote 255 -> 19 in
    place and saved that array, leaving 19 in its labels).
    """
    idx = np.where(label < NUM_CLASSES, label, NUM_CLASSES).astype(np.int64)
    onehot = np.zeros((NUM_CLASSES + 1, *label.shape), dtype=np.float32)
    np.put_along_axis(onehot, idx[None], 1.0, axis=0)
    return onehot
