"""The objects of a demo scene, each a frozen dataclass of its parameters with a ``draw`` method.

An object stands at ``(x, z)``: its centre line and nearest end, in the world coordinates of
``flexseg.data.demo.geometry``. Vehicles face the camera (``away`` False) or drive away from it;
tints are in [0, 1] and pick a colour from the material's range in the style. The parameters are
drawn from the scene's generator when the object is placed (``flexseg.data.demo.placement``), not
when it is drawn, except a facade's lit windows (its own generator, drawn only where visible).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from flexseg.data.demo.classes import F, M
from flexseg.data.demo.geometry import Canvas, along, facing, ring
from flexseg.data.demo.street import Segment


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


def _end_lamps(
    cv: Canvas,
    x: float,
    z: float,
    fine: int,
    light: int,
    at: float,
    lamp: tuple[float, float, float],
    tyre: tuple[float, float],
) -> None:
    """On a vehicle's end face, a lamp (half width, bottom, top) at each of -+``at`` with a tyre
    (half width, top) below it."""
    (lw, l0, l1), (tw, th) = lamp, tyre
    for s in (-1, 1):
        cx = s * at
        cv.poly(facing(x, z, _rect(cx - lw, cx + lw, l0, l1)), fine, light, 0.5, 1.0)
        cv.poly(facing(x, z, _rect(cx - tw, cx + tw, 0.0, th)), fine, M.TYRE, 0.5, 1.0)


@dataclass(frozen=True)
class _Standing:
    x: float
    z: float


@dataclass(frozen=True)
class _Vehicle(_Standing):
    away: bool  # seen from behind, driving away from the camera
    tint: float


# ---------------------------------------------------------------------------------------------
# Vehicles


@dataclass(frozen=True)
class Car(_Vehicle):
    width: float
    length: float

    def draw(self, cv: Canvas) -> None:
        x, z, w, L, tint = self.x, self.z, self.width, self.length, self.tint
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
        if not self.away:
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
        glass = [(-0.34 * w, 1.05), (0.34 * w, 1.05), (0.31 * w, 1.38), (-0.31 * w, 1.38)]
        cv.poly(facing(x, z, glass), F.CAR, M.GLASS, tint, 1.0)
        light = M.TAILLIGHT if self.away else M.HEADLIGHT
        _end_lamps(cv, x, z, F.CAR, light, w / 2 - 0.2, (0.13, 0.7, 0.84), (0.12, 0.28))


@dataclass(frozen=True)
class Truck(_Vehicle):
    length: float
    box_height: float
    width: ClassVar[float] = 2.45
    cab_height: ClassVar[float] = 2.9

    def draw(self, cv: Canvas) -> None:
        x, z, away, tint = self.x, self.z, self.away, self.tint
        w, L, box_h, cab_h = self.width, self.length, self.box_height, self.cab_height
        cab = 2.3 / L
        box = [(0, 0.5), (1 - cab, 0.5), (1 - cab, box_h), (0, box_h)]
        cabp = [(1 - cab, 0.4), (1, 0.4), (1, 2.0), (1 - 0.3 * cab, cab_h), (1 - cab, cab_h)]
        if not away:
            box = [(1 - d, y) for d, y in box]
            cabp = [(1 - d, y) for d, y in cabp]
        xs = _visible_side(cv, x, z, w / 2)
        if xs is not None:
            paint = M.TRUCK_PAINT
            cv.poly(along(xs, z, [(d * L, y) for d, y in box]), F.TRUCK, paint, tint, 0.8, xs)
            cv.poly(along(xs, z, [(d * L, y) for d, y in cabp]), F.TRUCK, paint, 1 - tint, 0.8, xs)
            _wheels(cv, xs, z, L, 0.48, F.TRUCK, [0.12, 0.3, 0.85] if away else [0.15, 0.7, 0.88])
        if away:
            end = _rect(-w / 2, w / 2, 0.5, box_h)
            cv.poly(facing(x, z, end), F.TRUCK, M.TRUCK_PAINT, tint, 1.0)
            cv.poly(facing(x, z, _rect(-0.02, 0.02, 0.55, box_h - 0.05)), F.TRUCK, M.TYRE, 0.5, 1.0)
            light = M.TAILLIGHT
        else:
            box_end = _rect(-w / 2, w / 2, 0.5, box_h)
            cv.poly(facing(x, z + 2.3, box_end), F.TRUCK, M.TRUCK_PAINT, tint, 0.9)
            cab_end = _rect(-w / 2, w / 2, 0.4, cab_h)
            cv.poly(facing(x, z, cab_end), F.TRUCK, M.TRUCK_PAINT, 1 - tint, 1.0)
            glass = _rect(-0.45 * w, 0.45 * w, 1.7, cab_h - 0.2)
            cv.poly(facing(x, z, glass), F.TRUCK, M.GLASS, 0.5, 1.0)
            light = M.HEADLIGHT
        _end_lamps(cv, x, z, F.TRUCK, light, w / 2 - 0.25, (0.15, 0.6, 0.8), (0.2, 0.5))


@dataclass(frozen=True)
class Bus(_Vehicle):
    length: float
    width: ClassVar[float] = 2.55

    def draw(self, cv: Canvas) -> None:
        x, z, away, tint = self.x, self.z, self.away, self.tint
        w, L, hb = self.width, self.length, 3.1
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
        _end_lamps(cv, x, z, F.BUS, light, w / 2 - 0.25, (0.15, 0.55, 0.8), (0.2, 0.3))


@dataclass(frozen=True)
class Train(_Vehicle):
    length: float
    width: ClassVar[float] = 2.65
    height: ClassVar[float] = 3.5

    def draw(self, cv: Canvas) -> None:
        x, z, w, L, ht, tint = self.x, self.z, self.width, self.length, self.height, self.tint
        xs = _visible_side(cv, x, z, w / 2)
        if xs is not None:
            side = along(xs, z, [(0, 0.5), (L, 0.5), (L, ht), (1.2, ht), (0, ht - 0.8)])
            cv.poly(side, F.TRAIN, M.TRAIN_PAINT, tint, 0.8, xs)
            for k in range(int((L - 3.0) // 2.4)):
                dz = 2.0 + 2.4 * k
                cv.poly(along(xs, z, _rect(dz, dz + 1.5, 1.6, 2.7)), F.TRAIN, M.GLASS, 0.5, 0.8, xs)
            for dz in (2.5, L - 2.5):
                bogie = along(xs, z, _rect(dz - 1.2, dz + 1.2, 0.1, 0.6))
                cv.poly(bogie, F.TRAIN, M.TYRE, 0.5, 0.8, xs)
            pantograph = along(
                xs - np.sign(xs - x) * 1.0, z, [(4.0, ht), (5.0, ht + 1.4), (6.0, ht + 1.4)]
            )
            cv.line(pantograph, 0.06, F.TRAIN, M.METAL, 0.5, 0.8)
        front = [
            (-w / 2, 0.1),
            (w / 2, 0.1),
            (w / 2, ht - 0.5),
            (0.35 * w, ht),
            (-0.35 * w, ht),
            (-w / 2, ht - 0.5),
        ]
        cv.poly(facing(x, z, front), F.TRAIN, M.TRAIN_PAINT, tint, 1.0)
        cv.poly(facing(x, z, _rect(-0.4 * w, 0.4 * w, 1.9, ht - 0.35)), F.TRAIN, M.GLASS, 0.5, 1.0)
        light = M.TAILLIGHT if self.away else M.HEADLIGHT
        for s in (-1, 1):
            lamp = _rect(s * 0.9 - 0.15, s * 0.9 + 0.15, 0.9, 1.1)
            cv.poly(facing(x, z, lamp), F.TRAIN, light, 0.5, 1.0)


# ---------------------------------------------------------------------------------------------
# Riders and pedestrians


@dataclass(frozen=True)
class Rider:
    """The person on a motorcycle or bicycle (drawn by it)."""

    cloth: float
    skin: float
    helmet: float

    def draw(self, cv: Canvas, x: float, z: float, fine: int, seat: float) -> None:
        cloth, skin = self.cloth, self.skin
        for s in (-1, 1):
            leg = _rect(s * 0.3 - 0.07, s * 0.3 + 0.07, seat - 0.45, seat)
            cv.poly(facing(x, z, leg), fine, M.CLOTH, cloth, 0.8)
        torso = [(-0.2, seat), (0.2, seat), (0.22, seat + 0.6), (-0.22, seat + 0.6)]
        cv.poly(facing(x, z, torso), fine, M.CLOTH, 1 - cloth, 1.0)
        for s in (-1, 1):
            arm = [(s * 0.22, seat + 0.55), (s * 0.32, seat + 0.15)]
            cv.line(facing(x, z, arm), 0.08, fine, M.SKIN, skin, 1.0)
        helmet = M.MOTO_PAINT if fine == F.MOTORCYCLIST else M.HAIR
        cv.poly(ring((x, seat + 0.78, z), 0.14, "z", 10), fine, helmet, self.helmet, 1.0)


@dataclass(frozen=True)
class Motorcycle(_Vehicle):
    rider: Rider | None
    width: ClassVar[float] = 0.8
    length: ClassVar[float] = 2.0

    def draw(self, cv: Canvas) -> None:
        x, z, L, tint = self.x, self.z, self.length, self.tint
        xs = _visible_side(cv, x, z, 0.3)
        if xs is not None:
            _wheels(cv, xs, z, L, 0.31, F.MOTORCYCLE, [0.14, 0.86])
            body = [(0.3, 0.45), (1.7, 0.45), (1.6, 0.95), (0.9, 1.0), (0.45, 0.85)]
            side = along(xs, z, [(d * L / 2, y) for d, y in body])
            cv.poly(side, F.MOTORCYCLE, M.MOTO_PAINT, tint, 0.8, xs)
        cv.poly(facing(x, z, _rect(-0.08, 0.08, 0.0, 0.62)), F.MOTORCYCLE, M.TYRE, 0.5, 1.0)
        cv.poly(facing(x, z, _rect(-0.3, 0.3, 0.5, 0.95)), F.MOTORCYCLE, M.MOTO_PAINT, tint, 1.0)
        light = M.TAILLIGHT if self.away else M.HEADLIGHT
        cv.poly(facing(x, z, _rect(-0.08, 0.08, 0.8, 0.9)), F.MOTORCYCLE, light, 0.5, 1.0)
        if self.rider is not None:
            self.rider.draw(cv, x, z + 0.05, F.MOTORCYCLIST, 0.95)


@dataclass(frozen=True)
class Bicycle(_Standing):
    """A bicycle in the plane ``x = const`` ("x": seen from the side) or ``z = const`` ("z")."""

    plane: str
    tint: float
    rider: Rider | None

    def draw(self, cv: Canvas) -> None:
        x, z, plane, L, r = self.x, self.z, self.plane, 1.75, 0.34

        def pt(d: float, y: float) -> tuple[float, float, float]:
            return (x, y, z + d) if plane == "x" else (x + d - L / 2, y, z)

        rear, front, bb, seat, head = (0.32, r), (L - 0.32, r), (0.8, 0.3), (0.68, 0.95), (1.3, 1.0)
        for hub in (rear, front):
            c = pt(*hub)
            cv.line(ring(c, r, plane, 12), 0.05, F.BICYCLE, M.TYRE, 0.5, 1.0, closed=True)
        frame = [rear, bb, seat, rear, seat, head, bb, head, front, head, (1.25, 1.15)]
        cv.line(np.array([pt(*q) for q in frame]), 0.04, F.BICYCLE, M.BIKE_FRAME, self.tint, 1.0)
        if self.rider is not None:
            c = pt(L / 2, 0.0)
            self.rider.draw(cv, c[0], c[2], F.BICYCLIST, 0.95)


@dataclass(frozen=True)
class Person(_Standing):
    height: float
    stride: float
    width_scale: float
    legs: float
    top: float
    skin: float
    hair: float

    def draw(self, cv: Canvas) -> None:
        x, z, hp, stride, ws = self.x, self.z, self.height, self.stride, self.width_scale
        hip, sh = 0.5 * hp, 0.82 * hp
        for s in (-1, 1):
            foot = s * (0.09 + stride)
            leg = [(s * 0.05, hip), (s * 0.15, hip), (foot + 0.05, 0.0), (foot - 0.06, 0.0)]
            cv.poly(facing(x, z, leg), F.PERSON, M.CLOTH, self.legs, 0.85)
        torso = [(-0.16 * ws, hip), (0.16 * ws, hip), (0.2 * ws, sh), (-0.2 * ws, sh)]
        cv.poly(facing(x, z, torso), F.PERSON, M.CLOTH, self.top, 1.0)
        for s in (-1, 1):
            arm = [(s * 0.2 * ws, sh - 0.03), (s * (0.26 + stride / 2), hip)]
            cv.line(facing(x, z, arm), 0.08, F.PERSON, M.CLOTH, self.top, 0.9)
        cv.poly(ring((x, 0.91 * hp, z), 0.068 * hp, "z", 10), F.PERSON, M.SKIN, self.skin, 1.0)
        hair = [(-0.068, 0.92), (0.068, 0.92), (0.05, 0.975), (-0.05, 0.975)]
        cv.poly(facing(x, z, [(a * hp, b * hp) for a, b in hair]), F.PERSON, M.HAIR, self.hair, 1.0)


# ---------------------------------------------------------------------------------------------
# Street furniture and vegetation


@dataclass(frozen=True)
class Tree(_Standing):
    """A trunk and a crown of ``blobs``: (dx, dy, radius) in crown units and a tint each."""

    trunk_height: float
    crown: float
    blobs: tuple[tuple[float, float, float, float], ...]
    tint: float

    def draw(self, cv: Canvas) -> None:
        x, z, trunk_h, crown = self.x, self.z, self.trunk_height, self.crown
        trunk = _rect(-0.15, 0.15, 0.0, trunk_h + 0.5)
        cv.poly(facing(x, z, trunk), F.VEGETATION, M.BARK, self.tint, 1.0)
        for dx, dy, rr, t in self.blobs:
            blob = ring((x + dx * crown, trunk_h + crown + dy * crown, z), rr * crown, "z", 12)
            cv.poly(blob, F.VEGETATION, M.FOLIAGE, t, 0.85 + 0.3 * t)


@dataclass(frozen=True)
class Lamp(_Standing):
    """A street lamp (or a utility pole carrying one) whose arm reaches over the road."""

    side: int
    height: float
    tint: float
    utility: bool

    def draw(self, cv: Canvas) -> None:
        x, z, h = self.x, self.z, self.height
        fine = F.UTILITY_POLE if self.utility else F.POLE
        pole = 0.16 if not self.utility else 0.26
        cv.line(facing(x, z, [(0, 0), (0, h)]), pole, fine, M.METAL, self.tint, 1.0)
        arm = -self.side * 1.6
        reach = [(0, h - 0.2), (arm * 0.6, h + 0.2), (arm, h + 0.2)]
        cv.line(facing(x, z, reach), 0.08, fine, M.METAL, self.tint, 1.0)
        head = _rect(arm - 0.3, arm + 0.3, h - 0.05, h + 0.2)
        cv.poly(facing(x, z, head), F.STREET_LIGHT, M.LAMP, 0.5, 1.0)


@dataclass(frozen=True)
class Sign(_Standing):
    """A pole with ``plates``: (shape, tint), shape one of circle, triangle, square, wide."""

    height: float
    pole_tint: float
    plates: tuple[tuple[str, float], ...]

    def draw(self, cv: Canvas) -> None:
        x, z, h = self.x, self.z, self.height
        cv.line(facing(x, z, [(0, 0), (0, h)]), 0.08, F.POLE, M.METAL, self.pole_tint, 1.0)
        for k, (shape, tint) in enumerate(self.plates):
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


@dataclass(frozen=True)
class TrafficLight(_Standing):
    """On a short pole, or hung from a mast arm that ``reach``es over the road; ``lit`` is red or
    green."""

    mast: bool
    reach: float
    height: float
    tint: float
    lit: str

    def draw(self, cv: Canvas) -> None:
        x, z = self.x, self.z
        if self.mast:
            h = 5.6
            cv.line(facing(x, z, [(0, 0), (0, h)]), 0.2, F.POLE, M.METAL, self.tint, 1.0)
            arm = [(0, h - 0.3), (self.reach, h - 0.3)]
            cv.line(facing(x, z, arm), 0.12, F.POLE, M.METAL, self.tint, 1.0)
            hx, top = self.reach * 0.85, h - 0.35
        else:
            h = self.height
            cv.line(facing(x, z, [(0, 0), (0, h)]), 0.14, F.POLE, M.METAL, self.tint, 1.0)
            hx, top = 0.0, h + 0.2
        housing = _rect(hx - 0.18, hx + 0.18, top - 0.95, top)
        cv.poly(facing(x, z, housing), F.TRAFFIC_LIGHT, M.TL_HOUSING, 0.5, 1.0)
        for k, lamp in enumerate((M.TL_RED, M.TL_OFF, M.TL_GREEN)):
            on = (k == 0 and self.lit == "red") or (k == 2 and self.lit == "green")
            disc = ring((x + hx, top - 0.17 - 0.3 * k, z), 0.1, "z", 8)
            cv.poly(disc, F.TRAFFIC_LIGHT, lamp if on else M.TL_OFF, k / 2, 1.0)


@dataclass(frozen=True)
class Furniture(_Standing):
    """A bin, a bench or a hydrant."""

    kind: str
    tint: float

    def draw(self, cv: Canvas) -> None:
        x, z, tint = self.x, self.z, self.tint
        if self.kind == "bin":
            cv.poly(facing(x, z, _rect(-0.28, 0.28, 0.0, 0.95)), F.STATIC, M.FURNITURE, tint, 1.0)
            cv.poly(facing(x, z, _rect(-0.31, 0.31, 0.95, 1.05)), F.STATIC, M.FURNITURE, tint, 0.7)
        elif self.kind == "bench":
            cv.poly(facing(x, z, _rect(-0.8, 0.8, 0.42, 0.5)), F.STATIC, M.FURNITURE, tint, 1.0)
            cv.poly(facing(x, z, _rect(-0.8, 0.8, 0.6, 0.9)), F.STATIC, M.FURNITURE, tint, 0.85)
            for s in (-1, 1):
                leg = [(s * 0.7, 0), (s * 0.7, 0.45)]
                cv.line(facing(x, z, leg), 0.06, F.STATIC, M.METAL, 0.5, 1.0)
        else:
            cv.poly(facing(x, z, _rect(-0.14, 0.14, 0.0, 0.65)), F.STATIC, M.FURNITURE, tint, 1.0)
            cv.poly(ring((x, 0.68, z), 0.14, "z", 8), F.STATIC, M.FURNITURE, tint, 0.8)


@dataclass(frozen=True)
class Cable:
    """An overhead cable across the street at depth ``z``, sagging in the middle."""

    z: float
    span: float
    height: float
    sag: float

    def draw(self, cv: Canvas) -> None:
        xs = np.linspace(-self.span, self.span, 16)
        ys = self.height - self.sag * (1.0 - (xs / self.span) ** 2)
        pts = np.stack([xs, ys, np.full_like(xs, self.z)], 1)
        cv.line(pts, 0.03, F.UNLABELED, M.CABLE, 0.5, 1.0)


@dataclass(frozen=True)
class Hood:
    """The ego vehicle's hood, from ``top`` (a fraction of the image height) down."""

    top: float
    tint: float

    def draw(self, cv: Canvas) -> None:
        w, h = cv.camera.width, cv.camera.height
        y0 = self.top * h
        xs = np.linspace(-0.1 * w, 1.1 * w, 24)
        bulge = (h - y0) * 0.35 * (1.0 - ((xs - w / 2) / (0.6 * w)) ** 2)
        pts = np.concatenate(
            [np.stack([xs, y0 + (h - y0) * 0.35 - bulge], 1), [[1.1 * w, h + 2], [-0.1 * w, h + 2]]]
        )
        cv.screen_poly(pts, F.EGO_VEHICLE, M.HOOD, self.tint, 1.0, 1.5)


# ---------------------------------------------------------------------------------------------
# The roadside: facades, walls, fences, and the backdrop across the far end


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


def _pieces(z0: float, z1: float) -> np.ndarray:
    """Edges that cut [z0, z1] into pieces of at most 8 m: a long face is not one huge polygon."""
    return np.linspace(z0, z1, int(np.ceil((z1 - z0) / 8.0)) + 1)


@dataclass(frozen=True)
class _Roadside:
    """Stands in the plane ``x = x0`` along the segment ``seg`` of the street's ``side``."""

    x0: float
    side: int
    seg: Segment

    def start(self) -> float | None:
        """Where the segment starts in front of the camera (0.6 m), None when it ends behind it."""
        z0 = max(self.seg.z0, 0.6)
        return None if self.seg.z1 <= z0 else z0


@dataclass(frozen=True)
class Facade(_Roadside):
    """A building front and its near end wall, with windows drawn from ``windows`` only where
    they are visible."""

    windows: np.random.Generator

    def draw(self, cv: Canvas) -> None:
        x0, side, seg = self.x0, self.side, self.seg
        shade = 1.0 if side < 0 else 0.78
        z0 = self.start()
        if z0 is None:
            return
        edges = _pieces(z0, seg.z1)
        for za, zb in zip(edges[:-1], edges[1:], strict=True):
            front = along(x0, 0.0, [(za, 0), (zb, 0), (zb, seg.height), (za, seg.height)])
            cv.poly(front, F.BUILDING, M.FACADE, seg.tint, shade, x0)
        if seg.z0 > 0.6:
            end = [(0, 0), (side * 14.0, 0), (side * 14.0, seg.height), (0, seg.height)]
            cv.poly(facing(x0, seg.z0, end), F.BUILDING, M.FACADE, seg.tint, 0.9 * shade)
        # Windows only where they are at least about a pixel and a half wide.
        floors = int((seg.height - 1.5) // 3.2)
        if floors < 1:
            return
        zw = z0 + 0.9 + 3.0 * np.arange(int((seg.z1 - z0) // 3.0))
        wide = cv.pixels_per_metre(1.0) * 1.2 / np.maximum(zw, 0.5) >= 1.5
        zw = zw[wide & (zw + 1.2 <= seg.z1)]
        if len(zw) == 0:
            return
        lit = self.windows.random((len(zw), floors)) < 0.3
        doors = zw[self.windows.random(len(zw)) < 0.15]
        if len(doors):
            cv.poly(_quads(x0, doors, 1.4, 0.0, 2.4), F.BUILDING, M.DOOR, seg.tint, shade, x0)
        zz = np.repeat(zw, floors)
        yy = np.tile(1.2 + np.arange(1, floors + 1) * 3.2 - 1.8, len(zw))
        lit = lit.reshape(-1)
        for mat, sel in ((M.WINDOW, ~lit), (M.WINDOW_LIT, lit)):
            if sel.any():
                quads = _quads(x0, zz[sel], 1.2, yy[sel], 1.5)
                cv.poly(quads, F.BUILDING, mat, seg.tint, shade, x0)


@dataclass(frozen=True)
class Wall(_Roadside):
    height: float

    def draw(self, cv: Canvas) -> None:
        z0 = self.start()
        if z0 is None:
            return
        x0, seg, height = self.x0, self.seg, self.height
        edges = _pieces(z0, seg.z1)
        shade = 1.0 if self.side < 0 else 0.8
        for za, zb in zip(edges[:-1], edges[1:], strict=True):
            face = along(x0, 0.0, _rect(za, zb, 0.0, height))
            cv.poly(face, F.WALL, M.CONCRETE, seg.tint, shade, x0)
            top = along(x0, 0.0, _rect(za, zb, height, height + 0.12))
            cv.poly(top, F.WALL, M.CONCRETE, seg.tint, 0.7 * shade, x0)


@dataclass(frozen=True)
class Fence(_Roadside):
    height: float

    def draw(self, cv: Canvas) -> None:
        x0, seg, height = self.x0, self.seg, self.height
        z0 = self.start()
        if z0 is None:
            return
        for y in (0.15, height * 0.55, height):
            cv.line(along(x0, 0.0, [(z0, y), (seg.z1, y)]), 0.05, F.FENCE, M.FENCE, seg.tint, 1.0)
        zb = np.arange(z0, seg.z1, 0.35)
        bars = np.zeros((len(zb), 2, 3))
        bars[:, :, 0] = x0
        bars[:, 1, 1] = height
        bars[:, :, 2] = zb[:, None]
        cv.line(bars, 0.035, F.FENCE, M.FENCE, seg.tint, 0.9)


@dataclass(frozen=True)
class Block:
    """One block of the backdrop: buildings or a row of trees from ``x0`` to ``x1``."""

    x0: float
    x1: float
    height: float
    tint: float
    kind: str  # building | trees


@dataclass(frozen=True)
class Backdrop:
    """The blocks standing across the far end of the street, at depth ``z``."""

    z: float
    blocks: tuple[Block, ...]

    def draw(self, cv: Canvas) -> None:
        z = self.z
        for b in self.blocks:
            if b.kind == "building":
                front = facing(0.0, z, _rect(b.x0, b.x1, 0.0, b.height))
                cv.poly(front, F.BUILDING, M.FACADE, b.tint, 0.9)
                continue
            for k in range(int((b.x1 - b.x0) // 3.0)):
                cx = b.x0 + 1.5 + 3.0 * k
                crown = ring((cx, b.height * 0.55, z), b.height * 0.45, "z", 10)
                cv.poly(crown, F.VEGETATION, M.FOLIAGE, b.tint, 0.9)
