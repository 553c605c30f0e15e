"""Where the objects of a demo scene stand, and which ones there are.

``populate`` samples every object of a street into a ``Placer``, in a fixed order from the scene's
generator: the roadside (facades, walls, fences, park trees), the backdrop, the object a scene is
made to show, then vehicles, people and street furniture. Frequencies are long-tailed on purpose
(road, building, sky and vegetation cover most pixels; trains, motorcycles, riders and bicycles
are rare), so that rare-class sampling matters. Vehicles never overlap on the road (``claim``).
The placer draws its objects far to near, layer by layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from flexseg.data.demo import objects
from flexseg.data.demo.classes import T
from flexseg.data.demo.geometry import Canvas
from flexseg.data.demo.street import Street


@dataclass(order=True)
class _Item:
    layer: int
    depth: float
    order: int
    draw: Callable[[Canvas], None] = field(compare=False)


class Placer:
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

    # One method per object kind: sample its parameters now, draw it later.

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
        vehicle: objects.Car | objects.Truck | objects.Bus | objects.Motorcycle
        if kind == "car":
            width, length = rng.uniform(1.7, 1.95), rng.uniform(3.9, 4.9)
            vehicle = objects.Car(x, 0.0, away, tint, width=width, length=length)
        elif kind == "truck":
            length, box_height = rng.uniform(6.5, 9.5), rng.uniform(3.2, 3.9)
            vehicle = objects.Truck(x, 0.0, away, tint, length=length, box_height=box_height)
        elif kind == "bus":
            vehicle = objects.Bus(x, 0.0, away, tint, length=rng.uniform(10.5, 12.5))
        elif kind == "motorcycle":
            rider = self._rider()
            ridden = bool(rng.random() < 0.85)
            vehicle = objects.Motorcycle(x, 0.0, away, tint, rider=rider if ridden else None)
        else:
            raise ValueError(f"unknown vehicle kind {kind!r}")
        zv = self._free_z(x, vehicle.width / 2, vehicle.length, z, 4.0 if parked else 5.0, 55.0)
        if zv is not None:
            self.add(zv, replace(vehicle, z=zv).draw)

    def train(self, z: float | None = None) -> None:
        rng = self.rng
        x = self.street.rail_x if self.street.rail_x is not None else 0.0
        length, tint = rng.uniform(22.0, 36.0), rng.random()
        away = bool(rng.random() < 0.5)
        zt = self._free_z(x, 1.35, length, z, 6.0, 45.0)
        if zt is not None:
            self.add(zt, objects.Train(x, zt, away, tint, length=length).draw)

    def _rider(self) -> objects.Rider:
        return objects.Rider(
            cloth=self.rng.random(), skin=self.rng.random(), helmet=self.rng.random()
        )

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
        rider = self._rider()
        bike = objects.Bicycle(x, z, plane, tint=rng.random(), rider=rider if ridden else None)
        if ridden and not self.claim(x, 0.4, z - 0.9, 1.8):
            return
        self.add(z, bike.draw)

    def person(self, z: float | None = None, on_road: bool = False) -> None:
        rng = self.rng
        z = rng.uniform(3.5, 45.0) if z is None else z
        if on_road:
            x = rng.uniform(-self.street.road_half, self.street.road_half)
        else:
            x = self.sidewalk_x(int(rng.choice([-1, 1])), rng.uniform(0.1, 0.9))
        child = rng.random() < 0.12
        person = objects.Person(
            x,
            z,
            height=rng.uniform(1.05, 1.35) if child else rng.uniform(1.58, 1.92),
            stride=rng.uniform(0.0, 0.22),
            width_scale=rng.uniform(0.85, 1.25),
            legs=rng.random(),
            top=rng.random(),
            skin=rng.random(),
            hair=rng.random(),
        )
        self.add(z, person.draw)

    def tree(self, z: float, x: float, big: bool = False, layer: int = 2) -> None:
        rng = self.rng
        crown = rng.uniform(1.6, 3.2) if big else rng.uniform(1.1, 2.2)
        n = int(rng.integers(3, 7))
        blobs = tuple(
            (rng.uniform(-0.6, 0.6), rng.uniform(-0.4, 0.5), rng.uniform(0.55, 0.95), rng.random())
            for _ in range(n)
        )
        trunk_height, tint = rng.uniform(1.8, 3.5), rng.random()
        tree = objects.Tree(x, z, trunk_height=trunk_height, crown=crown, blobs=blobs, tint=tint)
        self.add(z, tree.draw, layer)

    def lamp(self, z: float, side: int) -> None:
        rng = self.rng
        x = self.sidewalk_x(side, 0.12)
        height, tint, utility = rng.uniform(5.5, 8.5), rng.random(), bool(rng.random() < 0.15)
        self.lights.append((x - side * 1.6, height, z))
        self.add(z, objects.Lamp(x, z, side, height=height, tint=tint, utility=utility).draw)

    def sign(self, z: float | None = None) -> None:
        rng = self.rng
        z = rng.uniform(4.0, 40.0) if z is None else z
        x = self.sidewalk_x(int(rng.choice([-1, 1])), rng.uniform(0.08, 0.2))
        shapes = ("circle", "triangle", "square", "wide")
        plates = tuple(
            (shapes[rng.integers(4)], rng.random()) for _ in range(1 + int(rng.random() < 0.3))
        )
        height, pole_tint = rng.uniform(2.4, 3.2), rng.random()
        self.add(z, objects.Sign(x, z, height=height, pole_tint=pole_tint, plates=plates).draw)

    def traffic_light(self, z: float | None = None) -> None:
        rng = self.rng
        z = rng.uniform(6.0, 40.0) if z is None else z
        side = int(rng.choice([-1, 1]))
        x = self.sidewalk_x(side, 0.1)
        light = objects.TrafficLight(
            x,
            z,
            mast=bool(rng.random() < 0.35),
            reach=-side * rng.uniform(2.5, 0.8 * self.street.road_half + 2.5),
            height=rng.uniform(2.8, 3.6),
            tint=rng.random(),
            lit="red" if rng.random() < 0.5 else "green",
        )
        self.add(z, light.draw)

    def furniture(self) -> None:
        rng = self.rng
        z = rng.uniform(3.5, 40.0)
        x = self.sidewalk_x(int(rng.choice([-1, 1])), rng.uniform(0.5, 0.95))
        kind, tint = ("bin", "bench", "hydrant")[rng.integers(3)], rng.random()
        self.add(z, objects.Furniture(x, z, kind=kind, tint=tint).draw)

    def cable(self) -> None:
        rng = self.rng
        z = rng.uniform(8.0, 50.0)
        span = self.street.property_line + 4.0
        height, sag = rng.uniform(6.5, 9.0), rng.uniform(0.3, 1.2)
        self.add(z, objects.Cable(z, span=span, height=height, sag=sag).draw)


def _place_roadside(placer: Placer, rng_windows: np.random.Generator) -> None:
    """Layer 1: facades, walls (some with a facade behind), fences, and the trees of parks."""
    rng, st = placer.rng, placer.street
    for side in (-1, 1):
        for seg in st.segments(side):
            if seg.kind == "building":
                x0 = side * (st.property_line + seg.setback)
                placer.add(seg.z0, objects.Facade(x0, side, seg, rng_windows).draw, 1)
            elif seg.kind == "wall":
                behind = replace(seg, setback=seg.setback + 2.5)
                if rng.random() < 0.6:
                    x0 = side * (st.property_line + behind.setback)
                    placer.add(seg.z0 + 0.01, objects.Facade(x0, side, behind, rng_windows).draw, 1)
                height = rng.uniform(1.2, 2.6)
                placer.add(seg.z0, objects.Wall(side * st.property_line, side, seg, height).draw, 1)
            else:
                for zt in np.arange(seg.z0 + rng.uniform(1, 5), seg.z1, rng.uniform(4.0, 9.0)):
                    xt = side * (st.property_line + rng.uniform(1.5, 9.0))
                    if zt > 1.0:
                        placer.tree(float(zt), float(xt), big=True, layer=1)
                if seg.kind == "fence":
                    height = rng.uniform(1.0, 2.0)
                    placer.add(
                        seg.z0, objects.Fence(side * st.property_line, side, seg, height).draw, 1
                    )


def _backdrop_blocks(rng: np.random.Generator) -> tuple[objects.Block, ...]:
    blocks = []
    x = -80.0
    while x < 80.0:
        width = rng.uniform(8.0, 25.0)
        kind = "building" if rng.random() < 0.6 else "trees"
        blocks.append(objects.Block(x, x + width, rng.uniform(5.0, 22.0), rng.random(), kind))
        x += width
    return tuple(blocks)


def _place_required(placer: Placer, require: int | None) -> None:
    """The object of class ``require`` near the camera, placed first so that it gets its place
    on the road."""
    rng = placer.rng
    near = float(rng.uniform(6.0, 16.0))
    if require == T.TRAIN:
        placer.train(z=near)
    elif require in (T.CAR, T.TRUCK, T.BUS):
        placer.moving_vehicle({T.CAR: "car", T.TRUCK: "truck", T.BUS: "bus"}[require], z=near)
    elif require in (T.RIDER, T.MOTORCYCLE):
        if require == T.RIDER and rng.random() < 0.5:
            placer.bicycle(z=near, ridden=True)
        else:
            placer.moving_vehicle("motorcycle", z=near)
    elif require == T.BICYCLE:
        placer.bicycle(z=near)
    elif require == T.PERSON:
        placer.person(z=near)
    elif require == T.POLE:
        placer.lamp(near, int(rng.choice([-1, 1])))
    elif require == T.TRAFFIC_LIGHT:
        placer.traffic_light(z=near)
    elif require == T.TRAFFIC_SIGN:
        placer.sign(z=near)
    elif require == T.VEGETATION:
        placer.tree(near, placer.sidewalk_x(int(rng.choice([-1, 1])), 0.85))


def _place_traffic(placer: Placer) -> None:
    """Vehicles and people."""
    rng, st = placer.rng, placer.street
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


def _place_furniture(placer: Placer) -> None:
    """Lamps, signs, traffic lights, sidewalk trees, bins and benches, overhead cables."""
    rng, st = placer.rng, placer.street
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


def populate(placer: Placer, require: int | None) -> None:
    """Sample every object of the scene into ``placer``; ``require`` adds one near object."""
    # Windows are drawn lazily and only where visible; their own generator keeps the rest of the
    # scene independent of how many windows end up drawn.
    rng_windows = np.random.default_rng(placer.rng.integers(2**63))
    _place_roadside(placer, rng_windows)
    backdrop = objects.Backdrop(placer.street.end_z, _backdrop_blocks(placer.rng))
    _place_required(placer, require)
    _place_traffic(placer)
    _place_furniture(placer)
    placer.add(backdrop.z, backdrop.draw, 0)
