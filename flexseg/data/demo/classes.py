"""Fine labels and surface materials of the demo world.

The renderer labels every pixel with a *fine* class that is finer than the 19 training classes,
so that each dataset can be written in its own label space with its own conventions: lane
markings are road in Cityscapes but ``marking--general`` in Mapillary, a zebra crossing is road
in Cityscapes but the unmapped ``marking--crosswalk-zebra`` in Mapillary, the ego vehicle's hood
is Cityscapes id 1, and street furniture is Cityscapes ``static`` (4). The tables below give, per
fine class, its Cityscapes label id (GTA5 uses the same ids) and its Mapillary Vistas v1.2 index;
the train id follows from the Cityscapes id through ``flexseg.labels.CITYSCAPES_ID_TO_TRAIN_ID``.

Materials are what the styles colour: a fine class can be drawn in several materials (a car is
paint, glass and tyres) and one material can carry several classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from flexseg.labels import CITYSCAPES_ID_TO_TRAIN_ID, CLASS_NAMES, IGNORE_INDEX

# The 19 train ids by name (T.CAR == 13), for the class a scene is made to show.
T = IntEnum("T", [name.upper().replace(" ", "_") for name in CLASS_NAMES], start=0)


@dataclass(frozen=True)
class FineClass:
    name: str
    cityscapes_id: int
    mapillary_id: int

    @property
    def train_id(self) -> int:
        return CITYSCAPES_ID_TO_TRAIN_ID.get(self.cityscapes_id, IGNORE_INDEX)


class F(IntEnum):
    """Fine class ids (the values index ``FINE_CLASSES``)."""

    ROAD = 0
    LANE_MARKING = 1
    CROSSWALK = 2
    MANHOLE = 3
    SIDEWALK = 4
    CURB = 5
    BUILDING = 6
    WALL = 7
    FENCE = 8
    POLE = 9
    UTILITY_POLE = 10
    STREET_LIGHT = 11
    TRAFFIC_LIGHT = 12
    TRAFFIC_SIGN = 13
    VEGETATION = 14
    TERRAIN = 15
    SKY = 16
    PERSON = 17
    BICYCLIST = 18
    MOTORCYCLIST = 19
    CAR = 20
    TRUCK = 21
    BUS = 22
    TRAIN = 23
    MOTORCYCLE = 24
    BICYCLE = 25
    STATIC = 26
    PARKING = 27
    RAIL_TRACK = 28
    EGO_VEHICLE = 29
    UNLABELED = 30


FINE_CLASSES: tuple[FineClass, ...] = (
    FineClass("road", 7, 13),
    FineClass("lane marking", 7, 24),
    FineClass("crosswalk", 7, 23),
    FineClass("manhole", 7, 41),
    FineClass("sidewalk", 8, 15),
    FineClass("curb", 8, 2),
    FineClass("building", 11, 17),
    FineClass("wall", 12, 6),
    FineClass("fence", 13, 3),
    FineClass("pole", 17, 45),
    FineClass("utility pole", 17, 47),
    FineClass("street light", 17, 44),
    FineClass("traffic light", 19, 48),
    FineClass("traffic sign", 20, 50),
    FineClass("vegetation", 21, 30),
    FineClass("terrain", 22, 29),
    FineClass("sky", 23, 27),
    FineClass("person", 24, 19),
    FineClass("bicyclist", 25, 20),
    FineClass("motorcyclist", 25, 21),
    FineClass("car", 26, 55),
    FineClass("truck", 27, 61),
    FineClass("bus", 28, 54),
    FineClass("train", 31, 58),
    FineClass("motorcycle", 32, 57),
    FineClass("bicycle", 33, 52),
    FineClass("static", 4, 51),
    FineClass("parking", 9, 10),
    FineClass("rail track", 10, 12),
    FineClass("ego vehicle", 1, 64),
    FineClass("unlabeled", 0, 65),
)


def _table(values: list[int]) -> np.ndarray:
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    table[: len(values)] = values
    return table


FINE_TO_CITYSCAPES = _table([c.cityscapes_id for c in FINE_CLASSES])
FINE_TO_MAPILLARY = _table([c.mapillary_id for c in FINE_CLASSES])
FINE_TO_TRAIN = _table([c.train_id for c in FINE_CLASSES])

# The Mapillary index of a fine class maps to the same train id as its Cityscapes id, except where
# the two datasets' conventions differ on purpose (zebra crossings and lamp heads are unmapped).
MAPILLARY_DISAGREES = frozenset({F.CROSSWALK, F.STREET_LIGHT})


class M(IntEnum):
    """Surface materials; styles give each one colour stops."""

    SKY = 0
    ASPHALT = 1
    LANE_PAINT = 2
    ZEBRA_PAINT = 3
    MANHOLE = 4
    CURB = 5
    PAVING = 6
    GRASS = 7
    RAIL = 8
    PARKING = 9
    FACADE = 10
    WINDOW = 11
    WINDOW_LIT = 12
    CONCRETE = 13
    FENCE = 14
    BARK = 15
    FOLIAGE = 16
    METAL = 17
    LAMP = 18
    SIGN = 19
    SIGN_BACK = 20
    TL_HOUSING = 21
    TL_RED = 22
    TL_GREEN = 23
    TL_OFF = 24
    SKIN = 25
    CLOTH = 26
    HAIR = 27
    CAR_PAINT = 28
    GLASS = 29
    TYRE = 30
    HEADLIGHT = 31
    TAILLIGHT = 32
    BUS_PAINT = 33
    TRUCK_PAINT = 34
    TRAIN_PAINT = 35
    MOTO_PAINT = 36
    BIKE_FRAME = 37
    FURNITURE = 38
    CABLE = 39
    HOOD = 40
    DOOR = 41


NUM_MATERIALS = len(M)

# Materials that glow at night and at dusk (the colour they glow in is the style's).
EMISSIVE = frozenset({M.WINDOW_LIT, M.LAMP, M.TL_RED, M.TL_GREEN, M.HEADLIGHT, M.TAILLIGHT})

# Ground materials that snow covers.
SNOW_GROUND = frozenset(
    {
        M.ASPHALT,
        M.LANE_PAINT,
        M.ZEBRA_PAINT,
        M.MANHOLE,
        M.CURB,
        M.PAVING,
        M.GRASS,
        M.RAIL,
        M.PARKING,
    }
)
