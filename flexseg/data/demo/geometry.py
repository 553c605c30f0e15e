"""Pinhole camera and painter's-algorithm rasteriser of the demo world.

World coordinates are metres: ``x`` to the right of the road's centre line, ``y`` up from the
ground, ``z`` forward along the road. The road bends by ``curve * z**2`` to the side, which the
projection applies to every point. Shapes are filled far to near into a buffer of shape ids; each
shape carries its fine class, material, tint, shading and depth, so one rasterisation serves the
label and every style. Depth is per pixel for faces parallel to the road (facades, vehicle sides)
and constant for faces that look at the camera; fog needs no more.

Decisions of our own: no anti-aliasing in the id buffer (labels are exact, the photo styles blur
the picture afterwards); a line is at least one pixel wide, so poles and bicycle frames stay
visible at any distance, as they do in annotated datasets.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

Z_NEAR = 0.5  # metres; points nearer than this are pushed back to it before projection
SKY_DEPTH = 1.0e4
_SHIFT = 4  # fixed-point bits of the coordinates handed to OpenCV
_SCALE = float(1 << _SHIFT)


@dataclass(frozen=True)
class Camera:
    """Intrinsics and pose: focal length and principal point in pixels, height in metres."""

    width: int
    height: int
    focal: float
    cx: float
    horizon: float
    height_m: float
    x_m: float
    roll_deg: float = 0.0


@dataclass
class GBuffer:
    """Per-pixel attributes of a rendered scene; ``ground_x/z`` are NaN off the ground."""

    fine: np.ndarray
    material: np.ndarray
    tint: np.ndarray
    shade: np.ndarray
    depth: np.ndarray
    ground_x: np.ndarray
    ground_z: np.ndarray


_UNIT_CIRCLES: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def ring(center: tuple[float, float, float], radius: float, plane: str, n: int = 14) -> np.ndarray:
    """Points of a circle in the vertical plane ``z = const`` (plane "z") or ``x = const`` ("x")."""
    if n not in _UNIT_CIRCLES:
        t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
        _UNIT_CIRCLES[n] = (np.cos(t), np.sin(t))
    cos, sin = _UNIT_CIRCLES[n]
    cx, cy, cz = center
    pts = np.empty((n, 3))
    pts[:, 1] = cy + radius * sin
    if plane == "z":
        pts[:, 0] = cx + radius * cos
        pts[:, 2] = cz
    elif plane == "x":
        pts[:, 0] = cx
        pts[:, 2] = cz + radius * cos
    else:
        raise ValueError(f"plane must be 'x' or 'z', got {plane!r}")
    return pts


def facing(x: float, z: float, local: list[tuple[float, float]]) -> np.ndarray:
    """A face looking at the camera: local (dx, y) points at depth ``z``."""
    return np.array([(x + dx, y, z) for dx, y in local], dtype=float)


def along(x: float, z: float, local: list[tuple[float, float]]) -> np.ndarray:
    """A face parallel to the road at ``x``: local (dz, y) points from ``z`` on."""
    return np.array([(x, y, z + dz) for dz, y in local], dtype=float)


class Canvas:
    """Collects shapes into an id buffer; later shapes cover earlier ones."""

    def __init__(self, camera: Camera, curve: float) -> None:
        self.camera = camera
        self.curve = curve
        self.ids = np.full((camera.height, camera.width), -1, dtype=np.int32)
        # fine, material, tint, shade, depth, plane x (NaN = constant depth), z min, z max
        self._attrs: list[tuple[int, int, float, float, float, float, float, float]] = []

    def project(self, pts: np.ndarray) -> np.ndarray:
        """(N, 3) world points -> (N, 2) pixel coordinates (column, row)."""
        cam = self.camera
        pts = np.asarray(pts, dtype=float).reshape(-1, 3)
        z = np.maximum(pts[:, 2], Z_NEAR)
        inv = cam.focal / z
        out = np.empty((len(pts), 2))
        out[:, 0] = cam.cx + (pts[:, 0] + self.curve * z * z - cam.x_m) * inv
        out[:, 1] = cam.horizon + (cam.height_m - pts[:, 1]) * inv
        return out

    def relative_x(self, x: float, z: float) -> float:
        """Lateral offset of world point (x, z) from the camera, along the bent road."""
        return x + self.curve * z * z - self.camera.x_m

    def pixels_per_metre(self, z: float) -> float:
        return self.camera.focal / max(z, Z_NEAR)

    def _on_screen(self, px: np.ndarray, pad: float = 2.0) -> bool:
        h, w = self.ids.shape
        lo = px.min(axis=0)
        hi = px.max(axis=0)
        return bool(hi[0] >= -pad and lo[0] <= w + pad and hi[1] >= -pad and lo[1] <= h + pad)

    def _register(
        self,
        fine: int,
        material: int,
        tint: float,
        shade: float,
        depth: float,
        plane: tuple[float, float, float] | None,
    ) -> int:
        px, z0, z1 = plane if plane is not None else (np.nan, depth, depth)
        self._attrs.append((int(fine), int(material), tint, shade, depth, px, z0, z1))
        return len(self._attrs) - 1

    @staticmethod
    def _fixed(px: np.ndarray) -> np.ndarray:
        return np.rint(np.minimum(np.maximum(px, -1e5), 1e5) * _SCALE).astype(np.int32)

    def poly(
        self,
        pts: np.ndarray,
        fine: int,
        material: int,
        tint: float = 0.0,
        shade: float = 1.0,
        plane_x: float | None = None,
    ) -> None:
        """Fill a planar world polygon (N, 3), or K polygons (K, N, 3) sharing one set of
        attributes. ``plane_x``: the face lies in ``x = plane_x`` (depth then varies across it);
        otherwise it is drawn at its mean depth."""
        pts = np.asarray(pts, dtype=float)
        groups = pts if pts.ndim == 3 else pts[None]
        flat = groups.reshape(-1, 3)
        if len(flat) == 0:
            return
        px = self.project(flat)
        if not self._on_screen(px):
            return
        zs = np.maximum(flat[:, 2], Z_NEAR)
        depth = float(zs.sum() / len(zs))
        plane = None
        if plane_x is not None:
            plane = (plane_x + self.curve * depth * depth, float(zs.min()), float(zs.max()))
        sid = self._register(fine, material, tint, shade, depth, plane)
        fixed = self._fixed(px).reshape(len(groups), -1, 2)
        cv2.fillPoly(self.ids, list(fixed), sid, lineType=cv2.LINE_8, shift=_SHIFT)

    def line(
        self,
        pts: np.ndarray,
        width_m: float,
        fine: int,
        material: int,
        tint: float = 0.0,
        shade: float = 1.0,
        closed: bool = False,
    ) -> None:
        """A polyline (N, 3) of world width ``width_m``, or K of them (K, N, 3) sharing one set of
        attributes; each at least one pixel wide."""
        pts = np.asarray(pts, dtype=float)
        groups = pts if pts.ndim == 3 else pts[None]
        flat = groups.reshape(-1, 3)
        px = self.project(flat)
        if not self._on_screen(px):
            return
        zs = np.maximum(groups[:, :, 2], Z_NEAR).mean(axis=1)
        sid = self._register(fine, material, tint, shade, float(zs.mean()), None)
        fixed = self._fixed(px).reshape(len(groups), -1, 2)
        thickness = np.maximum(1, np.round(self.camera.focal * width_m / zs)).astype(int)
        for t in np.unique(thickness):
            sel = [fixed[k] for k in np.flatnonzero(thickness == t)]
            cv2.polylines(self.ids, sel, closed, sid, int(t), lineType=cv2.LINE_8, shift=_SHIFT)

    def screen_poly(
        self, px: np.ndarray, fine: int, material: int, tint: float, shade: float, depth: float
    ) -> None:
        """Fill a polygon given in pixels (things fixed to the camera, such as the hood)."""
        sid = self._register(fine, material, tint, shade, depth, None)
        cv2.fillPoly(self.ids, [self._fixed(np.asarray(px, float))], sid, cv2.LINE_8, shift=_SHIFT)

    def covers(self) -> np.ndarray:
        """Boolean map of the pixels some shape has covered."""
        return self.ids >= 0

    def compose(self, background: GBuffer) -> GBuffer:
        """The shapes over ``background`` (the ground and the sky)."""
        if not self._attrs:
            return background
        attrs = np.array(self._attrs, dtype=np.float64)
        mask = self.ids >= 0
        idx = np.where(mask, self.ids, 0)
        cam = self.camera

        def pick(col: int, bg: np.ndarray, dtype: type) -> np.ndarray:
            return np.where(mask, attrs[idx, col], bg).astype(dtype)

        depth = attrs[idx, 4]
        plane_x = attrs[idx, 5]
        planar = mask & ~np.isnan(plane_x)
        if planar.any():
            u = np.arange(cam.width, dtype=np.float64)[None, :] + 0.5
            du = np.broadcast_to(u - cam.cx, self.ids.shape)
            with np.errstate(divide="ignore", invalid="ignore"):
                z = cam.focal * (plane_x - cam.x_m) / du
            z = np.where(np.isfinite(z) & (z > 0), z, attrs[idx, 7])
            depth = np.where(planar, np.clip(z, attrs[idx, 6], attrs[idx, 7]), depth)
        nan = np.float32(np.nan)
        return GBuffer(
            fine=pick(0, background.fine, np.uint8),
            material=pick(1, background.material, np.uint8),
            tint=pick(2, background.tint, np.float32),
            shade=pick(3, background.shade, np.float32),
            depth=np.where(mask, depth, background.depth).astype(np.float32),
            ground_x=np.where(mask, nan, background.ground_x).astype(np.float32),
            ground_z=np.where(mask, nan, background.ground_z).astype(np.float32),
        )


def roll_gbuffer(gb: GBuffer, degrees: float) -> GBuffer:
    """Rotate every buffer about the image centre, zoomed just enough to leave no border."""
    h, w = gb.fine.shape
    rad = np.deg2rad(abs(degrees))
    # Zoom so that the rotated frame still covers the whole image.
    zoom = np.cos(rad) + np.sin(rad) * max(w / h, h / w)
    mat = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), degrees, zoom)

    def warp(a: np.ndarray) -> np.ndarray:
        return cv2.warpAffine(
            a, mat, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE
        )

    return GBuffer(
        fine=warp(gb.fine),
        material=warp(gb.material),
        tint=warp(gb.tint),
        shade=warp(gb.shade),
        depth=warp(gb.depth),
        ground_x=warp(gb.ground_x),
        ground_z=warp(gb.ground_z),
    )
