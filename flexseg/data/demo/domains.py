"""The demo world's domains: camera, look, weather, label space and on-disk layout of each.

Every image is a pure function of ``(seed, domain, index)``: the scene generator is seeded with
``(seed, crc32(domain name), index, attempt)`` and the look and weather with
``(seed, crc32(domain name), index, STYLE_STREAM)``, so images can be rendered in any order by
any number of processes.

==============  ====================================================================  ==========
domain          what makes it a domain of its own                                      labels
==============  ====================================================================  ==========
source (GTA5)   flat saturated game palette, camera 1.6-2.2 m high, clear day          raw ids, P
source_val      the same as source, other scenes (held out)                            raw ids, P
cityscapes      photo palette per city, texture, 2:1 frame, low camera, ego hood       raw ids
bdd100k         16:9, higher dash camera, JPEG, a third of the scenes at dusk/night    train ids
mapillary       varied aspect ratios, heights, tilts, rolls and sidewalk viewpoints    MV v1.2, P
acdc            fog, night, rain and snow in equal shares                              train ids
dark_zurich     night with orange sodium street lamps                                  train ids
prior           square photo-like renders in all five conditions, with captions       train ids
==============  ====================================================================  ==========

(P = palettized PNG.) The class each image is guaranteed to show cycles through ``REQUIRED``,
rarest first, so that even a few images of a domain hold every rare class; the prior and the
evaluation sets are rendered from their own domain keys and therefore never share a scene.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from dataclasses import dataclass, replace

import numpy as np

from flexseg.data.demo.classes import FINE_TO_CITYSCAPES, FINE_TO_MAPILLARY, FINE_TO_TRAIN, T
from flexseg.data.demo.street import CameraSpec
from flexseg.data.demo.style import Look, game_look, photo_look
from flexseg.labels import (
    ACDC_CONDITIONS,
    CITYSCAPES_ID_TO_TRAIN_ID,
    CONDITIONS,
    MAPILLARY_ID_TO_TRAIN_ID,
    PALETTE,
)

STYLE_STREAM = 1_000_003

# The class each image is made to show, by index modulo 19, rarest first.
REQUIRED: tuple[int, ...] = (
    T.TRAIN,
    T.MOTORCYCLE,
    T.RIDER,
    T.BICYCLE,
    T.BUS,
    T.TRUCK,
    T.TRAFFIC_LIGHT,
    T.WALL,
    T.FENCE,
    T.TERRAIN,
    T.PERSON,
    T.TRAFFIC_SIGN,
    T.POLE,
    T.CAR,
    T.VEGETATION,
    T.BUILDING,
    T.SIDEWALK,
    T.ROAD,
    T.SKY,
)

ACDC_SEQUENCES = {"fog": "GOPR0475", "night": "GOPR0355", "rain": "GOPR0400", "snow": "GOPR0122"}
CITYSCAPES_CITIES = ("frankfurt", "lindau", "munster")
# Per-city colour cast of the Cityscapes-like photographs.
CITY_CAST = {
    "frankfurt": (1.0, 1.0, 1.0),
    "lindau": (1.06, 1.0, 0.9),
    "munster": (0.94, 1.0, 1.06),
}
MAPILLARY_ASPECTS = (4 / 3, 16 / 9, 3 / 2, 1.0, 3 / 4, 2.0)


def _raw_palette(mapping: dict[int, int]) -> np.ndarray:
    """256x3 colours for a raw id space: the train id's colour, black when unmapped."""
    pal = np.zeros((256, 3), np.uint8)
    for raw, train in mapping.items():
        pal[raw] = PALETTE[train]
    return pal


CITYSCAPES_ID_PALETTE = _raw_palette(CITYSCAPES_ID_TO_TRAIN_ID)
MAPILLARY_PALETTE = _raw_palette(MAPILLARY_ID_TO_TRAIN_ID)

# Label spaces: fine class -> written id table, and the palette of palettized formats.
LABEL_SPACES = {
    "cityscapes_ids": FINE_TO_CITYSCAPES,
    "mapillary_ids": FINE_TO_MAPILLARY,
    "train_ids": FINE_TO_TRAIN,
}


@dataclass(frozen=True)
class Item:
    """One image of a domain: where it goes and how it is drawn."""

    domain: str
    index: int
    image: str  # path relative to the world root
    label: str
    size: tuple[int, int]  # width, height
    condition: str
    require: int


def domain_code(name: str) -> int:
    return zlib.crc32(name.encode())


def item_seed(seed: int, domain: str, index: int) -> tuple[int, int, int]:
    return (int(seed), domain_code(domain), int(index))


def _hex_name(seed: int, domain: str, index: int) -> str:
    digest = hashlib.sha1(f"{seed}/{domain}/{index}".encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:16]}"


def _key_name(seed: int, domain: str, index: int) -> str:
    digest = hashlib.sha1(f"{seed}/{domain}/{index}".encode()).digest()
    return base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")


class Domain:
    """A domain of the world. Subclasses set the layout, camera, look and weather."""

    name = ""
    folder = ""
    label_space = "train_ids"
    palettized = False
    jpeg_quality: int | None = None  # None: PNG

    def __init__(self, count: int, size: tuple[int, int], seed: int) -> None:
        if count < 1:
            raise ValueError(f"demo domain {self.name}: count must be >= 1, got {count}")
        if min(size) < 16:
            raise ValueError(f"demo domain {self.name}: size must be at least 16x16, got {size}")
        self.count = int(count)
        self.size = (int(size[0]), int(size[1]))
        self.seed = int(seed)

    def items(self) -> list[Item]:
        return [self.item(i) for i in range(self.count)]

    def item(self, index: int) -> Item:
        image, label = self.paths(index)
        return Item(
            domain=self.name,
            index=index,
            image=f"{self.folder}/{image}",
            label=f"{self.folder}/{label}",
            size=self.image_size(index),
            condition=self.condition(index),
            require=REQUIRED[index % len(REQUIRED)],
        )

    def paths(self, index: int) -> tuple[str, str]:
        raise NotImplementedError

    def image_size(self, index: int) -> tuple[int, int]:
        return self.size

    def condition(self, index: int) -> str:
        return "standard"

    def camera(self, rng: np.random.Generator, width: int, height: int) -> CameraSpec:
        raise NotImplementedError

    def look(self, rng: np.random.Generator, item: Item) -> Look:
        return photo_look(rng)

    @property
    def palette(self) -> np.ndarray | None:
        if not self.palettized:
            return None
        return MAPILLARY_PALETTE if self.label_space == "mapillary_ids" else CITYSCAPES_ID_PALETTE


class Source(Domain):
    """GTA5's layout: ``images/NNNNN.png`` and palettized ``labels/NNNNN.png`` (raw ids)."""

    name = "source"
    folder = "gta"
    label_space = "cityscapes_ids"
    palettized = True

    def paths(self, index: int) -> tuple[str, str]:
        return f"images/{index + 1:05d}.png", f"labels/{index + 1:05d}.png"

    def camera(self, rng: np.random.Generator, width: int, height: int) -> CameraSpec:
        return CameraSpec(
            focal=width * rng.uniform(0.75, 0.9),
            horizon=height * rng.uniform(0.40, 0.50),
            height_m=rng.uniform(1.6, 2.2),
        )

    def look(self, rng: np.random.Generator, item: Item) -> Look:
        return game_look(rng)


class SourceVal(Source):
    name = "source_val"
    folder = "gta_val"


class Cityscapes(Domain):
    """``leftImg8bit/val/<city>/<city>_000000_NNNNNN_leftImg8bit.png`` and ``gtFine`` label ids."""

    name = "cityscapes"
    folder = "cityscapes"
    label_space = "cityscapes_ids"

    def city(self, index: int) -> str:
        return CITYSCAPES_CITIES[index % len(CITYSCAPES_CITIES)]

    def paths(self, index: int) -> tuple[str, str]:
        city = self.city(index)
        stem = f"{city}_000000_{index // len(CITYSCAPES_CITIES):06d}"
        return (
            f"leftImg8bit/val/{city}/{stem}_leftImg8bit.png",
            f"gtFine/val/{city}/{stem}_gtFine_labelIds.png",
        )

    def camera(self, rng: np.random.Generator, width: int, height: int) -> CameraSpec:
        return CameraSpec(
            focal=width * rng.uniform(0.85, 1.0),
            horizon=height * rng.uniform(0.38, 0.45),
            height_m=rng.uniform(1.15, 1.3),
            hood=rng.uniform(0.8, 0.86),
        )

    def look(self, rng: np.random.Generator, item: Item) -> Look:
        return photo_look(
            rng,
            cast=CITY_CAST[self.city(item.index)],
            saturation=(0.78, 0.95),
            contrast=(0.85, 1.0),
            clouds=(0.5, 1.0),
            vignette=(0.2, 0.4),
        )


class BDD100K(Domain):
    """``images/10k/val/<hex>.jpg`` and ``labels/sem_seg/masks/val/<hex>.png`` (train ids)."""

    name = "bdd100k"
    folder = "bdd100k"
    jpeg_quality = 80

    def paths(self, index: int) -> tuple[str, str]:
        stem = _hex_name(self.seed, self.name, index)
        return f"images/10k/val/{stem}.jpg", f"labels/sem_seg/masks/val/{stem}.png"

    def condition(self, index: int) -> str:
        # Dusk and night come from the index so that every BDD set of a given size has the same mix.
        return ("standard", "dusk", "standard", "night", "standard", "dusk")[index % 6]

    def camera(self, rng: np.random.Generator, width: int, height: int) -> CameraSpec:
        return CameraSpec(
            focal=width * rng.uniform(0.7, 0.8),
            horizon=height * rng.uniform(0.45, 0.56),
            height_m=rng.uniform(1.35, 1.55),
            yaw_px=width * rng.normal(0.0, 0.03),
            hood=rng.uniform(0.88, 0.94) if rng.random() < 0.5 else 0.0,
        )

    def look(self, rng: np.random.Generator, item: Item) -> Look:
        return photo_look(rng, saturation=(0.85, 1.05), contrast=(1.0, 1.15), noise=(0.008, 0.016))


class Mapillary(Domain):
    """``validation/images/<key>.jpg`` and palettized ``validation/v1.2/labels/<key>.png``."""

    name = "mapillary"
    folder = "mapillary"
    label_space = "mapillary_ids"
    palettized = True
    jpeg_quality = 90

    def paths(self, index: int) -> tuple[str, str]:
        key = _key_name(self.seed, self.name, index)
        return f"validation/images/{key}.jpg", f"validation/v1.2/labels/{key}.png"

    def image_size(self, index: int) -> tuple[int, int]:
        aspect = MAPILLARY_ASPECTS[index % len(MAPILLARY_ASPECTS)]
        area = self.size[0] * self.size[1]
        width = int(round(np.sqrt(area * aspect) / 2.0)) * 2
        return width, int(round(area / width / 2.0)) * 2

    def condition(self, index: int) -> str:
        return "dusk" if index % 8 == 5 else "standard"

    def camera(self, rng: np.random.Generator, width: int, height: int) -> CameraSpec:
        lateral = ("lane", "centre", "sidewalk")[rng.choice(3, p=[0.5, 0.25, 0.25])]
        return CameraSpec(
            focal=max(width, height) * rng.uniform(0.6, 1.0),
            horizon=height * rng.uniform(0.32, 0.6),
            height_m=rng.uniform(1.0, 3.2),
            lateral=lateral,
            roll_deg=rng.uniform(-5.0, 5.0),
            yaw_px=width * rng.normal(0.0, 0.06),
            hood=rng.uniform(0.85, 0.92) if rng.random() < 0.15 else 0.0,
        )

    def look(self, rng: np.random.Generator, item: Item) -> Look:
        return photo_look(
            rng,
            palette_jitter=0.1,
            colour_jitter=0.07,
            saturation=(0.7, 1.15),
            contrast=(0.85, 1.15),
            brightness=(0.85, 1.15),
        )


class ACDC(Domain):
    """``rgb_anon/<cond>/val/<seq>/<seq>_frame_NNNNNN_rgb_anon.png`` and ``gt/...`` train ids."""

    name = "acdc"
    folder = "acdc"

    def __init__(self, count: int, size: tuple[int, int], seed: int) -> None:
        if count < len(ACDC_CONDITIONS):
            raise ValueError(
                f"demo domain acdc: count must be >= 4 (one per condition), got {count}"
            )
        super().__init__(count, size, seed)

    def condition(self, index: int) -> str:
        return ACDC_CONDITIONS[index % len(ACDC_CONDITIONS)]

    def paths(self, index: int) -> tuple[str, str]:
        cond = self.condition(index)
        seq = ACDC_SEQUENCES[cond]
        stem = f"{seq}_frame_{index // len(ACDC_CONDITIONS):06d}"
        return (
            f"rgb_anon/{cond}/val/{seq}/{stem}_rgb_anon.png",
            f"gt/{cond}/val/{seq}/{stem}_gt_labelTrainIds.png",
        )

    def camera(self, rng: np.random.Generator, width: int, height: int) -> CameraSpec:
        return CameraSpec(
            focal=width * rng.uniform(0.65, 0.75),
            horizon=height * rng.uniform(0.42, 0.5),
            height_m=rng.uniform(1.45, 1.7),
        )


class DarkZurich(ACDC):
    """``rgb_anon/val/night/GOPR0356/GOPR0356_frame_NNNNNN_rgb_anon.png`` and ``gt/...``."""

    name = "dark_zurich"
    folder = "dark_zurich"

    def __init__(self, count: int, size: tuple[int, int], seed: int) -> None:
        Domain.__init__(self, count, size, seed)

    def condition(self, index: int) -> str:
        return "night"

    def paths(self, index: int) -> tuple[str, str]:
        stem = f"GOPR0356_frame_{index:06d}"
        return (
            f"rgb_anon/val/night/GOPR0356/{stem}_rgb_anon.png",
            f"gt/val/night/GOPR0356/{stem}_gt_labelTrainIds.png",
        )

    def look(self, rng: np.random.Generator, item: Item) -> Look:
        return replace(photo_look(rng, noise=(0.01, 0.02)), sodium=True)


class Prior(Domain):
    """``images/NNNNN.png``, ``labels/NNNNN_labelTrainIds.png`` and ``captions.csv``."""

    name = "prior"
    folder = "prior"

    def paths(self, index: int) -> tuple[str, str]:
        return f"images/{index:05d}.png", f"labels/{index:05d}_labelTrainIds.png"

    def condition(self, index: int) -> str:
        return CONDITIONS[index % len(CONDITIONS)]

    def camera(self, rng: np.random.Generator, width: int, height: int) -> CameraSpec:
        return CameraSpec(
            focal=width * rng.uniform(0.6, 1.0),
            horizon=height * rng.uniform(0.35, 0.55),
            height_m=rng.uniform(1.1, 2.5),
            lateral=("lane", "centre", "sidewalk")[rng.choice(3, p=[0.6, 0.25, 0.15])],
            roll_deg=rng.uniform(-3.0, 3.0) if rng.random() < 0.3 else 0.0,
            yaw_px=width * rng.normal(0.0, 0.04),
        )

    def look(self, rng: np.random.Generator, item: Item) -> Look:
        return photo_look(
            rng,
            palette_jitter=0.1,
            colour_jitter=0.07,
            saturation=(0.65, 1.1),
            contrast=(0.8, 1.15),
            clouds=(0.0, 1.0),
        )


DOMAIN_CLASSES: dict[str, type[Domain]] = {
    "source": Source,
    "source_val": SourceVal,
    "prior": Prior,
    "cityscapes": Cityscapes,
    "bdd100k": BDD100K,
    "mapillary": Mapillary,
    "acdc": ACDC,
    "dark_zurich": DarkZurich,
}


def build_domains(demo: dict) -> list[Domain]:
    """Every domain of a validated ``demo`` config section, in a fixed order."""
    seed = int(demo["seed"])
    out: list[Domain] = []
    for key in ("source", "source_val", "prior"):
        entry = demo[key]
        out.append(DOMAIN_CLASSES[key](entry["count"], tuple(entry["size"]), seed))
    for key in ("cityscapes", "bdd100k", "mapillary", "acdc", "dark_zurich"):
        entry = demo["targets"][key]
        out.append(DOMAIN_CLASSES[key](entry["count"], tuple(entry["size"]), seed))
    return out


def to_label_space(fine: np.ndarray, space: str) -> np.ndarray:
    """Fine labels in a dataset's id space (``cityscapes_ids``, ``mapillary_ids``, ``train_ids``)."""
    if space not in LABEL_SPACES:
        raise ValueError(f"unknown label space {space!r} (known: {sorted(LABEL_SPACES)})")
    return LABEL_SPACES[space][fine]
