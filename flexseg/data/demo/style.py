"""Looks and weather: how a rendered scene (its per-pixel buffers) becomes a picture.

Two families of looks give the demo its domain gap. The *game* look (the source, standing in for
GTA5) is flat-shaded with a saturated palette, hard edges and no sensor effects. The *photo* look
(every target and the diffusion prior) has another palette, surface texture, atmospheric haze,
clouds, blur, sensor noise, vignetting and a per-image colour cast. The palette differences are
moderate (roads stay dark, vegetation green, sky bright), so a model trained on the game look
transfers to the photo look only partly: that is the gap that domain generalisation should close.

Weather (``fog``, ``rain``, ``snow``, ``night``, ``dusk``) is applied after the look:
fog is Koschmieder's law ``I = J t + A (1 - t)``, ``t = exp(-beta * depth)``; rain darkens and
desaturates, wets the ground with a mirrored reflection and adds slanted streaks; snow whitens
the ground under a noise mask and adds flakes; night keeps a little ambient light and adds street
lamps (pools of light on the ground), the camera car's headlights, glowing windows and lamps.
The constants are our own choices (the paper leaves the demo entirely open), picked by eye and
checked with a small segmenter trained on the source: it must do clearly worse on every target
than on held-out source images, yet well above chance on the daylight targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from flexseg import labels
from flexseg.data.demo.classes import EMISSIVE, NUM_MATERIALS, SNOW_GROUND, M
from flexseg.data.demo.geometry import SKY_DEPTH, GBuffer
from flexseg.data.demo.scene import Render

CONDITIONS = (*labels.CONDITIONS, "dusk")

# Three colour stops per material (RGB 0..255); a pixel's tint in [0, 1] runs through them.
_PHOTO = {
    M.SKY: [(135, 165, 205), (170, 195, 220), (205, 215, 225)],
    M.ASPHALT: [(72, 72, 76), (90, 89, 92), (108, 106, 104)],
    M.LANE_PAINT: [(215, 215, 205)] * 3,
    M.ZEBRA_PAINT: [(220, 220, 215)] * 3,
    M.MANHOLE: [(55, 52, 50)] * 3,
    M.CURB: [(150, 148, 142)] * 3,
    M.PAVING: [(135, 130, 125), (155, 150, 142), (170, 160, 150)],
    M.GRASS: [(95, 118, 58), (112, 132, 72), (128, 138, 86)],
    M.RAIL: [(85, 80, 75), (100, 95, 88), (160, 160, 165)],
    M.PARKING: [(98, 96, 96)] * 3,
    M.FACADE: [(168, 158, 142), (138, 112, 98), (190, 186, 178)],
    M.WINDOW: [(55, 65, 78)] * 3,
    M.WINDOW_LIT: [(55, 65, 78)] * 3,
    M.DOOR: [(80, 60, 50)] * 3,
    M.CONCRETE: [(150, 146, 138), (126, 122, 114), (168, 162, 150)],
    M.FENCE: [(85, 92, 88), (118, 108, 92), (68, 72, 80)],
    M.BARK: [(78, 64, 50)] * 3,
    M.FOLIAGE: [(58, 82, 40), (78, 98, 50), (48, 68, 36)],
    M.METAL: [(110, 110, 112), (132, 132, 130), (92, 96, 102)],
    M.LAMP: [(225, 225, 210)] * 3,
    M.SIGN: [(190, 40, 40), (40, 80, 165), (225, 195, 45)],
    M.SIGN_BACK: [(120, 120, 125)] * 3,
    M.TL_HOUSING: [(35, 35, 35)] * 3,
    M.TL_RED: [(200, 40, 30)] * 3,
    M.TL_GREEN: [(40, 190, 110)] * 3,
    M.TL_OFF: [(50, 50, 48)] * 3,
    M.SKIN: [(222, 186, 158), (178, 130, 100), (108, 78, 60)],
    M.CLOTH: [(40, 42, 52), (92, 82, 72), (135, 45, 45)],
    M.HAIR: [(50, 40, 30), (30, 28, 26), (150, 120, 80)],
    M.CAR_PAINT: [(32, 32, 36), (175, 176, 180), (110, 28, 30)],
    M.GLASS: [(45, 52, 60)] * 3,
    M.TYRE: [(28, 28, 28)] * 3,
    M.HEADLIGHT: [(210, 210, 200)] * 3,
    M.TAILLIGHT: [(160, 25, 25)] * 3,
    M.BUS_PAINT: [(200, 195, 180), (60, 100, 150), (170, 40, 40)],
    M.TRUCK_PAINT: [(210, 210, 205), (70, 80, 95), (150, 120, 60)],
    M.TRAIN_PAINT: [(215, 215, 210), (40, 90, 150), (160, 40, 40)],
    M.MOTO_PAINT: [(25, 25, 28), (150, 30, 30), (160, 160, 165)],
    M.BIKE_FRAME: [(30, 30, 30), (90, 100, 120), (150, 40, 40)],
    M.FURNITURE: [(60, 90, 70), (100, 80, 60), (110, 110, 110)],
    M.CABLE: [(25, 25, 25)] * 3,
    M.HOOD: [(45, 45, 50), (170, 170, 175), (25, 25, 30)],
}

# The game look keeps these colours as they are (paint, lights); the others derive from the photo
# palette (see _gamify).
_GAME_FIXED = {
    M.LANE_PAINT: [(255, 235, 70)] * 3,
    M.ZEBRA_PAINT: [(255, 255, 255)] * 3,
    M.LAMP: [(255, 255, 190)] * 3,
    M.TL_RED: [(255, 20, 0)] * 3,
    M.TL_GREEN: [(0, 255, 90)] * 3,
    M.HEADLIGHT: [(255, 255, 225)] * 3,
    M.TAILLIGHT: [(255, 0, 0)] * 3,
    M.TYRE: [(22, 22, 26)] * 3,
    # Big vehicles in vivid paint only, and some pale buildings and walls: otherwise pale grey
    # would mean "truck" to a source-trained model, while on photographs it is mostly facades.
    M.TRUCK_PAINT: [(240, 120, 20), (20, 110, 230), (230, 200, 0)],
    M.BUS_PAINT: [(255, 140, 0), (0, 180, 110), (200, 0, 180)],
    M.TRAIN_PAINT: [(230, 40, 40), (250, 220, 60), (0, 160, 230)],
    M.FACADE: [(225, 150, 90), (175, 90, 65), (210, 208, 200)],
    M.CONCRETE: [(190, 165, 125), (155, 152, 150), (210, 180, 135)],
}

# Texture strength per material in the photo look: (fine grain, large blotches).
_TEXTURE = {
    M.SKY: (0.004, 0.015),
    M.ASPHALT: (0.03, 0.035),
    M.PAVING: (0.035, 0.035),
    M.GRASS: (0.06, 0.06),
    M.PARKING: (0.03, 0.035),
    M.FACADE: (0.02, 0.05),
    M.CONCRETE: (0.03, 0.04),
    M.FOLIAGE: (0.1, 0.07),
    M.BARK: (0.06, 0.03),
    M.RAIL: (0.04, 0.03),
    M.CAR_PAINT: (0.01, 0.03),
}

# Colour each emissive material glows in (RGB 0..1) at night and at dusk.
_EMISSION = {
    M.WINDOW_LIT: (1.0, 0.82, 0.45),
    M.LAMP: (1.0, 0.9, 0.7),
    M.TL_RED: (1.0, 0.15, 0.1),
    M.TL_GREEN: (0.2, 1.0, 0.5),
    M.HEADLIGHT: (1.0, 1.0, 0.9),
    M.TAILLIGHT: (1.0, 0.1, 0.05),
}


def _palette_array(table: dict[M, list[tuple[int, int, int]]]) -> np.ndarray:
    missing = [m.name for m in M if m not in table]
    if missing:
        raise ValueError(f"palette has no colours for materials {missing}")
    return np.array([table[m] for m in M], dtype=np.float32) / 255.0


def _gamify(photo: np.ndarray, seed: int = 7) -> np.ndarray:
    """The game palette: the photo palette more saturated and brighter, each material's hue
    turned by a fixed few degrees, so that the source shares hue families with the targets but not
    their colours (a gap a segmenter can partly bridge)."""
    hsv = cv2.cvtColor(photo.reshape(1, -1, 3), cv2.COLOR_RGB2HSV).reshape(photo.shape)
    turn = np.random.default_rng(seed).uniform(-15.0, 15.0, size=(photo.shape[0], 1))
    hsv[..., 0] = np.mod(hsv[..., 0] + turn, 360.0)
    # The middle stop stays closer to the photo's saturation: with every surface vivid, grey
    # would mark the few grey things of the game (white trucks) and mislead on photographs.
    gain = np.array([1.9, 1.25, 1.9], np.float32)[None, :]
    lift = np.array([0.15, 0.04, 0.15], np.float32)[None, :]
    hsv[..., 1] = np.clip(hsv[..., 1] * gain + lift, 0.0, 1.0)
    hsv[..., 2] = np.clip(hsv[..., 2] * 1.15 + 0.05, 0.0, 1.0)
    game = cv2.cvtColor(hsv.reshape(1, -1, 3), cv2.COLOR_HSV2RGB).reshape(photo.shape)
    for m, stops in _GAME_FIXED.items():
        game[m] = np.array(stops, np.float32) / 255.0
    return np.clip(game, 0.0, 1.0)


PHOTO_PALETTE = _palette_array(_PHOTO)
GAME_PALETTE = _gamify(PHOTO_PALETTE)
_TEX = np.zeros((NUM_MATERIALS, 2), np.float32)
for _m, _amp in _TEXTURE.items():
    _TEX[_m] = _amp
_EMISSIVE_LUT = np.zeros(NUM_MATERIALS, bool)
_EMISSIVE_LUT[list(EMISSIVE)] = True
_EMISSION_RGB = np.zeros((NUM_MATERIALS, 3), np.float32)
for _m, _rgb in _EMISSION.items():
    _EMISSION_RGB[_m] = _rgb
_SNOW_LUT = np.zeros(NUM_MATERIALS, bool)
_SNOW_LUT[list(SNOW_GROUND)] = True


@dataclass(frozen=True)
class Look:
    """How a domain renders: palette (materials x 3 stops x RGB in 0..1) and camera effects."""

    palette: np.ndarray
    texture: float = 0.0  # surface texture strength (0 = flat shading)
    clouds: float = 0.0  # share of the sky that clouds may cover
    haze: float = 0.0  # clear-weather extinction per metre
    haze_colour: tuple[float, float, float] = (0.8, 0.82, 0.85)
    colour_matrix: np.ndarray | None = None  # 3x3 colour mixing (a camera's colour response)
    saturation: float = 1.0
    contrast: float = 1.0
    brightness: float = 1.0
    blur: float = 0.0  # Gaussian sigma in pixels
    noise: float = 0.0  # sensor noise sigma (0..1 scale)
    vignette: float = 0.0
    sodium: bool = False  # night lamps in orange sodium light (Dark Zurich's look)


def game_look(rng: np.random.Generator) -> Look:
    """The source's saturated, flat "game" look."""
    jitter = 1.0 + rng.uniform(-0.04, 0.04, size=(1, 1, 3))
    return Look(palette=np.clip(GAME_PALETTE * jitter, 0, 1), saturation=1.1, contrast=1.05)


def photo_look(
    rng: np.random.Generator,
    *,
    cast: tuple[float, float, float] = (1.0, 1.0, 1.0),
    palette_jitter: float = 0.06,
    colour_jitter: float = 0.04,
    saturation: tuple[float, float] = (0.85, 1.05),
    contrast: tuple[float, float] = (0.85, 1.05),
    brightness: tuple[float, float] = (0.9, 1.08),
    noise: tuple[float, float] = (0.003, 0.01),
    blur: tuple[float, float] = (0.3, 0.6),
    clouds: tuple[float, float] = (0.0, 0.7),
    vignette: tuple[float, float] = (0.0, 0.3),
) -> Look:
    """A camera photograph's look, with per-image variation; keyword ranges set by the domain."""
    pal = PHOTO_PALETTE * (1.0 + rng.normal(0.0, palette_jitter, size=(NUM_MATERIALS, 1, 1)))
    pal = pal * np.asarray(cast, np.float32)
    mix = np.eye(3) + rng.normal(0.0, colour_jitter, size=(3, 3))
    mix /= mix.sum(axis=1, keepdims=True)
    return Look(
        palette=np.clip(pal, 0.0, 1.0).astype(np.float32),
        texture=float(rng.uniform(0.8, 1.2)),
        clouds=float(rng.uniform(*clouds)),
        haze=float(rng.uniform(0.001, 0.004)),
        colour_matrix=mix.astype(np.float32),
        saturation=float(rng.uniform(*saturation)),
        contrast=float(rng.uniform(*contrast)),
        brightness=float(rng.uniform(*brightness)),
        blur=float(rng.uniform(*blur)),
        noise=float(rng.uniform(*noise)),
        vignette=float(rng.uniform(*vignette)),
    )


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Zero-mean, unit-ish variance noise with features about ``cell`` pixels across."""
    gh, gw = max(2, h // cell + 2), max(2, w // cell + 2)
    coarse = rng.standard_normal((gh, gw)).astype(np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)


def _base_colour(gb: GBuffer, palette: np.ndarray) -> np.ndarray:
    """Each pixel's colour: its tint in [0, 1] runs linearly through its material's 3 stops."""
    t = np.clip(gb.tint, 0.0, 1.0) * 2.0
    lo = np.minimum(t.astype(np.int64), 1)
    frac = (t - lo)[..., None]
    flat = palette.reshape(-1, 3)
    idx = gb.material.astype(np.int64) * 3 + lo
    a = flat[idx]
    return a + (flat[idx + 1] - a) * frac


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.299, 0.587, 0.114], np.float32)


def _desaturate(rgb: np.ndarray, amount: float) -> np.ndarray:
    y = _luma(rgb)[..., None]
    return y + (rgb - y) * amount


def _fog(rgb: np.ndarray, depth: np.ndarray, beta: float, air: np.ndarray) -> np.ndarray:
    t = np.exp(-beta * np.minimum(depth, 2000.0))[..., None]
    return rgb * t + air * (1.0 - t)


def _glow(emit: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(emit, (0, 0), sigma)


def _night(
    rgb: np.ndarray, r: Render, look: Look, rng: np.random.Generator, dusk: bool
) -> np.ndarray:
    gb, cam = r.gbuffer, r.camera
    h, w = gb.fine.shape
    sky = gb.material == M.SKY
    if dusk:
        ambient = rng.uniform(0.45, 0.65)
        cast = np.array([1.0, 0.78, 0.6], np.float32)
        top, horizon = np.array([0.25, 0.22, 0.45]), np.array([1.0, 0.62, 0.35])
    else:
        ambient = rng.uniform(0.18, 0.3)
        cast = np.array([0.75, 0.8, 1.0], np.float32)
        top, horizon = np.array([0.01, 0.015, 0.04]), np.array([0.12, 0.08, 0.06])
    lamp_rgb = np.array([1.0, 0.62, 0.28] if look.sodium else [1.0, 0.88, 0.68], np.float32)
    light = np.full((h, w), ambient, np.float32)
    gx, gz = gb.ground_x, gb.ground_z
    ground = ~np.isnan(gz)
    gxs, gzs = np.where(ground, gx, 0.0), np.where(ground, gz, 1e4)
    pools = np.zeros((h, w), np.float32)
    for lx, ly, lz in r.lights:
        pools += np.exp(-((gxs - lx) ** 2 + (gzs - lz) ** 2) / (2.0 * (0.55 * ly) ** 2))
    # The camera car's own headlights: a cone on the road ahead, and nearby objects lit.
    cone = (np.abs(gxs - cam.x_m) < 1.0 + 0.35 * gzs) & ground
    beams = np.where(cone, 0.9 * np.exp(-gzs / 14.0), 0.0)
    near = (~ground) & (~sky) & (np.arange(h)[:, None] > cam.horizon - 0.05 * h)
    beams = beams + np.where(near, 0.5 * np.exp(-gb.depth / 9.0), 0.0)
    scale = 0.4 if dusk else 1.0
    lit = (
        rgb * cast * light[..., None] + rgb * lamp_rgb * (scale * (1.1 * pools + beams))[..., None]
    )
    sky_t = np.clip(gb.tint, 0, 1)[..., None]
    sky_rgb = top + (horizon - top) * sky_t**2
    if dusk:
        sky_rgb = 0.6 * sky_rgb + 0.4 * _luma(rgb)[..., None] * horizon
    lit = np.where(sky[..., None], sky_rgb.astype(np.float32), lit)
    on = _EMISSIVE_LUT[gb.material]
    emit = np.where(on[..., None], _EMISSION_RGB[gb.material], 0.0).astype(np.float32)
    if look.sodium:
        emit = np.where((gb.material == M.LAMP)[..., None], lamp_rgb, emit)
    strength = 0.6 if dusk else 1.0
    lit = np.where(on[..., None], np.maximum(lit, emit * strength), lit)
    sigma = max(1.0, w / 110.0)
    lit = lit + strength * (0.9 * _glow(emit, sigma) + 0.6 * _glow(emit, 3.0 * sigma))
    return lit


def _rain(rgb: np.ndarray, r: Render, rng: np.random.Generator) -> np.ndarray:
    gb, cam = r.gbuffer, r.camera
    h, w = gb.fine.shape
    out = _desaturate(rgb * 0.8, 0.65)
    # Wet ground mirrors what stands above it.
    rows = np.arange(h)
    mirror = np.clip(np.round(2.0 * cam.horizon - rows).astype(int), 0, h - 1)
    reflected = cv2.GaussianBlur(out[mirror], (0, 0), 1.2)
    wet = np.isin(gb.material, [M.ASPHALT, M.PARKING, M.LANE_PAINT, M.ZEBRA_PAINT, M.PAVING])
    out = np.where(wet[..., None], 0.72 * out + 0.28 * reflected, out)
    out = _fog(out, gb.depth, rng.uniform(0.006, 0.015), np.array([0.62, 0.64, 0.67], np.float32))
    streaks = np.zeros((h, w), np.float32)
    angle = rng.uniform(-0.35, 0.35)
    n = int(0.006 * h * w)
    xs, ys = rng.uniform(0, w, n), rng.uniform(0, h, n)
    lengths = rng.uniform(0.03, 0.08, n) * h
    strength = rng.uniform(0.4, 1.0, n)
    for x, y, length, s in zip(xs, ys, lengths, strength, strict=True):
        x1, y1 = x + length * np.sin(angle), y + length * np.cos(angle)
        cv2.line(streaks, (int(x), int(y)), (int(x1), int(y1)), float(s), 1, cv2.LINE_AA)
    streaks = cv2.GaussianBlur(streaks, (0, 0), 0.6)[..., None]
    return out * (1 - 0.35 * streaks) + 0.85 * 0.35 * streaks


def _snow(rgb: np.ndarray, r: Render, rng: np.random.Generator) -> np.ndarray:
    gb, cam = r.gbuffer, r.camera
    h, w = gb.fine.shape
    blotch = _smooth_noise(rng, h, w, max(4, w // 24))
    white = np.array([0.9, 0.92, 0.95], np.float32)
    on_ground = _SNOW_LUT[gb.material]
    road = np.isin(gb.material, [M.ASPHALT, M.LANE_PAINT, M.ZEBRA_PAINT, M.MANHOLE, M.PARKING])
    gx = np.where(np.isnan(gb.ground_x), 0.0, gb.ground_x)
    # Tyre tracks: two dark bands per lane along the direction of travel.
    tracks = np.abs(np.mod(gx - cam.x_m + 0.8, 1.6) - 0.8) < 0.25
    cover = np.where(road, 0.3 + 0.25 * blotch - 0.3 * tracks, 0.8 + 0.15 * blotch)
    cover = np.where(on_ground, np.clip(cover, 0.0, 1.0), 0.0)
    foliage = gb.material == M.FOLIAGE
    cover = np.where(foliage, np.clip(0.35 + 0.2 * blotch, 0, 1), cover)
    out = _desaturate(rgb, 0.7) * 0.95
    out = out * (1 - cover[..., None]) + white * cover[..., None]
    sky = gb.material == M.SKY
    out = np.where(sky[..., None], 0.5 * out + 0.5 * np.array([0.82, 0.84, 0.87], np.float32), out)
    out = _fog(out, gb.depth, rng.uniform(0.005, 0.015), np.array([0.85, 0.86, 0.88], np.float32))
    flakes = np.zeros((h, w), np.float32)
    n = int(rng.uniform(0.004, 0.01) * h * w)
    for x, y, rad in zip(
        rng.uniform(0, w, n), rng.uniform(0, h, n), rng.uniform(0.3, 1.6, n), strict=True
    ):
        cv2.circle(flakes, (int(x), int(y)), int(round(rad)), 1.0, -1, cv2.LINE_AA)
    flakes = cv2.GaussianBlur(flakes, (0, 0), 0.5)[..., None]
    return out * (1 - 0.8 * flakes) + white * 0.8 * flakes


def shade(r: Render, look: Look, condition: str, rng: np.random.Generator) -> np.ndarray:
    """The RGB uint8 picture of rendered scene ``r`` in ``look`` under ``condition``."""
    if condition not in CONDITIONS:
        raise ValueError(f"condition must be one of {CONDITIONS}, got {condition!r}")
    gb = r.gbuffer
    h, w = gb.fine.shape
    rgb = _base_colour(gb, look.palette) * gb.shade[..., None]
    if look.texture > 0:
        fine = rng.standard_normal((h, w)).astype(np.float32)
        blotch = _smooth_noise(rng, h, w, max(3, w // 40))
        amp = _TEX[gb.material]
        rgb = rgb * (1.0 + look.texture * (amp[..., 0] * fine + amp[..., 1] * blotch))[..., None]
    sky = gb.material == M.SKY
    if look.clouds > 0:
        cloud = np.clip(_smooth_noise(rng, h, w, max(6, w // 10)) * 0.6 + look.clouds - 0.4, 0, 1)
        rgb = np.where(sky[..., None], rgb * (1 - cloud[..., None]) + 0.93 * cloud[..., None], rgb)
    if look.haze > 0:
        rgb = _fog(
            rgb, np.where(sky, 0.0, gb.depth), look.haze, np.asarray(look.haze_colour, np.float32)
        )

    if condition == "fog":
        air = np.full(3, rng.uniform(0.72, 0.86), np.float32) + np.array(
            [0.0, 0.01, 0.03], np.float32
        )
        rgb = _fog(
            _desaturate(rgb, 0.8), np.minimum(gb.depth, SKY_DEPTH), rng.uniform(0.01, 0.03), air
        )
    elif condition == "rain":
        rgb = _rain(rgb, r, rng)
    elif condition == "snow":
        rgb = _snow(rgb, r, rng)
    elif condition in ("night", "dusk"):
        rgb = _night(rgb, r, look, rng, dusk=condition == "dusk")

    if look.colour_matrix is not None:
        rgb = rgb @ look.colour_matrix.T
    rgb = _desaturate(rgb, look.saturation)
    rgb = (rgb - 0.5) * look.contrast + 0.5
    rgb = rgb * look.brightness
    if look.vignette > 0:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        d2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
        rgb = rgb * (1.0 - look.vignette * 0.5 * d2)[..., None]
    if look.blur > 0:
        rgb = cv2.GaussianBlur(rgb.astype(np.float32), (0, 0), look.blur)
    if look.noise > 0:
        sigma = look.noise * (3.0 if condition == "night" else 1.0)
        rgb = rgb + rng.normal(0.0, sigma, size=rgb.shape).astype(np.float32)
    return np.clip(np.round(rgb * 255.0), 0, 255).astype(np.uint8)
