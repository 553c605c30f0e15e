"""A demo scene: a street (``street``), the objects on it (``objects``, placed by ``placement``),
rendered into per-pixel buffers.

``render_scene(..., require=c)`` adds an object of train id ``c`` near the camera and re-draws the
scene until that class is visible; the domains use it to guarantee that every class appears.

Everything is drawn from the ``numpy.random.Generator`` seeded by the scene's seed, in a fixed
order, so a scene is a pure function of that seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from flexseg.data.demo.classes import FINE_TO_TRAIN
from flexseg.data.demo.geometry import Camera, Canvas, GBuffer, roll_gbuffer
from flexseg.data.demo.objects import Hood
from flexseg.data.demo.placement import Placer, populate
from flexseg.data.demo.street import (
    CameraSpec,
    ground_buffers,
    resolve_camera,
    sample_street,
    street_showing,
)
from flexseg.labels import NUM_CLASSES

MIN_REQUIRED_PX = 6  # a forced class must cover at least this many pixels
MAX_ATTEMPTS = 40


@dataclass
class Render:
    """A rendered scene: its per-pixel buffers, the camera, and the street lamps (x, y, z)."""

    gbuffer: GBuffer
    camera: Camera
    lights: list[tuple[float, float, float]] = field(default_factory=list)


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
        street = street_showing(sample_street(rng), rng, require)
        cam = resolve_camera(spec, street, width, height, rng)
        placer = Placer(rng, street)
        populate(placer, require)
        cv = Canvas(cam, street.curve)
        placer.draw(cv)
        if spec.hood > 0:
            Hood(spec.hood, float(rng.random())).draw(cv)
        gb = cv.compose(ground_buffers(cam, street))
        if cam.roll_deg:
            gb = roll_gbuffer(gb, cam.roll_deg)
        if require is None or (FINE_TO_TRAIN[gb.fine] == require).sum() >= MIN_REQUIRED_PX:
            return Render(gbuffer=gb, camera=cam, lights=placer.lights)
    raise RuntimeError(
        f"could not render a scene showing train id {require} in {MAX_ATTEMPTS} attempts"
    )
