"""Street layouts and the objects on them.

A scene is a straight or gently bending street seen from a camera near its centre: road with lane
markings (sometimes a zebra crossing, manholes, tram rails, parking bays), curbs, an optional grass
verge, sidewalks, and along each side a run of segments (buildings, parks, walls, fences), with a
backdrop across the far end. Vehicles drive in the lanes or are parked at the edge; poles, lamps,
signs, traffic lights, trees, furniture and people stand on the sidewalks.

Frequencies are long-tailed on purpose (road, building, sky and vegetation cover most pixels;
trains, motorcycles, riders and bicycles are rare), so that rare-class sampling matters.
``render_scene(..., require=c)`` adds an object of train id ``c`` near the camera and re-draws the
scene until that class is visible; the domains use it to guarantee that every class appears.

Everything is drawn from the ``numpy.random.Generator`` passed in, in a fixed order, so a scene
is a pure function of the generator's seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from flexseg.data.demo.classes import FINE_TO_TRAIN, F, M
from flexseg.data.demo.geometry import (
    SKY_DEPTH,
    Camera,
    Canvas,
    GBuffer,
    along,
    facing,
    ring,
    roll_gbuffer,
)
from flexseg.labels import NUM_CLASSES

# Train ids (flexseg.labels.CLASS_NAMES order) used when forcing a class into a scene.
ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, TRAFFIC_LIGHT, TRAFFIC_SIGN = range(8)
VEGETATION, TERRAIN, SKY, PERSON, RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE = range(8, 19)

MIN_REQUIRED_PX = 6  # a forced class must cover at least this many pixels
MAX_ATTEMPTS = 40


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


@dataclass
class Render:
    """A rendered scene: its per-pixel buffers, the camera, and the street lamps (x, y, z)."""

    gbuffer: GBuffer
    camera: Camera
    lights: list[tuple[float, float, float]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Street layout


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
    a = np.abs(x)
    side = np.where(x >= 0, 1, -1)

    fine = np.full((h, w), F.SIDEWALK, np.uint8)
    mat = np.full((h, w), M.PAVING, np.uint8)
    tint = np.full((h, w), street.paving_tint, np.float32)

    def put(mask: np.ndarray, f: int, m: int, t: float | np.ndarray) -> None:
        fine[mask] = f
        mat[mask] = m
        tint[mask] = t if np.isscalar(t) else t[mask]

    # Beyond the sidewalk: terrain in front of parks and fences, paving in front of buildings.
    for s in (-1, 1):
        segs = street.segments(s)
        z0s = np.array([g.z0 for g in segs])
        grassy = np.array([g.kind in ("park", "fence") for g in segs])
        k = np.clip(np.searchsorted(z0s, z, side="right") - 1, 0, len(segs) - 1)
        put(
            (side == s) & (a >= street.property_line) & grassy[k],
            F.TERRAIN,
            M.GRASS,
            street.grass_tint,
        )
    put(a < street.property_line, F.SIDEWALK, M.PAVING, street.paving_tint)
    if street.verge > 0:
        put(a < street.sidewalk_inner, F.TERRAIN, M.GRASS, street.grass_tint)
    put(a < street.road_half + street.curb, F.CURB, M.CURB, 0.5)
    road = a < street.road_half
    put(road, F.ROAD, M.ASPHALT, street.asphalt_tint)
    for s, z0, z1 in street.parking:
        put(
            road & (side == s) & (a > street.road_half - 2.3) & (z > z0) & (z < z1),
            F.PARKING,
            M.PARKING,
            0.5,
        )
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
        put(road & lines, F.LANE_MARKING, M.LANE_PAINT, 0.5)
    if street.crosswalk is not None:
        c0, c1 = street.crosswalk
        stripes = np.mod(x + 100.0, 1.0) < 0.5
        put(road & (z > c0) & (z < c1) & stripes, F.CROSSWALK, M.ZEBRA_PAINT, 0.5)
        put(
            road
            & (z > c0 - 1.0)
            & (z < c0 - 0.6)
            & (x * (1 if street.right_hand_traffic else -1) > 0),
            F.LANE_MARKING,
            M.LANE_PAINT,
            0.5,
        )
    for mx, mz in street.manholes:
        put(road & ((x - mx) ** 2 + (z - mz) ** 2 < 0.35**2), F.MANHOLE, M.MANHOLE, 0.5)
    if street.rail_x is not None:
        d = np.abs(x - street.rail_x)
        put(
            d < 0.8,
            F.RAIL_TRACK,
            M.RAIL,
            np.where(np.abs(d - 0.72) < 0.05, 1.0, 0.2).astype(np.float32),
        )

    fine[~below] = F.SKY
    mat[~below] = M.SKY
    # The sky's tint runs from the top of the image (0) to the horizon (1), for its gradient.
    sky_t = np.clip(v / max(cam.horizon, 1.0), 0.0, 1.0).astype(np.float32)
    tint = np.where(below, tint, np.broadcast_to(sky_t, (h, w))).astype(np.float32)
    nan = np.float32(np.nan)
    return GBuffer(
        fine=fine,
        material=mat,
        tint=tint,
        shade=np.ones((h, w), np.float32),
        depth=np.where(below, z, SKY_DEPTH).astype(np.float32),
        ground_x=np.where(below, x, nan).astype(np.float32),
        ground_z=np.where(below, z, nan).astype(np.float32),
    )


# ---------------------------------------------------------------------------------------------
# Objects. Each `_draw_*` draws one object at (x, z) = its centre line and nearest end; the
# parameters are drawn from the generator when the object is placed, not when it is drawn.


def _rect(x0: float, x1: float, y0: float, y1: float) -> list[tuple[float, float]]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def _visible_side(cv: Canvas, x: float, z: float, half_width: float) -> float | None:
    """The x of the vehicle side the camera sees, or None when it sees only the end face."""
    rel = cv.relative_x(x, z)
    if rel > half_width:
        return x - half_width
    if rel < -half_width:
        return x + half_width
    return None


def _wheels(
    cv: Canvas, xs: float, z: float, length: float, r: float, fine: int, dzs: list[float]
) -> None:
    for dz in dzs:
        cv.poly(ring((xs, r, z + dz * length), r, "x", 10), fine, M.TYRE, 0.5, 1.0)


def _draw_car(cv: Canvas, x: float, z: float, away: bool, p: dict) -> None:
    w, L, tint = p["w"], p["L"], p["tint"]
    prof = [
        (0, 0.28),
        (0, 0.95),
        (0.1, 1.0),
        (0.28, 1.42),
        (0.72, 1.42),
        (0.88, 1.0),
        (1, 0.92),
        (1, 0.28),
    ]
    win = [(0.31, 1.03), (0.34, 1.36), (0.68, 1.36), (0.8, 1.03)]
    if not away:
        prof = [(1 - d, y) for d, y in prof]
        win = [(1 - d, y) for d, y in win]
    xs = _visible_side(cv, x, z, w / 2)
    if xs is not None:
        cv.poly(along(xs, z, [(d * L, y) for d, y in prof]), F.CAR, M.CAR_PAINT, tint, 0.78, xs)
        cv.poly(along(xs, z, [(d * L, y) for d, y in win]), F.CAR, M.GLASS, tint, 0.8, xs)
        _wheels(cv, xs, z, L, 0.32, F.CAR, [0.18, 0.82])
    body = [
        (-w / 2, 0.25),
        (w / 2, 0.25),
        (w / 2, 0.95),
        (0.42 * w, 1.02),
        (0.36 * w, 1.45),
        (-0.36 * w, 1.45),
        (-0.42 * w, 1.02),
        (-w / 2, 0.95),
    ]
    cv.poly(facing(x, z, body), F.CAR, M.CAR_PAINT, tint, 1.0)
    cv.poly(
        facing(x, z, [(-0.34 * w, 1.05), (0.34 * w, 1.05), (0.31 * w, 1.38), (-0.31 * w, 1.38)]),
        F.CAR,
        M.GLASS,
        tint,
        1.0,
    )
    light = M.TAILLIGHT if away else M.HEADLIGHT
    for s in (-1, 1):
        cx = s * (w / 2 - 0.2)
        cv.poly(facing(x, z, _rect(cx - 0.13, cx + 0.13, 0.7, 0.84)), F.CAR, light, 0.5, 1.0)
        cv.poly(facing(x, z, _rect(cx - 0.12, cx + 0.12, 0.0, 0.28)), F.CAR, M.TYRE, 0.5, 1.0)


def _draw_truck(cv: Canvas, x: float, z: float, away: bool, p: dict) -> None:
    w, L, box_h, cab_h, tint = p["w"], p["L"], p["box_h"], 2.9, p["tint"]
    cab = 2.3 / L
    box = [(0, 0.5), (1 - cab, 0.5), (1 - cab, box_h), (0, box_h)]
    cabp = [(1 - cab, 0.4), (1, 0.4), (1, 2.0), (1 - 0.3 * cab, cab_h), (1 - cab, cab_h)]
    if not away:
        box = [(1 - d, y) for d, y in box]
        cabp = [(1 - d, y) for d, y in cabp]
    xs = _visible_side(cv, x, z, w / 2)
    if xs is not None:
        cv.poly(along(xs, z, [(d * L, y) for d, y in box]), F.TRUCK, M.TRUCK_PAINT, tint, 0.8, xs)
        cv.poly(
            along(xs, z, [(d * L, y) for d, y in cabp]), F.TRUCK, M.TRUCK_PAINT, 1 - tint, 0.8, xs
        )
        _wheels(cv, xs, z, L, 0.48, F.TRUCK, [0.12, 0.3, 0.85] if away else [0.15, 0.7, 0.88])
    if away:
        cv.poly(facing(x, z, _rect(-w / 2, w / 2, 0.5, box_h)), F.TRUCK, M.TRUCK_PAINT, tint, 1.0)
        cv.poly(facing(x, z, _rect(-0.02, 0.02, 0.55, box_h - 0.05)), F.TRUCK, M.TYRE, 0.5, 1.0)
        light = M.TAILLIGHT
    else:
        cv.poly(
            facing(x, z + 2.3, _rect(-w / 2, w / 2, 0.5, box_h)), F.TRUCK, M.TRUCK_PAINT, tint, 0.9
        )
        cv.poly(
            facing(x, z, _rect(-w / 2, w / 2, 0.4, cab_h)), F.TRUCK, M.TRUCK_PAINT, 1 - tint, 1.0
        )
        cv.poly(
            facing(x, z, _rect(-0.45 * w, 0.45 * w, 1.7, cab_h - 0.2)), F.TRUCK, M.GLASS, 0.5, 1.0
        )
        light = M.HEADLIGHT
    for s in (-1, 1):
        cx = s * (w / 2 - 0.25)
        cv.poly(facing(x, z, _rect(cx - 0.15, cx + 0.15, 0.6, 0.8)), F.TRUCK, light, 0.5, 1.0)
        cv.poly(facing(x, z, _rect(cx - 0.2, cx + 0.2, 0.0, 0.5)), F.TRUCK, M.TYRE, 0.5, 1.0)


def _draw_bus(cv: Canvas, x: float, z: float, away: bool, p: dict) -> None:
    w, L, hb, tint = 2.55, p["L"], 3.1, p["tint"]
    xs = _visible_side(cv, x, z, w / 2)
    if xs is not None:
        cv.poly(along(xs, z, _rect(0, L, 0.3, hb)), F.BUS, M.BUS_PAINT, tint, 0.8, xs)
        cv.poly(along(xs, z, _rect(0.4, L - 0.4, 1.3, 2.6)), F.BUS, M.GLASS, 0.5, 0.8, xs)
        door = 1.2 if away else L - 2.4
        cv.poly(along(xs, z, _rect(door, door + 1.2, 0.35, 2.6)), F.BUS, M.GLASS, 0.2, 0.7, xs)
        _wheels(cv, xs, z, L, 0.5, F.BUS, [0.2, 0.8])
    cv.poly(facing(x, z, _rect(-w / 2, w / 2, 0.3, hb)), F.BUS, M.BUS_PAINT, tint, 1.0)
    lo = 1.9 if away else 1.0
    cv.poly(facing(x, z, _rect(-0.44 * w, 0.44 * w, lo, 2.8)), F.BUS, M.GLASS, 0.5, 1.0)
    light = M.TAILLIGHT if away else M.HEADLIGHT
    for s in (-1, 1):
        cx = s * (w / 2 - 0.25)
        cv.poly(facing(x, z, _rect(cx - 0.15, cx + 0.15, 0.55, 0.8)), F.BUS, light, 0.5, 1.0)
        cv.poly(facing(x, z, _rect(cx - 0.2, cx + 0.2, 0.0, 0.3)), F.BUS, M.TYRE, 0.5, 1.0)


def _draw_train(cv: Canvas, x: float, z: float, away: bool, p: dict) -> None:
    w, L, ht, tint = 2.65, p["L"], 3.5, p["tint"]
    xs = _visible_side(cv, x, z, w / 2)
    if xs is not None:
        cv.poly(
            along(xs, z, [(0, 0.5), (L, 0.5), (L, ht), (1.2, ht), (0, ht - 0.8)]),
            F.TRAIN,
            M.TRAIN_PAINT,
            tint,
            0.8,
            xs,
        )
        for k in range(int((L - 3.0) // 2.4)):
            dz = 2.0 + 2.4 * k
            cv.poly(along(xs, z, _rect(dz, dz + 1.5, 1.6, 2.7)), F.TRAIN, M.GLASS, 0.5, 0.8, xs)
        for dz in (2.5, L - 2.5):
            cv.poly(
                along(xs, z, _rect(dz - 1.2, dz + 1.2, 0.1, 0.6)), F.TRAIN, M.TYRE, 0.5, 0.8, xs
            )
        cv.line(
            along(xs - np.sign(xs - x) * 1.0, z, [(4.0, ht), (5.0, ht + 1.4), (6.0, ht + 1.4)]),
            0.06,
            F.TRAIN,
            M.METAL,
            0.5,
            0.8,
        )
    cv.poly(
        facing(
            x,
            z,
            [
                (-w / 2, 0.1),
                (w / 2, 0.1),
                (w / 2, ht - 0.5),
                (0.35 * w, ht),
                (-0.35 * w, ht),
                (-w / 2, ht - 0.5),
            ],
        ),
        F.TRAIN,
        M.TRAIN_PAINT,
        tint,
        1.0,
    )
    cv.poly(facing(x, z, _rect(-0.4 * w, 0.4 * w, 1.9, ht - 0.35)), F.TRAIN, M.GLASS, 0.5, 1.0)
    light = M.TAILLIGHT if away else M.HEADLIGHT
    for s in (-1, 1):
        cv.poly(
            facing(x, z, _rect(s * 0.9 - 0.15, s * 0.9 + 0.15, 0.9, 1.1)), F.TRAIN, light, 0.5, 1.0
        )


def _draw_rider(cv: Canvas, x: float, z: float, fine: int, p: dict, seat: float) -> None:
    cloth, skin = p["cloth"], p["skin"]
    for s in (-1, 1):
        cv.poly(
            facing(x, z, _rect(s * 0.3 - 0.07, s * 0.3 + 0.07, seat - 0.45, seat)),
            fine,
            M.CLOTH,
            cloth,
            0.8,
        )
    cv.poly(
        facing(x, z, [(-0.2, seat), (0.2, seat), (0.22, seat + 0.6), (-0.22, seat + 0.6)]),
        fine,
        M.CLOTH,
        1 - cloth,
        1.0,
    )
    for s in (-1, 1):
        cv.line(
            facing(x, z, [(s * 0.22, seat + 0.55), (s * 0.32, seat + 0.15)]),
            0.08,
            fine,
            M.SKIN,
            skin,
            1.0,
        )
    helmet = M.MOTO_PAINT if fine == F.MOTORCYCLIST else M.HAIR
    cv.poly(ring((x, seat + 0.78, z), 0.14, "z", 10), fine, helmet, p["helmet"], 1.0)


def _draw_motorcycle(cv: Canvas, x: float, z: float, away: bool, p: dict) -> None:
    L, tint = 2.0, p["tint"]
    xs = _visible_side(cv, x, z, 0.3)
    if xs is not None:
        _wheels(cv, xs, z, L, 0.31, F.MOTORCYCLE, [0.14, 0.86])
        body = [(0.3, 0.45), (1.7, 0.45), (1.6, 0.95), (0.9, 1.0), (0.45, 0.85)]
        cv.poly(
            along(xs, z, [(d * L / 2, y) for d, y in body]),
            F.MOTORCYCLE,
            M.MOTO_PAINT,
            tint,
            0.8,
            xs,
        )
    cv.poly(facing(x, z, _rect(-0.08, 0.08, 0.0, 0.62)), F.MOTORCYCLE, M.TYRE, 0.5, 1.0)
    cv.poly(facing(x, z, _rect(-0.3, 0.3, 0.5, 0.95)), F.MOTORCYCLE, M.MOTO_PAINT, tint, 1.0)
    light = M.TAILLIGHT if away else M.HEADLIGHT
    cv.poly(facing(x, z, _rect(-0.08, 0.08, 0.8, 0.9)), F.MOTORCYCLE, light, 0.5, 1.0)
    if p["rider"]:
        _draw_rider(cv, x, z + 0.05, F.MOTORCYCLIST, p, 0.95)


def _draw_bicycle(cv: Canvas, x: float, z: float, plane: str, p: dict) -> None:
    L, r, tint = 1.75, 0.34, p["tint"]

    def pt(d: float, y: float) -> tuple[float, float, float]:
        return (x, y, z + d) if plane == "x" else (x + d - L / 2, y, z)

    rear, front, bb, seat, head = (0.32, r), (L - 0.32, r), (0.8, 0.3), (0.68, 0.95), (1.3, 1.0)
    for hub in (rear, front):
        c = pt(*hub)
        cv.line(ring(c, r, plane, 12), 0.05, F.BICYCLE, M.TYRE, 0.5, 1.0, closed=True)
    frame = [rear, bb, seat, rear, seat, head, bb, head, front, head, (1.25, 1.15)]
    cv.line(np.array([pt(*q) for q in frame]), 0.04, F.BICYCLE, M.BIKE_FRAME, tint, 1.0)
    if p["rider"]:
        c = pt(L / 2, 0.0)
        _draw_rider(cv, c[0], c[2], F.BICYCLIST, p, 0.95)


def _draw_person(cv: Canvas, x: float, z: float, p: dict) -> None:
    hp, stride, wscale = p["h"], p["stride"], p["wscale"]
    hip, sh = 0.5 * hp, 0.82 * hp
    for s in (-1, 1):
        foot = s * (0.09 + stride)
        cv.poly(
            facing(
                x, z, [(s * 0.05, hip), (s * 0.15, hip), (foot + 0.05, 0.0), (foot - 0.06, 0.0)]
            ),
            F.PERSON,
            M.CLOTH,
            p["legs"],
            0.85,
        )
    cv.poly(
        facing(
            x,
            z,
            [(-0.16 * wscale, hip), (0.16 * wscale, hip), (0.2 * wscale, sh), (-0.2 * wscale, sh)],
        ),
        F.PERSON,
        M.CLOTH,
        p["top"],
        1.0,
    )
    for s in (-1, 1):
        cv.line(
            facing(x, z, [(s * 0.2 * wscale, sh - 0.03), (s * (0.26 + stride / 2), hip)]),
            0.08,
            F.PERSON,
            M.CLOTH,
            p["top"],
            0.9,
        )
    cv.poly(ring((x, 0.91 * hp, z), 0.068 * hp, "z", 10), F.PERSON, M.SKIN, p["skin"], 1.0)
    cv.poly(
        facing(
            x,
            z,
            [
                (-0.068 * hp, 0.92 * hp),
                (0.068 * hp, 0.92 * hp),
                (0.05 * hp, 0.975 * hp),
                (-0.05 * hp, 0.975 * hp),
            ],
        ),
        F.PERSON,
        M.HAIR,
        p["hair"],
        1.0,
    )


def _draw_tree(cv: Canvas, x: float, z: float, p: dict) -> None:
    trunk_h, crown = p["trunk_h"], p["crown"]
    cv.poly(
        facing(x, z, _rect(-0.15, 0.15, 0.0, trunk_h + 0.5)), F.VEGETATION, M.BARK, p["tint"], 1.0
    )
    for dx, dy, rr, t in p["blobs"]:
        cv.poly(
            ring((x + dx * crown, trunk_h + crown + dy * crown, z), rr * crown, "z", 12),
            F.VEGETATION,
            M.FOLIAGE,
            t,
            0.85 + 0.3 * t,
        )


def _draw_lamp(cv: Canvas, x: float, z: float, side: int, p: dict) -> None:
    h = p["h"]
    fine = F.UTILITY_POLE if p["utility"] else F.POLE
    cv.line(
        facing(x, z, [(0, 0), (0, h)]),
        0.16 if not p["utility"] else 0.26,
        fine,
        M.METAL,
        p["tint"],
        1.0,
    )
    arm = -side * 1.6
    cv.line(
        facing(x, z, [(0, h - 0.2), (arm * 0.6, h + 0.2), (arm, h + 0.2)]),
        0.08,
        fine,
        M.METAL,
        p["tint"],
        1.0,
    )
    cv.poly(
        facing(x, z, _rect(arm - 0.3, arm + 0.3, h - 0.05, h + 0.2)),
        F.STREET_LIGHT,
        M.LAMP,
        0.5,
        1.0,
    )


def _draw_sign(cv: Canvas, x: float, z: float, p: dict) -> None:
    h = p["h"]
    cv.line(facing(x, z, [(0, 0), (0, h)]), 0.08, F.POLE, M.METAL, p["pole_tint"], 1.0)
    for k, (shape, tint) in enumerate(p["plates"]):
        y = h - 0.35 - 0.75 * k
        if shape == "circle":
            pts = ring((x, y, z), 0.32, "z", 14)
        elif shape == "triangle":
            pts = facing(x, z, [(-0.36, y + 0.3), (0.36, y + 0.3), (0.0, y - 0.33)])
        elif shape == "square":
            pts = facing(x, z, _rect(-0.3, 0.3, y - 0.3, y + 0.3))
        else:
            pts = facing(x, z, _rect(-0.6, 0.6, y - 0.25, y + 0.25))
        cv.poly(pts, F.TRAFFIC_SIGN, M.SIGN, tint, 1.0)


def _draw_traffic_light(cv: Canvas, x: float, z: float, side: int, p: dict) -> None:
    if p["mast"]:
        h = 5.6
        cv.line(facing(x, z, [(0, 0), (0, h)]), 0.2, F.POLE, M.METAL, p["tint"], 1.0)
        cv.line(
            facing(x, z, [(0, h - 0.3), (p["reach"], h - 0.3)]),
            0.12,
            F.POLE,
            M.METAL,
            p["tint"],
            1.0,
        )
        hx, top = p["reach"] * 0.85, h - 0.35
    else:
        h = p["h"]
        cv.line(facing(x, z, [(0, 0), (0, h)]), 0.14, F.POLE, M.METAL, p["tint"], 1.0)
        hx, top = 0.0, h + 0.2
    cv.poly(
        facing(x, z, _rect(hx - 0.18, hx + 0.18, top - 0.95, top)),
        F.TRAFFIC_LIGHT,
        M.TL_HOUSING,
        0.5,
        1.0,
    )
    lit = p["lit"]
    for k, lamp in enumerate((M.TL_RED, M.TL_OFF, M.TL_GREEN)):
        mat = lamp if (k == 0 and lit == "red") or (k == 2 and lit == "green") else M.TL_OFF
        cv.poly(
            ring((x + hx, top - 0.17 - 0.3 * k, z), 0.1, "z", 8), F.TRAFFIC_LIGHT, mat, k / 2, 1.0
        )


def _draw_furniture(cv: Canvas, x: float, z: float, p: dict) -> None:
    if p["kind"] == "bin":
        cv.poly(facing(x, z, _rect(-0.28, 0.28, 0.0, 0.95)), F.STATIC, M.FURNITURE, p["tint"], 1.0)
        cv.poly(facing(x, z, _rect(-0.31, 0.31, 0.95, 1.05)), F.STATIC, M.FURNITURE, p["tint"], 0.7)
    elif p["kind"] == "bench":
        cv.poly(facing(x, z, _rect(-0.8, 0.8, 0.42, 0.5)), F.STATIC, M.FURNITURE, p["tint"], 1.0)
        cv.poly(facing(x, z, _rect(-0.8, 0.8, 0.6, 0.9)), F.STATIC, M.FURNITURE, p["tint"], 0.85)
        for s in (-1, 1):
            cv.line(
                facing(x, z, [(s * 0.7, 0), (s * 0.7, 0.45)]), 0.06, F.STATIC, M.METAL, 0.5, 1.0
            )
    else:
        cv.poly(facing(x, z, _rect(-0.14, 0.14, 0.0, 0.65)), F.STATIC, M.FURNITURE, p["tint"], 1.0)
        cv.poly(ring((x, 0.68, z), 0.14, "z", 8), F.STATIC, M.FURNITURE, p["tint"], 0.8)


def _draw_cable(cv: Canvas, z: float, p: dict) -> None:
    xs = np.linspace(-p["span"], p["span"], 16)
    ys = p["h"] - p["sag"] * (1.0 - (xs / p["span"]) ** 2)
    cv.line(np.stack([xs, ys, np.full_like(xs, z)], 1), 0.03, F.UNLABELED, M.CABLE, 0.5, 1.0)


def _draw_facade(
    cv: Canvas, street: Street, side: int, seg: Segment, rng_windows: np.random.Generator
) -> None:
    """A building front (and its near end wall) in the plane x = side * (property line + setback)."""
    x0 = side * (street.property_line + seg.setback)
    shade = 1.0 if side < 0 else 0.78
    z0 = max(seg.z0, 0.6)
    if seg.z1 <= z0:
        return
    edges = np.linspace(z0, seg.z1, int(np.ceil((seg.z1 - z0) / 8.0)) + 1)
    for za, zb in zip(edges[:-1], edges[1:], strict=True):
        cv.poly(
            along(x0, 0.0, [(za, 0), (zb, 0), (zb, seg.height), (za, seg.height)]),
            F.BUILDING,
            M.FACADE,
            seg.tint,
            shade,
            x0,
        )
    if seg.z0 > 0.6:
        cv.poly(
            facing(
                x0, seg.z0, [(0, 0), (side * 14.0, 0), (side * 14.0, seg.height), (0, seg.height)]
            ),
            F.BUILDING,
            M.FACADE,
            seg.tint,
            0.9 * shade,
        )
    # Windows only where they are at least about a pixel and a half wide.
    floors = int((seg.height - 1.5) // 3.2)
    if floors < 1:
        return
    zw = z0 + 0.9 + 3.0 * np.arange(int((seg.z1 - z0) // 3.0))
    zw = zw[(cv.pixels_per_metre(1.0) * 1.2 / np.maximum(zw, 0.5) >= 1.5) & (zw + 1.2 <= seg.z1)]
    if len(zw) == 0:
        return
    lit = rng_windows.random((len(zw), floors)) < 0.3
    doors = zw[rng_windows.random(len(zw)) < 0.15]
    if len(doors):
        cv.poly(_quads(x0, doors, 1.4, 0.0, 2.4), F.BUILDING, M.DOOR, seg.tint, shade, x0)
    zz = np.repeat(zw, floors)
    yy = np.tile(1.2 + np.arange(1, floors + 1) * 3.2 - 1.8, len(zw))
    lit = lit.reshape(-1)
    for mat, sel in ((M.WINDOW, ~lit), (M.WINDOW_LIT, lit)):
        if sel.any():
            cv.poly(_quads(x0, zz[sel], 1.2, yy[sel], 1.5), F.BUILDING, mat, seg.tint, shade, x0)


def _quads(x0: float, z: np.ndarray, length: float, y: np.ndarray | float, h: float) -> np.ndarray:
    """(K, 4, 3) rectangles in the plane x = x0, from (z, y) to (z + length, y + h)."""
    z = np.asarray(z, dtype=float)
    y = np.broadcast_to(np.asarray(y, dtype=float), z.shape)
    out = np.empty((len(z), 4, 3))
    out[:, :, 0] = x0
    out[:, 0, 1:] = np.stack([y, z], 1)
    out[:, 1, 1:] = np.stack([y, z + length], 1)
    out[:, 2, 1:] = np.stack([y + h, z + length], 1)
    out[:, 3, 1:] = np.stack([y + h, z], 1)
    return out


def _draw_wall(cv: Canvas, street: Street, side: int, seg: Segment, height: float) -> None:
    x0 = side * street.property_line
    z0 = max(seg.z0, 0.6)
    if seg.z1 <= z0:
        return
    edges = np.linspace(z0, seg.z1, int(np.ceil((seg.z1 - z0) / 8.0)) + 1)
    shade = 1.0 if side < 0 else 0.8
    for za, zb in zip(edges[:-1], edges[1:], strict=True):
        cv.poly(along(x0, 0.0, _rect(za, zb, 0.0, height)), F.WALL, M.CONCRETE, seg.tint, shade, x0)
        cv.poly(
            along(x0, 0.0, _rect(za, zb, height, height + 0.12)),
            F.WALL,
            M.CONCRETE,
            seg.tint,
            0.7 * shade,
            x0,
        )


def _draw_fence(cv: Canvas, street: Street, side: int, seg: Segment, height: float) -> None:
    x0 = side * street.property_line
    z0 = max(seg.z0, 0.6)
    if seg.z1 <= z0:
        return
    for y in (0.15, height * 0.55, height):
        cv.line(along(x0, 0.0, [(z0, y), (seg.z1, y)]), 0.05, F.FENCE, M.FENCE, seg.tint, 1.0)
    zb = np.arange(z0, seg.z1, 0.35)
    bars = np.zeros((len(zb), 2, 3))
    bars[:, :, 0] = x0
    bars[:, 1, 1] = height
    bars[:, :, 2] = zb[:, None]
    cv.line(bars, 0.035, F.FENCE, M.FENCE, seg.tint, 0.9)


def _draw_backdrop(cv: Canvas, z: float, p: dict) -> None:
    for x0, x1, h, tint, kind in p["blocks"]:
        if kind == "building":
            cv.poly(facing(0.0, z, _rect(x0, x1, 0.0, h)), F.BUILDING, M.FACADE, tint, 0.9)
        else:
            for k in range(int((x1 - x0) // 3.0)):
                cx = x0 + 1.5 + 3.0 * k
                cv.poly(
                    ring((cx, h * 0.55, z), h * 0.45, "z", 10), F.VEGETATION, M.FOLIAGE, tint, 0.9
                )


# ---------------------------------------------------------------------------------------------
# Placement


@dataclass(order=True)
class _Item:
    layer: int
    depth: float
    order: int
    draw: Callable[[Canvas], None] = field(compare=False)


class _Placer:
    """Collects objects with their sampled parameters; draws them far to near."""

    def __init__(self, rng: np.random.Generator, street: Street) -> None:
        self.rng = rng
        self.street = street
        self.items: list[_Item] = []
        self.lights: list[tuple[float, float, float]] = []
        self.occupied: list[tuple[float, float, float, float]] = []

    def add(self, z: float, draw: Callable[[Canvas], None], layer: int = 2) -> None:
        """Layers: 0 the backdrop, 1 the roadside (facades, walls, fences, park trees), 2 the
        street. Within a layer the farthest is drawn first; objects past the backdrop are dropped."""
        if layer > 0 and z >= self.street.end_z:
            return
        # Negative depth so that sorting ascending draws the farthest first.
        self.items.append(_Item(layer, -z, len(self.items), draw))

    def draw(self, cv: Canvas) -> None:
        for item in sorted(self.items):
            item.draw(cv)

    def sidewalk_x(self, side: int, frac: float) -> float:
        s = self.street
        return side * (s.sidewalk_inner + frac * s.sidewalk)

    def lane_x(self, same_direction: bool, lane: int) -> float:
        s = self.street
        lane_w = s.road_half / s.lanes_per_side
        sign = 1.0 if s.right_hand_traffic == same_direction else -1.0
        return sign * lane_w * (lane + 0.5)

    # One method per object kind: sample its parameters now, draw it later.

    def claim(self, x: float, half_width: float, z: float, length: float) -> bool:
        """Reserve the road footprint [x +- half_width] x [z, z + length] unless it overlaps a
        vehicle already placed (vehicles never intersect)."""
        for x0, x1, z0, z1 in self.occupied:
            if (
                x - half_width < x1
                and x + half_width > x0
                and z < z1 + 0.8
                and z + length > z0 - 0.8
            ):
                return False
        self.occupied.append((x - half_width, x + half_width, z, z + length))
        return True

    def _free_z(
        self, x: float, half_width: float, length: float, z: float | None, lo: float, hi: float
    ) -> float | None:
        """A depth where the footprint is free: ``z`` or just beyond it when given, else random."""
        for k in range(6):
            zk = self.rng.uniform(lo, hi) if z is None else z + 2.5 * k
            if self.claim(x, half_width, zk, length):
                return zk
        return None

    def moving_vehicle(self, kind: str, z: float | None = None, parked: bool = False) -> None:
        rng = self.rng
        away = bool(rng.random() < 0.6)
        lane = int(rng.integers(self.street.lanes_per_side))
        x = self.lane_x(away, lane) + rng.normal(0.0, 0.25)
        if parked:
            side = int(rng.choice([-1, 1]))
            x = side * (self.street.road_half - 1.15)
            away = bool(rng.random() < 0.5)
        tint = rng.random()
        if kind == "car":
            p = {"w": rng.uniform(1.7, 1.95), "L": rng.uniform(3.9, 4.9), "tint": tint}
            draw = _draw_car
        elif kind == "truck":
            p = {
                "w": 2.45,
                "L": rng.uniform(6.5, 9.5),
                "box_h": rng.uniform(3.2, 3.9),
                "tint": tint,
            }
            draw = _draw_truck
        elif kind == "bus":
            p = {"w": 2.55, "L": rng.uniform(10.5, 12.5), "tint": tint}
            draw = _draw_bus
        elif kind == "motorcycle":
            p = self._rider_params() | {
                "w": 0.8,
                "L": 2.0,
                "tint": tint,
                "rider": bool(rng.random() < 0.85),
            }
            draw = _draw_motorcycle
        else:
            raise ValueError(f"unknown vehicle kind {kind!r}")
        zv = self._free_z(x, p["w"] / 2, p["L"], z, 4.0 if parked else 5.0, 55.0)
        if zv is not None:
            self.add(zv, lambda cv: draw(cv, x, zv, away, p))

    def train(self, z: float | None = None) -> None:
        rng = self.rng
        x = self.street.rail_x if self.street.rail_x is not None else 0.0
        p = {"L": rng.uniform(22.0, 36.0), "tint": rng.random()}
        away = bool(rng.random() < 0.5)
        zt = self._free_z(x, 1.35, p["L"], z, 6.0, 45.0)
        if zt is not None:
            self.add(zt, lambda cv: _draw_train(cv, x, zt, away, p))

    def _rider_params(self) -> dict:
        rng = self.rng
        return {"cloth": rng.random(), "skin": rng.random(), "helmet": rng.random()}

    def bicycle(self, z: float | None = None, ridden: bool | None = None) -> None:
        rng = self.rng
        z = rng.uniform(4.0, 35.0) if z is None else z
        ridden = bool(rng.random() < 0.6) if ridden is None else ridden
        if ridden:
            side = 1 if self.street.right_hand_traffic else -1
            x = side * (self.street.road_half - rng.uniform(0.5, 1.0))
            plane = "x" if rng.random() < 0.8 else "z"
        else:
            side = int(rng.choice([-1, 1]))
            x = self.sidewalk_x(side, rng.uniform(0.15, 0.85))
            plane = "z" if rng.random() < 0.6 else "x"
        p = self._rider_params() | {"tint": rng.random(), "rider": ridden}
        if ridden and not self.claim(x, 0.4, z - 0.9, 1.8):
            return
        self.add(z, lambda cv: _draw_bicycle(cv, x, z, plane, p))

    def person(self, z: float | None = None, on_road: bool = False) -> None:
        rng = self.rng
        z = rng.uniform(3.5, 45.0) if z is None else z
        if on_road:
            x = rng.uniform(-self.street.road_half, self.street.road_half)
        else:
            x = self.sidewalk_x(int(rng.choice([-1, 1])), rng.uniform(0.1, 0.9))
        child = rng.random() < 0.12
        p = {
            "h": rng.uniform(1.05, 1.35) if child else rng.uniform(1.58, 1.92),
            "stride": rng.uniform(0.0, 0.22),
            "wscale": rng.uniform(0.85, 1.25),
            "legs": rng.random(),
            "top": rng.random(),
            "skin": rng.random(),
            "hair": rng.random(),
        }
        self.add(z, lambda cv: _draw_person(cv, x, z, p))

    def tree(self, z: float, x: float, big: bool = False, layer: int = 2) -> None:
        rng = self.rng
        crown = rng.uniform(1.6, 3.2) if big else rng.uniform(1.1, 2.2)
        n = int(rng.integers(3, 7))
        blobs = [
            (rng.uniform(-0.6, 0.6), rng.uniform(-0.4, 0.5), rng.uniform(0.55, 0.95), rng.random())
            for _ in range(n)
        ]
        p = {"trunk_h": rng.uniform(1.8, 3.5), "crown": crown, "blobs": blobs, "tint": rng.random()}
        self.add(z, lambda cv: _draw_tree(cv, x, z, p), layer)

    def lamp(self, z: float, side: int) -> None:
        rng = self.rng
        x = self.sidewalk_x(side, 0.12)
        p = {"h": rng.uniform(5.5, 8.5), "tint": rng.random(), "utility": bool(rng.random() < 0.15)}
        self.lights.append((x - side * 1.6, p["h"], z))
        self.add(z, lambda cv: _draw_lamp(cv, x, z, side, p))

    def sign(self, z: float | None = None) -> None:
        rng = self.rng
        z = rng.uniform(4.0, 40.0) if z is None else z
        x = self.sidewalk_x(int(rng.choice([-1, 1])), rng.uniform(0.08, 0.2))
        shapes = ("circle", "triangle", "square", "wide")
        plates = [
            (shapes[rng.integers(4)], rng.random()) for _ in range(1 + int(rng.random() < 0.3))
        ]
        p = {"h": rng.uniform(2.4, 3.2), "pole_tint": rng.random(), "plates": plates}
        self.add(z, lambda cv: _draw_sign(cv, x, z, p))

    def traffic_light(self, z: float | None = None) -> None:
        rng = self.rng
        z = rng.uniform(6.0, 40.0) if z is None else z
        side = int(rng.choice([-1, 1]))
        x = self.sidewalk_x(side, 0.1)
        p = {
            "mast": bool(rng.random() < 0.35),
            "reach": -side * rng.uniform(2.5, 0.8 * self.street.road_half + 2.5),
            "h": rng.uniform(2.8, 3.6),
            "tint": rng.random(),
            "lit": "red" if rng.random() < 0.5 else "green",
        }
        self.add(z, lambda cv: _draw_traffic_light(cv, x, z, side, p))

    def furniture(self) -> None:
        rng = self.rng
        z = rng.uniform(3.5, 40.0)
        x = self.sidewalk_x(int(rng.choice([-1, 1])), rng.uniform(0.5, 0.95))
        p = {"kind": ("bin", "bench", "hydrant")[rng.integers(3)], "tint": rng.random()}
        self.add(z, lambda cv: _draw_furniture(cv, x, z, p))

    def cable(self) -> None:
        rng = self.rng
        z = rng.uniform(8.0, 50.0)
        p = {
            "span": self.street.property_line + 4.0,
            "h": rng.uniform(6.5, 9.0),
            "sag": rng.uniform(0.3, 1.2),
        }
        self.add(z, lambda cv: _draw_cable(cv, z, p))


def _force_segment(street: Street, rng: np.random.Generator, kind: str) -> Street:
    """The street with one near segment (on a random side) turned into ``kind``."""
    side = int(rng.choice([-1, 1]))
    segs = list(street.segments(side))
    near = [i for i, g in enumerate(segs) if g.z1 > 6.0 and g.z0 < 30.0]
    i = near[int(rng.integers(len(near)))]
    segs[i] = replace(segs[i], kind=kind)
    return replace(street, right=tuple(segs)) if side > 0 else replace(street, left=tuple(segs))


def _populate(placer: _Placer, require: int | None) -> None:
    """Sample every object of the scene into ``placer``; ``require`` adds one near object."""
    rng, st = placer.rng, placer.street
    # Windows are drawn lazily and only where visible; their own generator keeps the rest of the
    # scene independent of how many windows end up drawn.
    rng_windows = np.random.default_rng(rng.integers(2**63))

    # Roadside segments (layer 1): facades, walls, fences and the trees of parks.
    for side in (-1, 1):
        for seg in st.segments(side):
            if seg.kind == "building":
                placer.add(
                    seg.z0, lambda cv, s=side, g=seg: _draw_facade(cv, st, s, g, rng_windows), 1
                )
            elif seg.kind == "wall":
                behind = replace(seg, setback=seg.setback + 2.5)
                if rng.random() < 0.6:
                    placer.add(
                        seg.z0 + 0.01,
                        lambda cv, s=side, g=behind: _draw_facade(cv, st, s, g, rng_windows),
                        1,
                    )
                hw = rng.uniform(1.2, 2.6)
                placer.add(seg.z0, lambda cv, s=side, g=seg, h=hw: _draw_wall(cv, st, s, g, h), 1)
            else:
                for zt in np.arange(seg.z0 + rng.uniform(1, 5), seg.z1, rng.uniform(4.0, 9.0)):
                    xt = side * (st.property_line + rng.uniform(1.5, 9.0))
                    if zt > 1.0:
                        placer.tree(float(zt), float(xt), big=True, layer=1)
                if seg.kind == "fence":
                    hf = rng.uniform(1.0, 2.0)
                    placer.add(
                        seg.z0, lambda cv, s=side, g=seg, h=hf: _draw_fence(cv, st, s, g, h), 1
                    )
    backdrop = []
    x = -80.0
    while x < 80.0:
        width = rng.uniform(8.0, 25.0)
        kind = "building" if rng.random() < 0.6 else "trees"
        backdrop.append((x, x + width, rng.uniform(5.0, 22.0), rng.random(), kind))
        x += width
    end_z = st.end_z

    # The required object first, so that it gets its place on the road.
    near = float(rng.uniform(6.0, 16.0))
    if require == TRAIN:
        placer.train(z=near)
    elif require in (CAR, TRUCK, BUS):
        placer.moving_vehicle({CAR: "car", TRUCK: "truck", BUS: "bus"}[require], z=near)
    elif require in (RIDER, MOTORCYCLE):
        if require == RIDER and rng.random() < 0.5:
            placer.bicycle(z=near, ridden=True)
        else:
            placer.moving_vehicle("motorcycle", z=near)
    elif require == BICYCLE:
        placer.bicycle(z=near)
    elif require == PERSON:
        placer.person(z=near)
    elif require == POLE:
        placer.lamp(near, int(rng.choice([-1, 1])))
    elif require == TRAFFIC_LIGHT:
        placer.traffic_light(z=near)
    elif require == TRAFFIC_SIGN:
        placer.sign(z=near)
    elif require == VEGETATION:
        placer.tree(near, placer.sidewalk_x(int(rng.choice([-1, 1])), 0.85))

    # Vehicles, people and street furniture.
    for _ in range(rng.poisson(3.5)):
        placer.moving_vehicle("car")
    for _ in range(rng.poisson(2.5)):
        placer.moving_vehicle("car", parked=True)
    if rng.random() < 0.18:
        placer.moving_vehicle("truck")
    if rng.random() < 0.14:
        placer.moving_vehicle("bus")
    if st.rail_x is not None and rng.random() < 0.35:
        placer.train()
    if rng.random() < 0.06:
        placer.moving_vehicle("motorcycle")
    if rng.random() < 0.08:
        placer.bicycle()
    for _ in range(rng.poisson(2.0)):
        placer.person()
    if st.crosswalk is not None and rng.random() < 0.5:
        for _ in range(rng.integers(1, 4)):
            placer.person(z=rng.uniform(*st.crosswalk), on_road=True)
    if rng.random() < 0.7:
        spacing = rng.uniform(18.0, 32.0)
        for side in (-1, 1) if rng.random() < 0.6 else (int(rng.choice([-1, 1])),):
            for zl in np.arange(rng.uniform(3.0, spacing), 70.0, spacing):
                placer.lamp(float(zl), side)
    for _ in range(rng.poisson(1.3)):
        placer.sign()
    if st.crosswalk is not None and rng.random() < 0.6:
        placer.traffic_light(z=st.crosswalk[0] - 1.0)
    elif rng.random() < 0.15:
        placer.traffic_light()
    if rng.random() < 0.7:
        for side in (-1, 1) if rng.random() < 0.35 else (int(rng.choice([-1, 1])),):
            for zt in np.arange(rng.uniform(2.0, 8.0), 60.0, rng.uniform(7.0, 12.0)):
                placer.tree(float(zt), placer.sidewalk_x(side, 0.85))
    for _ in range(rng.poisson(0.8)):
        placer.furniture()
    if rng.random() < 0.15:
        placer.cable()

    placer.add(end_z, lambda cv: _draw_backdrop(cv, end_z, {"blocks": backdrop}), 0)


def _draw_hood(cv: Canvas, top: float, tint: float) -> None:
    w, h = cv.camera.width, cv.camera.height
    y0 = top * h
    xs = np.linspace(-0.1 * w, 1.1 * w, 24)
    bulge = (h - y0) * 0.35 * (1.0 - ((xs - w / 2) / (0.6 * w)) ** 2)
    pts = np.concatenate(
        [np.stack([xs, y0 + (h - y0) * 0.35 - bulge], 1), [[1.1 * w, h + 2], [-0.1 * w, h + 2]]]
    )
    cv.screen_poly(pts, F.EGO_VEHICLE, M.HOOD, tint, 1.0, 1.5)


def render_scene(
    seed: tuple[int, ...],
    width: int,
    height: int,
    camera: Callable[[np.random.Generator], CameraSpec],
    require: int | None = None,
) -> Render:
    """Render the scene seeded by the integers ``seed``. ``camera`` draws the domain's
    ``CameraSpec``. With ``require`` (a train id) the scene is re-drawn, each attempt seeded by
    ``(*seed, attempt)``, until that class covers ``MIN_REQUIRED_PX`` pixels."""
    if require is not None and not 0 <= require < NUM_CLASSES:
        raise ValueError(f"require must be a train id in [0, {NUM_CLASSES}), got {require}")
    for attempt in range(MAX_ATTEMPTS):
        rng = np.random.default_rng([*seed, attempt])
        spec = camera(rng)
        street = sample_street(rng)
        if require == TRAIN and street.rail_x is None:
            street = replace(street, rail_x=float(rng.uniform(-0.5, 0.5) * street.road_half))
        if require in (WALL, FENCE):
            street = _force_segment(street, rng, "wall" if require == WALL else "fence")
        if require == TERRAIN and street.verge == 0:
            street = replace(street, verge=float(rng.uniform(0.8, 2.5)))
        if require == BUILDING:
            street = _force_segment(street, rng, "building")
        cam = resolve_camera(spec, street, width, height, rng)
        placer = _Placer(rng, street)
        _populate(placer, require)
        cv = Canvas(cam, street.curve)
        placer.draw(cv)
        if spec.hood > 0:
            _draw_hood(cv, spec.hood, float(rng.random()))
        gb = cv.compose(ground_buffers(cam, street))
        if cam.roll_deg:
            gb = roll_gbuffer(gb, cam.roll_deg)
        if require is None or (FINE_TO_TRAIN[gb.fine] == require).sum() >= MIN_REQUIRED_PX:
            return Render(gbuffer=gb, camera=cam, lights=placer.lights)
    raise RuntimeError(
        f"could not render a scene showing train id {require} in {MAX_ATTEMPTS} attempts"
    )
