"""The street of a demo scene: its layout (``sample_street``), the camera on it, and the ground.

A scene is a straight or gently bending street seen from a camera near its centre: road with lane
markings (sometimes a zebra crossing, manholes, tram rails, parking bays), curbs, an optional grass
verge, sidewalks, and along each side a run of segments (buildings, parks, walls, fences), whose
objects ``flexseg.data.demo.placement`` places. ``ground_buffers`` paints the ground plane and
the sky per pixel, the background every object is drawn over.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from flexseg.data.demo.classes import F, M, T
from flexseg.data.demo.geometry import SKY_DEPTH, Camera, GBuffer


@dataclass(frozen=True)
class CameraSpec:
    """How a domain places its camera; resolved to a ``Camera`` once the street is known.

    ``lateral``: "lane" (driving in a lane), "centre" or "sidewalk". ``hood``: the top of the ego
    vehicle's hood as a fraction of the image height (0 = no hood).
    """

    focal: float
    horizon: float
    height_m: float
    lateral: str = "lane"
    roll_deg: float = 0.0
    yaw_px: float = 0.0
    hood: float = 0.0


@dataclass(frozen=True)
class Segment:
    """A stretch of one side of the street, from ``z0`` to ``z1`` metres."""

    kind: str  # building | park | wall | fence
    z0: float
    z1: float
    setback: float
    height: float
    tint: float


@dataclass(frozen=True)
class Street:
    road_half: float
    curb: float
    verge: float
    sidewalk: float
    curve: float
    lanes_per_side: int
    lane_lines: int  # 0 none, 1 centre line, 2 centre and edge lines
    crosswalk: tuple[float, float] | None
    manholes: tuple[tuple[float, float], ...]
    rail_x: float | None
    parking: tuple[tuple[int, float, float], ...]
    left: tuple[Segment, ...]
    right: tuple[Segment, ...]
    end_z: float
    right_hand_traffic: bool
    asphalt_tint: float
    paving_tint: float
    grass_tint: float

    @property
    def sidewalk_inner(self) -> float:
        return self.road_half + self.curb + self.verge

    @property
    def property_line(self) -> float:
        return self.sidewalk_inner + self.sidewalk

    def segments(self, side: int) -> tuple[Segment, ...]:
        return self.right if side > 0 else self.left


def _segments(rng: np.random.Generator, end_z: float) -> tuple[Segment, ...]:
    kinds = ("building", "park", "wall", "fence")
    weights = np.array([0.64, 0.22, 0.07, 0.07])
    out = []
    z = -4.0
    while z < end_z:
        kind = kinds[rng.choice(4, p=weights)]
        length = rng.uniform(10.0, 34.0) if kind == "building" else rng.uniform(8.0, 24.0)
        height = float(np.clip(rng.lognormal(np.log(9.0), 0.5), 4.0, 35.0))
        setback = rng.uniform(0.0, 4.0) if kind == "building" else rng.uniform(0.0, 1.0)
        out.append(Segment(kind, z, min(z + length, end_z), setback, height, float(rng.random())))
        z += length
    return tuple(out)


def sample_street(rng: np.random.Generator) -> Street:
    lanes = 1 if rng.random() < 0.6 else 2
    road_half = lanes * rng.uniform(3.0, 3.6)
    end_z = rng.uniform(70.0, 160.0)
    crosswalk = None
    if rng.random() < 0.35:
        c0 = rng.uniform(8.0, 35.0)
        crosswalk = (c0, c0 + rng.uniform(3.0, 5.0))
    manholes = tuple(
        (rng.uniform(-road_half + 0.5, road_half - 0.5), rng.uniform(4.0, 40.0))
        for _ in range(rng.integers(0, 3))
    )
    rail_x = rng.uniform(-0.5, 0.5) * road_half if rng.random() < 0.12 else None
    parking = tuple(
        (int(rng.choice([-1, 1])), z0, z0 + rng.uniform(8.0, 25.0))
        for z0 in rng.uniform(3.0, 50.0, size=rng.integers(0, 3))
    )
    return Street(
        road_half=road_half,
        curb=0.2,
        verge=rng.uniform(0.8, 2.5) if rng.random() < 0.3 else 0.0,
        sidewalk=rng.uniform(1.8, 3.6),
        curve=rng.normal(0.0, 0.0012) if rng.random() < 0.5 else 0.0,
        lanes_per_side=lanes,
        lane_lines=int(rng.choice([0, 1, 2], p=[0.15, 0.45, 0.40])),
        crosswalk=crosswalk,
        manholes=manholes,
        rail_x=rail_x,
        parking=parking,
        left=_segments(rng, end_z),
        right=_segments(rng, end_z),
        end_z=end_z,
        right_hand_traffic=bool(rng.random() < 0.85),
        asphalt_tint=float(rng.random()),
        paving_tint=float(rng.random()),
        grass_tint=float(rng.random()),
    )


def _force_segment(street: Street, rng: np.random.Generator, kind: str) -> Street:
    """The street with one near segment (on a random side) turned into ``kind``."""
    side = int(rng.choice([-1, 1]))
    segs = list(street.segments(side))
    near = [i for i, g in enumerate(segs) if g.z1 > 6.0 and g.z0 < 30.0]
    i = near[int(rng.integers(len(near)))]
    segs[i] = replace(segs[i], kind=kind)
    return replace(street, right=tuple(segs)) if side > 0 else replace(street, left=tuple(segs))


def street_showing(street: Street, rng: np.random.Generator, require: int | None) -> Street:
    """``street`` changed, where the class ``require`` (a train id) needs it, to have a place for
    it: tram rails for a train, a near wall, fence or building, a grass verge for terrain."""
    if require == T.TRAIN and street.rail_x is None:
        street = replace(street, rail_x=float(rng.uniform(-0.5, 0.5) * street.road_half))
    if require in (T.WALL, T.FENCE):
        street = _force_segment(street, rng, "wall" if require == T.WALL else "fence")
    if require == T.TERRAIN and street.verge == 0:
        street = replace(street, verge=float(rng.uniform(0.8, 2.5)))
    if require == T.BUILDING:
        street = _force_segment(street, rng, "building")
    return street


def resolve_camera(
    spec: CameraSpec, street: Street, width: int, height: int, rng: np.random.Generator
) -> Camera:
    if spec.lateral == "lane":
        lane_w = street.road_half / street.lanes_per_side
        side = 1.0 if street.right_hand_traffic else -1.0
        x = side * lane_w * (rng.integers(street.lanes_per_side) + 0.5) + rng.normal(0.0, 0.3)
    elif spec.lateral == "centre":
        x = rng.normal(0.0, 0.5)
    elif spec.lateral == "sidewalk":
        x = rng.choice([-1.0, 1.0]) * (
            street.sidewalk_inner + street.sidewalk * rng.uniform(0.3, 0.7)
        )
    else:
        raise ValueError(f"camera lateral must be lane, centre or sidewalk, got {spec.lateral!r}")
    return Camera(
        width=width,
        height=height,
        focal=spec.focal,
        cx=width / 2.0 + spec.yaw_px,
        horizon=spec.horizon,
        height_m=spec.height_m,
        x_m=float(x),
        roll_deg=spec.roll_deg,
    )


class _Ground:
    """The ground position of every pixel and the class, material and tint painted on it so far."""

    def __init__(self, x: np.ndarray, z: np.ndarray, tint: float) -> None:
        self.x, self.z = x, z
        self.a = np.abs(x)
        self.side = np.where(x >= 0, 1, -1)
        self.fine = np.full(x.shape, F.SIDEWALK, np.uint8)
        self.mat = np.full(x.shape, M.PAVING, np.uint8)
        self.tint = np.full(x.shape, tint, np.float32)

    def put(self, mask: np.ndarray, f: int, m: int, t: float | np.ndarray) -> None:
        self.fine[mask] = f
        self.mat[mask] = m
        self.tint[mask] = t if np.isscalar(t) else t[mask]


def _paint_roadside(g: _Ground, street: Street) -> None:
    """Beyond the sidewalk terrain in front of parks and fences, paving in front of buildings;
    then the sidewalk, the verge and the curb."""
    for s in (-1, 1):
        segs = street.segments(s)
        z0s = np.array([seg.z0 for seg in segs])
        grassy = np.array([seg.kind in ("park", "fence") for seg in segs])
        k = np.clip(np.searchsorted(z0s, g.z, side="right") - 1, 0, len(segs) - 1)
        mask = (g.side == s) & (g.a >= street.property_line) & grassy[k]
        g.put(mask, F.TERRAIN, M.GRASS, street.grass_tint)
    g.put(g.a < street.property_line, F.SIDEWALK, M.PAVING, street.paving_tint)
    if street.verge > 0:
        g.put(g.a < street.sidewalk_inner, F.TERRAIN, M.GRASS, street.grass_tint)
    g.put(g.a < street.road_half + street.curb, F.CURB, M.CURB, 0.5)


def _paint_road(g: _Ground, street: Street) -> None:
    """The asphalt, parking bays, lane lines, the zebra crossing, manholes and tram rails."""
    x, z, a = g.x, g.z, g.a
    road = a < street.road_half
    g.put(road, F.ROAD, M.ASPHALT, street.asphalt_tint)
    for s, z0, z1 in street.parking:
        bay = road & (g.side == s) & (a > street.road_half - 2.3) & (z > z0) & (z < z1)
        g.put(bay, F.PARKING, M.PARKING, 0.5)
    if street.lane_lines:
        dashed = np.mod(z, 9.0) < 4.5
        lane_w = street.road_half / street.lanes_per_side
        lines = np.abs(x) < 0.08
        for k in range(1, street.lanes_per_side):
            lines |= (np.abs(a - k * lane_w) < 0.07) & dashed
        if street.lanes_per_side == 1:
            lines &= dashed
        if street.lane_lines == 2:
            lines |= np.abs(a - (street.road_half - 0.3)) < 0.08
        g.put(road & lines, F.LANE_MARKING, M.LANE_PAINT, 0.5)
    if street.crosswalk is not None:
        c0, c1 = street.crosswalk
        stripes = np.mod(x + 100.0, 1.0) < 0.5
        g.put(road & (z > c0) & (z < c1) & stripes, F.CROSSWALK, M.ZEBRA_PAINT, 0.5)
        ahead = x * (1 if street.right_hand_traffic else -1) > 0
        stop_line = road & (z > c0 - 1.0) & (z < c0 - 0.6) & ahead
        g.put(stop_line, F.LANE_MARKING, M.LANE_PAINT, 0.5)
    for mx, mz in street.manholes:
        g.put(road & ((x - mx) ** 2 + (z - mz) ** 2 < 0.35**2), F.MANHOLE, M.MANHOLE, 0.5)
    if street.rail_x is not None:
        d = np.abs(x - street.rail_x)
        rails = np.where(np.abs(d - 0.72) < 0.05, 1.0, 0.2).astype(np.float32)
        g.put(d < 0.8, F.RAIL_TRACK, M.RAIL, rails)


def ground_buffers(cam: Camera, street: Street) -> GBuffer:
    """The ground plane (below the horizon) and the sky (above it), per pixel."""
    h, w = cam.height, cam.width
    v = np.arange(h, dtype=np.float64)[:, None] + 0.5
    u = np.arange(w, dtype=np.float64)[None, :] + 0.5
    dv = v - cam.horizon
    below = np.broadcast_to(dv > 1e-3, (h, w))
    z = np.minimum(cam.focal * cam.height_m / np.maximum(dv, 1e-3), 5000.0)
    z = np.broadcast_to(z, (h, w))
    x = cam.x_m + (u - cam.cx) * z / cam.focal - street.curve * z * z
    g = _Ground(x, z, street.paving_tint)
    _paint_roadside(g, street)
    _paint_road(g, street)

    g.fine[~below] = F.SKY
    g.mat[~below] = M.SKY
    # The sky's tint runs from the top of the image (0) to the horizon (1), for its gradient.
    sky_t = np.clip(v / max(cam.horizon, 1.0), 0.0, 1.0).astype(np.float32)
    tint = np.where(below, g.tint, np.broadcast_to(sky_t, (h, w))).astype(np.float32)
    nan = np.float32(np.nan)
    return GBuffer(
        fine=g.fine,
        material=g.mat,
        tint=tint,
        shade=np.ones((h, w), np.float32),
        depth=np.where(below, z, SKY_DEPTH).astype(np.float32),
        ground_x=np.where(below, x, nan).astype(np.float32),
        ground_z=np.where(below, z, nan).astype(np.float32),
    )
