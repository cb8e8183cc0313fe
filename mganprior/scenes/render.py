"""A seeded procedural renderer of labelled scenes with exact per-pixel ground truth.

Every scene is a small 3D world of boxes, prisms and flat decals seen through a pinhole camera
with random position, yaw, focal length and horizon. Polygons are drawn far to near (painter's
algorithm) into an RGB canvas and a label canvas at ``supersample`` times the output size; the
output RGB is the box-filtered average (antialiased edges) and the output label of a pixel is the
majority label of its block, so every pixel has exactly one label from
:data:`segmentation.vocabularies.SCENE_WORLD`.

Rendering a 64x64 scene takes a few milliseconds on one core (``benchmarks/scenes.py``), far below
a training step.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from mganprior.core.errors import InputError
from segmentation.vocabularies import SCENE_WORLD

LABEL = {name: k for k, name in enumerate(SCENE_WORLD.names)}
NEAR = 0.05

Color = tuple[float, float, float]
Vec = np.ndarray


def _hsv(h: float, s: float, v: float) -> Color:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return (r, g, b)


@dataclass
class Camera:
    """Pinhole camera at ``position`` looking along +z after a rotation by ``yaw`` about +y."""

    position: Vec
    yaw: float
    focal: float
    center: tuple[float, float]

    def to_camera(self, points: Vec) -> Vec:
        d = np.asarray(points, dtype=np.float64) - self.position
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        x = c * d[:, 0] - s * d[:, 2]
        z = s * d[:, 0] + c * d[:, 2]
        return np.stack([x, d[:, 1], z], axis=1)

    def project(self, cam_points: Vec) -> list[tuple[float, float]]:
        u = self.center[0] + self.focal * cam_points[:, 0] / cam_points[:, 2]
        v = self.center[1] - self.focal * cam_points[:, 1] / cam_points[:, 2]
        return list(zip(u.tolist(), v.tolist(), strict=True))


def _clip_near(points: Vec) -> Vec:
    """Sutherland-Hodgman clip of a camera-space polygon against the plane z = NEAR."""
    out = []
    count = len(points)
    for i in range(count):
        a, b = points[i], points[(i + 1) % count]
        a_in, b_in = a[2] >= NEAR, b[2] >= NEAR
        if a_in:
            out.append(a)
        if a_in != b_in:
            t = (NEAR - a[2]) / (b[2] - a[2])
            out.append(a + t * (b - a))
    return np.array(out) if out else np.zeros((0, 3))


@dataclass
class Face:
    """A flat polygon in world space with its label, base colour and optional texture lines."""

    points: Vec
    label: int
    color: Color
    normal: Vec | None = None
    lines: list[tuple[Vec, Vec]] = field(default_factory=list)
    line_shade: float = 0.8
    two_sided: bool = False


@dataclass
class Group:
    """Faces of one solid object; groups are sorted far to near, faces likewise inside a group."""

    faces: list[Face]
    anchor: Vec


class Canvas:
    """Supersampled RGB and label canvases with a camera and a directional light."""

    def __init__(self, size: int, supersample: int, camera: Camera, light: Vec,
                 ambient: float, room: Room | None = None) -> None:
        self.size = size * supersample
        self.camera = camera
        self.light = light / np.linalg.norm(light)
        self.ambient = ambient
        self.rgb = Image.new("RGB", (self.size, self.size))
        self.labels = Image.new("L", (self.size, self.size))
        self.room = room
        self._draw_rgb = ImageDraw.Draw(self.rgb)
        self._draw_label = ImageDraw.Draw(self.labels)

    def shade(self, color: Color, normal: Vec | None) -> tuple[int, int, int]:
        factor = 1.0
        if normal is not None:
            n = normal / (np.linalg.norm(normal) + 1e-12)
            factor = self.ambient + (1.0 - self.ambient) * max(0.0, float(n @ self.light))
            factor = 0.35 + 0.85 * factor
        return tuple(int(min(255, max(0, c * factor * 255))) for c in color)

    def fill_2d(self, points: list[tuple[float, float]], color: Color, label: int) -> None:
        if len(points) >= 3:
            rgb = self.shade(color, None)
            self._draw_rgb.polygon(points, fill=rgb)
            self._draw_label.polygon(points, fill=label)

    def ellipse_2d(self, box: tuple[float, float, float, float], color: Color,
                   label: int | None) -> None:
        x0, y0, x1, y1 = box
        if x1 - x0 < 1 or y1 - y0 < 1:
            return
        self._draw_rgb.ellipse(box, fill=self.shade(color, None))
        if label is not None:
            self._draw_label.ellipse(box, fill=label)

    def face(self, face: Face) -> None:
        cam = self.camera.to_camera(face.points)
        clipped = _clip_near(cam)
        if len(clipped) < 3:
            return
        points = self.camera.project(clipped)
        rgb = self.shade(face.color, face.normal)
        self._draw_rgb.polygon(points, fill=rgb)
        self._draw_label.polygon(points, fill=face.label)
        if face.lines:
            line_rgb = tuple(int(c * face.line_shade) for c in rgb)
            width = max(1, self.size // 128)
            for a, b in face.lines:
                seg = self.camera.to_camera(np.stack([a, b]))
                if seg[0, 2] < NEAR and seg[1, 2] < NEAR:
                    continue
                if seg[0, 2] < NEAR or seg[1, 2] < NEAR:
                    inside, outside = (seg[0], seg[1]) if seg[0, 2] >= NEAR else (seg[1], seg[0])
                    t = (NEAR - inside[2]) / (outside[2] - inside[2])
                    seg = np.stack([inside, inside + t * (outside - inside)])
                self._draw_rgb.line(self.camera.project(seg), fill=line_rgb, width=width)

    def visible(self, face: Face) -> bool:
        if face.normal is None or face.two_sided:
            return True
        centroid = face.points.mean(axis=0)
        return float(face.normal @ (self.camera.position - centroid)) > 0

    def distance(self, point: Vec) -> float:
        return float(np.linalg.norm(np.asarray(point) - self.camera.position))

    def groups(self, groups: list[Group]) -> None:
        for group in sorted(groups, key=lambda g: -self.distance(g.anchor)):
            faces = [f for f in group.faces if self.visible(f)]
            for face in sorted(faces, key=lambda f: -self.distance(f.points.mean(axis=0))):
                self.face(face)


# ----------------------------------------------------------------------------- solid helpers


def quad(corner: Vec, edge_u: Vec, edge_v: Vec) -> Vec:
    corner, edge_u, edge_v = (np.asarray(a, dtype=np.float64) for a in (corner, edge_u, edge_v))
    return np.stack([corner, corner + edge_u, corner + edge_u + edge_v, corner + edge_v])


def box(lo: Vec, hi: Vec, label: int, color: Color, top: Color | None = None) -> Group:
    """An axis-aligned box from corner ``lo`` to ``hi`` with outward normals."""
    (x0, y0, z0), (x1, y1, z1) = lo, hi
    sx, sy, sz = x1 - x0, y1 - y0, z1 - z0
    faces = [
        Face(quad((x0, y0, z0), (sx, 0, 0), (0, sy, 0)), label, color, np.array([0, 0, -1.0])),
        Face(quad((x0, y0, z1), (sx, 0, 0), (0, sy, 0)), label, color, np.array([0, 0, 1.0])),
        Face(quad((x0, y0, z0), (0, 0, sz), (0, sy, 0)), label, color, np.array([-1.0, 0, 0])),
        Face(quad((x1, y0, z0), (0, 0, sz), (0, sy, 0)), label, color, np.array([1.0, 0, 0])),
        Face(quad((x0, y1, z0), (sx, 0, 0), (0, 0, sz)), label, top or color,
             np.array([0, 1.0, 0])),
        Face(quad((x0, y0, z0), (sx, 0, 0), (0, 0, sz)), label, color, np.array([0, -1.0, 0])),
    ]
    return Group(faces, np.array([(x0 + x1) / 2, (y0 + y1) / 2, (z0 + z1) / 2]))


def _outward(points: Vec, inside: Vec) -> Vec:
    normal = np.cross(points[1] - points[0], points[2] - points[0])
    if normal @ (points.mean(axis=0) - inside) < 0:
        normal = -normal
    return normal


def gable_roof(x0: float, x1: float, y: float, z0: float, z1: float, height: float,
               overhang: float, roof_label: int, roof_color: Color, wall_label: int,
               wall_color: Color) -> Group:
    """A pitched roof over x in [x0, x1] with the ridge along z; gable ends are walls."""
    xm = (x0 + x1) / 2
    ridge0, ridge1 = np.array([xm, y + height, z0 - overhang]), np.array([xm, y + height,
                                                                         z1 + overhang])
    left = np.array([[x0 - overhang, y - overhang * 0.5, z0 - overhang],
                     [x0 - overhang, y - overhang * 0.5, z1 + overhang], ridge1, ridge0])
    right = np.array([[x1 + overhang, y - overhang * 0.5, z0 - overhang], ridge0, ridge1,
                      [x1 + overhang, y - overhang * 0.5, z1 + overhang]])
    front = np.array([[x0, y, z0], [x1, y, z0], [xm, y + height, z0]])
    back = np.array([[x0, y, z1], [x1, y, z1], [xm, y + height, z1]])
    inside = np.array([xm, y + height / 3, (z0 + z1) / 2])
    faces = [Face(p, roof_label, roof_color, _outward(p, inside)) for p in (left, right)]
    faces += [Face(p, wall_label, wall_color, _outward(p, inside)) for p in (front, back)]
    return Group(faces, inside)


def spire(cx: float, cz: float, half: float, y: float, height: float, label: int,
          color: Color) -> Group:
    apex = np.array([cx, y + height, cz])
    corners = [np.array(p) for p in ((cx - half, y, cz - half), (cx + half, y, cz - half),
                                     (cx + half, y, cz + half), (cx - half, y, cz + half))]
    inside = np.array([cx, y + height / 4, cz])
    faces = []
    for i in range(4):
        p = np.stack([corners[i], corners[(i + 1) % 4], apex])
        faces.append(Face(p, label, color, _outward(p, inside)))
    return Group(faces, inside)


# ----------------------------------------------------------------------------- rooms


@dataclass
class Room:
    width: float
    height: float
    depth: float

    @property
    def half(self) -> float:
        return self.width / 2


def _room_camera(rng: np.random.Generator, room: Room, size: int) -> Camera:
    position = np.array([rng.uniform(-0.25, 0.25) * room.width, rng.uniform(1.1, 1.7),
                         rng.uniform(-0.3, 0.2)])
    return Camera(position, yaw=rng.uniform(-0.3, 0.3), focal=rng.uniform(0.55, 0.85) * size,
                  center=(size / 2, size * rng.uniform(0.45, 0.6)))


def _wall_point(room: Room, wall: str, along: float, height: float, inset: float = 0.01) -> Vec:
    """A point on a wall: ``along`` is x for the back wall, z for the side walls."""
    if wall == "back":
        return np.array([along, height, room.depth - inset])
    x = -room.half + inset if wall == "left" else room.half - inset
    return np.array([x, height, along])


def _wall_frame(room: Room, wall: str) -> tuple[Vec, Vec]:
    """(unit vector along the wall, inward normal)."""
    if wall == "back":
        return np.array([1.0, 0, 0]), np.array([0, 0, -1.0])
    if wall == "left":
        return np.array([0, 0, 1.0]), np.array([1.0, 0, 0])
    return np.array([0, 0, -1.0]), np.array([-1.0, 0, 0])


def _wall_range(room: Room, wall: str) -> tuple[float, float]:
    return (-room.half, room.half) if wall == "back" else (0.5, room.depth)


def _wall_rect(room: Room, wall: str, start: float, width: float, bottom: float, height: float,
               label: int, color: Color, inset: float = 0.01,
               lines: list[tuple[Vec, Vec]] | None = None) -> Face:
    along, normal = _wall_frame(room, wall)
    if wall == "right":
        start = start + width
    corner = _wall_point(room, wall, start, bottom, inset)
    return Face(quad(corner, along * width, np.array([0, height, 0])), label, color, normal,
                lines or [])


def _room_shell(canvas: Canvas, rng: np.random.Generator, room: Room, wall_color: Color,
                floor_color: Color, ceiling_color: Color, planks: bool,
                stripes: bool) -> None:
    w, h, d = room.half, room.height, room.depth
    back = -1.0
    floor_lines = []
    if planks:
        step = rng.uniform(0.18, 0.35)
        floor_lines = [(np.array([x, 0, back]), np.array([x, 0, d]))
                       for x in np.arange(-w + step, w, step)]
    wall_lines: list[tuple[Vec, Vec]] = []
    if stripes:
        step = rng.uniform(0.25, 0.5)
        wall_lines = [(np.array([x, 0, d - 0.001]), np.array([x, h, d - 0.001]))
                      for x in np.arange(-w + step, w, step)]
    faces = [
        Face(quad((-w, 0, back), (2 * w, 0, 0), (0, 0, d - back)), LABEL["floor"], floor_color,
             np.array([0, 1.0, 0]), floor_lines, 0.82),
        Face(quad((-w, h, back), (2 * w, 0, 0), (0, 0, d - back)), LABEL["ceiling"],
             ceiling_color, np.array([0, -1.0, 0])),
        Face(quad((-w, 0, d), (2 * w, 0, 0), (0, h, 0)), LABEL["wall"], wall_color,
             np.array([0, 0, -1.0]), wall_lines, 0.9),
        Face(quad((-w, 0, back), (0, 0, d - back), (0, h, 0)), LABEL["wall"], wall_color,
             np.array([1.0, 0, 0])),
        Face(quad((w, 0, back), (0, 0, d - back), (0, h, 0)), LABEL["wall"], wall_color,
             np.array([-1.0, 0, 0])),
    ]
    for face in faces:
        canvas.face(face)


def _sky_color(rng: np.random.Generator) -> Color:
    return _hsv(rng.uniform(0.52, 0.62), rng.uniform(0.2, 0.6), rng.uniform(0.8, 1.0))


def _window(room: Room, wall: str, start: float, width: float, bottom: float, height: float,
            rng: np.random.Generator) -> list[Face]:
    frame = _hsv(rng.uniform(0, 1), rng.uniform(0, 0.15), rng.uniform(0.75, 1.0))
    glass = _sky_color(rng)
    along, _ = _wall_frame(room, wall)
    base = _wall_point(room, wall, start + (width if wall == "right" else 0), bottom, 0.02)
    mid_u = base + along * width / 2
    lines = [(mid_u, mid_u + np.array([0, height, 0]))]
    if rng.random() < 0.7:
        mid_v = base + np.array([0, height / 2, 0])
        lines.append((mid_v, mid_v + along * width))
    pane = _wall_rect(room, wall, start + 0.06, width - 0.12, bottom + 0.06, height - 0.12,
                      LABEL["window"], glass, inset=0.03,
                      lines=lines)
    pane.line_shade = 0.55
    return [_wall_rect(room, wall, start, width, bottom, height, LABEL["window"], frame, 0.02),
            pane]


def _painting(room: Room, wall: str, start: float, width: float, bottom: float, height: float,
              rng: np.random.Generator) -> list[Face]:
    frame = _hsv(rng.uniform(0.05, 0.12), rng.uniform(0.3, 0.8), rng.uniform(0.2, 0.7))
    canvas_color = _hsv(rng.uniform(0, 1), rng.uniform(0.3, 0.9), rng.uniform(0.4, 0.95))
    faces = [_wall_rect(room, wall, start, width, bottom, height, LABEL["painting"], frame, 0.02),
             _wall_rect(room, wall, start + 0.05, width - 0.1, bottom + 0.05, height - 0.1,
                        LABEL["painting"], canvas_color, 0.03)]
    for _ in range(rng.integers(1, 4)):
        fw, fh = rng.uniform(0.15, 0.5) * width, rng.uniform(0.15, 0.5) * height
        fx = start + rng.uniform(0.08, 0.92 - fw / width) * width
        fy = bottom + rng.uniform(0.08, 0.92 - fh / height) * height
        faces.append(_wall_rect(room, wall, fx, fw, fy, fh, LABEL["painting"],
                                _hsv(rng.uniform(0, 1), rng.uniform(0.4, 1), rng.uniform(0.3, 1)),
                                0.035))
    return faces


def _door(room: Room, wall: str, start: float, rng: np.random.Generator) -> list[Face]:
    color = _hsv(rng.uniform(0.05, 0.12), rng.uniform(0.2, 0.7), rng.uniform(0.3, 0.9))
    width, height = rng.uniform(0.8, 1.0), rng.uniform(1.9, min(2.2, room.height - 0.2))
    along, _ = _wall_frame(room, wall)
    knob_at = _wall_point(room, wall, start + (width if wall == "right" else 0), 1.0, 0.03)
    knob_at = knob_at + along * width * 0.85
    knob = [(knob_at, knob_at + along * 0.06)]
    face = _wall_rect(room, wall, start, width, 0.0, height, LABEL["door"], color, 0.02, knob)
    face.line_shade = 0.4
    return [face]


def _free_span(rng: np.random.Generator, lo: float, hi: float, width: float,
               taken: list[tuple[float, float]], tries: int = 8) -> float | None:
    """A start in [lo, hi - width] whose span [start, start + width] avoids ``taken``."""
    if hi - lo <= width:
        return None
    for _ in range(tries):
        start = rng.uniform(lo, hi - width)
        if all(start + width + 0.1 < a or start > b + 0.1 for a, b in taken):
            taken.append((start, start + width))
            return start
    return None


def _wall_decor(canvas: Canvas, rng: np.random.Generator, room: Room,
                taken: dict[str, list[tuple[float, float]]], windows: int, paintings: int,
                doors: int, window_walls: tuple[str, ...] = ("back", "left", "right")) -> None:
    faces: list[Face] = []
    for _ in range(doors):
        wall = str(rng.choice(["left", "right", "back"]))
        start = _free_span(rng, *_wall_range(room, wall), 1.0, taken[wall])
        if start is not None:
            faces += _door(room, wall, start, rng)
    for _ in range(windows):
        wall = str(rng.choice(list(window_walls)))
        width = rng.uniform(0.8, 1.6)
        start = _free_span(rng, *_wall_range(room, wall), width, taken[wall])
        if start is not None:
            height = rng.uniform(1.0, min(1.6, room.height - 1.2))
            faces += _window(room, wall, start, width, rng.uniform(0.8, room.height - height - 0.2),
                             height, rng)
    for _ in range(paintings):
        wall = str(rng.choice(["back", "left", "right"]))
        width = rng.uniform(0.5, 1.2)
        start = _free_span(rng, *_wall_range(room, wall), width, taken[wall])
        if start is not None:
            height = rng.uniform(0.4, 0.9)
            faces += _painting(room, wall, start, width, rng.uniform(1.2, room.height - height
                                                                    - 0.15), height, rng)
    for face in faces:
        canvas.face(face)


def _lamp(x: float, z: float, base_y: float, rng: np.random.Generator, tall: bool) -> list[Group]:
    stem_h = rng.uniform(1.2, 1.6) if tall else rng.uniform(0.25, 0.4)
    shade_h = rng.uniform(0.2, 0.35)
    shade_w = rng.uniform(0.25, 0.4)
    shade = _hsv(rng.uniform(0.08, 0.16), rng.uniform(0.1, 0.5), rng.uniform(0.85, 1.0))
    stem = (0.25, 0.22, 0.2)
    top = base_y + stem_h
    return [box((x - 0.03, base_y, z - 0.03), (x + 0.03, top, z + 0.03), LABEL["lamp"], stem),
            box((x - shade_w / 2, top, z - shade_w / 2), (x + shade_w / 2, top + shade_h,
                                                          z + shade_w / 2),
                LABEL["lamp"], shade)]


def _bedroom(canvas: Canvas, rng: np.random.Generator) -> None:
    room = canvas.room
    wall = _hsv(rng.uniform(0, 1), rng.uniform(0.05, 0.35), rng.uniform(0.6, 0.95))
    floor = (_hsv(rng.uniform(0.05, 0.1), rng.uniform(0.4, 0.7), rng.uniform(0.35, 0.7))
             if rng.random() < 0.7 else _hsv(rng.uniform(0, 1), rng.uniform(0.05, 0.3),
                                             rng.uniform(0.3, 0.6)))
    _room_shell(canvas, rng, room, wall, floor, _hsv(0, 0, rng.uniform(0.85, 1.0)),
                planks=rng.random() < 0.6, stripes=rng.random() < 0.25)

    bed_w = rng.uniform(1.5, 2.1)
    bed_l = rng.uniform(1.9, 2.2)
    bed_x = rng.uniform(-room.half + 0.6, room.half - 0.6 - bed_w)
    taken = {"back": [(bed_x - 0.6, bed_x + bed_w + 0.6)], "left": [], "right": []}
    _wall_decor(canvas, rng, room, taken, windows=int(rng.integers(0, 3)),
                paintings=int(rng.integers(0, 3)), doors=int(rng.random() < 0.5))

    rug_groups: list[Face] = []
    if rng.random() < 0.6:
        rug_w, rug_l = rng.uniform(1.2, 2.4), rng.uniform(0.8, 1.6)
        rx = bed_x + bed_w / 2 - rug_w / 2 + rng.uniform(-0.4, 0.4)
        rz = room.depth - bed_l - rug_l - rng.uniform(-0.6, 0.3)
        rug_color = _hsv(rng.uniform(0, 1), rng.uniform(0.3, 0.8), rng.uniform(0.3, 0.8))
        border = 0.08
        lines = [(np.array([rx + border, 0.006, rz + border]),
                  np.array([rx + rug_w - border, 0.006, rz + border])),
                 (np.array([rx + border, 0.006, rz + rug_l - border]),
                  np.array([rx + rug_w - border, 0.006, rz + rug_l - border]))]
        rug_groups.append(Face(quad((rx, 0.005, rz), (rug_w, 0, 0), (0, 0, rug_l)),
                               LABEL["rug"], rug_color, np.array([0, 1.0, 0]), lines, 0.6))
    for face in rug_groups:
        canvas.face(face)

    groups: list[Group] = []
    z1 = room.depth - 0.01
    z0 = z1 - bed_l
    frame = _hsv(rng.uniform(0.05, 0.12), rng.uniform(0.3, 0.7), rng.uniform(0.25, 0.7))
    sheet = _hsv(rng.uniform(0, 1), rng.uniform(0.0, 0.25), rng.uniform(0.8, 1.0))
    blanket = _hsv(rng.uniform(0, 1), rng.uniform(0.3, 0.9), rng.uniform(0.35, 0.95))
    mattress_top = rng.uniform(0.45, 0.6)
    groups.append(box((bed_x, 0, z0), (bed_x + bed_w, mattress_top, z1), LABEL["bed"], frame,
                      top=sheet))
    groups.append(box((bed_x - 0.02, mattress_top - 0.12, z0 - 0.02),
                      (bed_x + bed_w + 0.02, mattress_top + 0.04, z0 + bed_l * 0.65),
                      LABEL["bed"], blanket))
    groups.append(box((bed_x, 0, z1 - 0.08), (bed_x + bed_w, rng.uniform(0.9, 1.3), z1),
                      LABEL["bed"], frame))
    pillows = 2 if bed_w > 1.6 and rng.random() < 0.8 else 1
    pillow_color = _hsv(rng.uniform(0, 1), rng.uniform(0.0, 0.3), rng.uniform(0.85, 1.0))
    for p in range(pillows):
        pw = bed_w / pillows - 0.15
        px = bed_x + 0.075 + p * (bed_w / pillows)
        groups.append(box((px, mattress_top, z1 - 0.45), (px + pw, mattress_top + 0.14,
                                                           z1 - 0.1),
                          LABEL["pillow"], pillow_color))
    stand_color = _hsv(rng.uniform(0.05, 0.12), rng.uniform(0.2, 0.7), rng.uniform(0.3, 0.8))
    for side in (-1, 1):
        if rng.random() < 0.75:
            sw = rng.uniform(0.4, 0.55)
            sx = bed_x - sw - 0.08 if side < 0 else bed_x + bed_w + 0.08
            if sx < -room.half or sx + sw > room.half:
                continue
            sh = rng.uniform(0.45, 0.6)
            groups.append(box((sx, 0, z1 - 0.45), (sx + sw, sh, z1), LABEL["nightstand"],
                              stand_color))
            if rng.random() < 0.7:
                groups += _lamp(sx + sw / 2, z1 - 0.22, sh, rng, tall=False)
    if rng.random() < 0.25:
        lx = rng.choice([-room.half + 0.4, room.half - 0.4])
        groups += _lamp(float(lx), rng.uniform(1.5, room.depth - 0.5), 0.0, rng, tall=True)
    canvas.groups(groups)


def _conference(canvas: Canvas, rng: np.random.Generator) -> None:
    room = canvas.room
    wall = _hsv(rng.uniform(0, 1), rng.uniform(0.0, 0.2), rng.uniform(0.65, 0.95))
    carpet = _hsv(rng.uniform(0.5, 0.7) if rng.random() < 0.6 else rng.uniform(0, 1),
                  rng.uniform(0.05, 0.4), rng.uniform(0.25, 0.55))
    _room_shell(canvas, rng, room, wall, carpet, _hsv(0, 0, rng.uniform(0.85, 1.0)),
                planks=rng.random() < 0.2, stripes=False)
    screen_w = rng.uniform(1.4, min(2.6, room.width - 1.0))
    screen_x = rng.uniform(-0.4, 0.4) - screen_w / 2
    taken = {"back": [(screen_x, screen_x + screen_w)], "left": [], "right": []}
    screen_h = screen_w * rng.uniform(0.5, 0.65)
    screen_y = rng.uniform(0.9, max(0.95, room.height - screen_h - 0.25))
    on = rng.random() < 0.7
    screen_color = (_hsv(rng.uniform(0.5, 0.7), rng.uniform(0.2, 0.7), rng.uniform(0.6, 1.0))
                    if on else _hsv(0, 0, rng.uniform(0.05, 0.2)))
    canvas.face(_wall_rect(room, "back", screen_x, screen_w, screen_y, screen_h,
                           LABEL["screen"], (0.08, 0.08, 0.1), 0.02))
    inner = _wall_rect(room, "back", screen_x + 0.06, screen_w - 0.12, screen_y + 0.06,
                       screen_h - 0.12, LABEL["screen"], screen_color, 0.03)
    canvas.face(inner)
    if on:
        for _ in range(rng.integers(1, 4)):
            bw, bh = rng.uniform(0.2, 0.6) * screen_w, rng.uniform(0.08, 0.3) * screen_h
            bx = screen_x + rng.uniform(0.1, 0.9 - bw / screen_w) * screen_w
            by = screen_y + rng.uniform(0.1, 0.9 - bh / screen_h) * screen_h
            canvas.face(_wall_rect(room, "back", bx, bw, by, bh, LABEL["screen"],
                                   _hsv(rng.uniform(0, 1), rng.uniform(0, 0.8),
                                        rng.uniform(0.5, 1.0)), 0.035))
    side = str(rng.choice(["left", "right"]))
    window_walls = (side,)
    _wall_decor(canvas, rng, room, taken, windows=int(rng.integers(1, 4)),
                paintings=int(rng.integers(0, 2)), doors=int(rng.random() < 0.6),
                window_walls=window_walls)
    for _ in range(int(rng.integers(1, 4))):
        lx, lz = rng.uniform(-room.half + 0.6, room.half - 0.6), rng.uniform(1.0, room.depth - 0.5)
        lw = rng.uniform(0.4, 0.9)
        canvas.face(Face(quad((lx - lw / 2, room.height - 0.01, lz - 0.3), (lw, 0, 0),
                              (0, 0, 0.6)), LABEL["lamp"], (1.0, 1.0, 0.95),
                         np.array([0, -1.0, 0])))

    groups: list[Group] = []
    table_w = rng.uniform(1.1, min(1.8, room.width - 1.6))
    table_x = rng.uniform(-0.3, 0.3) - table_w / 2
    table_z0 = rng.uniform(1.6, 2.4)
    table_z1 = room.depth - rng.uniform(0.9, 1.5)
    table_h = rng.uniform(0.72, 0.78)
    wood = _hsv(rng.uniform(0.05, 0.12), rng.uniform(0.2, 0.7), rng.uniform(0.3, 0.85))
    groups.append(box((table_x, table_h - 0.06, table_z0), (table_x + table_w, table_h, table_z1),
                      LABEL["table"], wood))
    groups.append(box((table_x + 0.25, 0, table_z0 + 0.3), (table_x + table_w - 0.25,
                                                            table_h - 0.06, table_z1 - 0.3),
                      LABEL["table"], tuple(c * 0.7 for c in wood)))
    chair = _hsv(rng.uniform(0, 1), rng.uniform(0.1, 0.8), rng.uniform(0.15, 0.7))
    seats = int(rng.integers(2, 6))
    spacing = (table_z1 - table_z0) / seats
    for s in range(seats):
        cz = table_z0 + spacing * (s + 0.5)
        for sign in (-1, 1):
            if rng.random() < 0.12:
                continue
            cx = (table_x - 0.35 if sign < 0 else table_x + table_w + 0.35) + rng.uniform(-.1, .1)
            seat_h = 0.45
            groups.append(box((cx - 0.22, seat_h - 0.06, cz - 0.22),
                              (cx + 0.22, seat_h, cz + 0.22), LABEL["chair"], chair))
            groups.append(box((cx - 0.04, 0, cz - 0.04), (cx + 0.04, seat_h - 0.06, cz + 0.04),
                              LABEL["chair"], (0.2, 0.2, 0.2)))
            bx = cx - 0.26 if sign < 0 else cx + 0.2
            groups.append(box((bx, seat_h, cz - 0.22), (bx + 0.06, seat_h + 0.5, cz + 0.22),
                              LABEL["chair"], chair))
    canvas.groups(groups)


def _tree(canvas: Canvas, rng: np.random.Generator, x: float, z: float) -> None:
    cam = canvas.camera
    height = rng.uniform(3.0, 8.0)
    radius = height * rng.uniform(0.25, 0.4)
    base = cam.to_camera(np.array([[x, 0, z], [x, height - radius, z]]))
    if base[0, 2] < 1.0:
        return
    (u0, v0), (u1, v1) = cam.project(base)
    r = cam.focal * radius / base[1, 2]
    trunk_w = max(1.0, r * 0.18)
    canvas.fill_2d([(u0 - trunk_w, v0), (u0 + trunk_w, v0), (u1 + trunk_w, v1),
                    (u1 - trunk_w, v1)], (0.3, 0.2, 0.12), LABEL["tree"])
    leaf = _hsv(rng.uniform(0.22, 0.36), rng.uniform(0.4, 0.8), rng.uniform(0.25, 0.6))
    canvas.ellipse_2d((u1 - r, v1 - r * 1.15, u1 + r, v1 + r * 0.9), leaf, LABEL["tree"])
    for _ in range(3):
        ox, oy = rng.uniform(-0.5, 0.5) * r, rng.uniform(-0.6, 0.3) * r
        rr = r * rng.uniform(0.3, 0.5)
        canvas.ellipse_2d((u1 + ox - rr, v1 + oy - rr, u1 + ox + rr, v1 + oy + rr),
                          tuple(min(1.0, c * 1.2) for c in leaf), None)


def _church(canvas: Canvas, rng: np.random.Generator) -> None:
    cam = canvas.camera
    s = canvas.size
    horizon = cam.center[1]
    sky_top, sky_low = _sky_color(rng), _hsv(rng.uniform(0.5, 0.6), rng.uniform(0.0, 0.2), 1.0)
    bands = 12
    for i in range(bands):
        t = i / (bands - 1)
        color = tuple(a * (1 - t) + b * t for a, b in zip(sky_top, sky_low, strict=True))
        y0, y1 = horizon * i / bands, horizon * (i + 1) / bands + 1
        canvas.fill_2d([(0, y0), (s, y0), (s, y1), (0, y1)], color, LABEL["sky"])
    for _ in range(int(rng.integers(0, 4))):
        cx, cy, rw = rng.uniform(0, s), rng.uniform(0, horizon * 0.6), rng.uniform(0.08, 0.2) * s
        canvas.ellipse_2d((cx - rw, cy - rw * 0.3, cx + rw, cy + rw * 0.3), (0.97, 0.97, 1.0),
                          LABEL["sky"])
    grass = _hsv(rng.uniform(0.2, 0.33), rng.uniform(0.4, 0.8), rng.uniform(0.35, 0.7))
    canvas.fill_2d([(0, horizon), (s, horizon), (s, s), (0, s)], grass, LABEL["grass"])

    nave_w = rng.uniform(4.0, 7.0)
    nave_d = rng.uniform(8.0, 13.0)
    nave_h = rng.uniform(4.0, 6.5)
    nave_x = rng.uniform(-2.5, 2.5) - nave_w / 2
    nave_z = rng.uniform(13.0, 22.0)
    road = _hsv(rng.uniform(0.05, 0.12), rng.uniform(0.0, 0.25), rng.uniform(0.45, 0.75))
    door_x = nave_x + nave_w / 2
    if rng.random() < 0.85:
        rw = rng.uniform(1.5, 3.0)
        canvas.face(Face(np.array([[door_x - rw / 2, 0.01, nave_z], [door_x + rw / 2, 0.01,
                                                                     nave_z],
                                   [door_x + rw * 1.3, 0.01, 0.0],
                                   [door_x - rw * 1.3, 0.01, 0.0]]),
                         LABEL["road"], road, np.array([0, 1.0, 0])))

    stone = _hsv(rng.uniform(0.05, 0.14), rng.uniform(0.05, 0.35), rng.uniform(0.5, 0.9))
    roof = _hsv(rng.choice([rng.uniform(0.0, 0.05), rng.uniform(0.55, 0.65)]),
                rng.uniform(0.2, 0.6), rng.uniform(0.2, 0.5))
    groups: list[Group] = []
    nave = box((nave_x, 0, nave_z), (nave_x + nave_w, nave_h, nave_z + nave_d),
               LABEL["building"], stone)
    for face in nave.faces[:2]:
        y = np.arange(0.6, nave_h, rng.uniform(0.5, 0.9))
        z = face.points[0, 2]
        face.lines = [(np.array([nave_x, yy, z]), np.array([nave_x + nave_w, yy, z])) for yy in y]
        face.line_shade = 0.88
    groups.append(nave)
    groups.append(gable_roof(nave_x, nave_x + nave_w, nave_h, nave_z, nave_z + nave_d,
                             nave_w * rng.uniform(0.35, 0.6), 0.2, LABEL["roof"], roof,
                             LABEL["building"], stone))
    glass = _hsv(rng.uniform(0.55, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.2, 0.5))
    door_color = _hsv(rng.uniform(0.04, 0.1), rng.uniform(0.4, 0.8), rng.uniform(0.2, 0.45))
    door_w, door_h = rng.uniform(1.0, 1.6), rng.uniform(2.0, 2.8)
    groups.append(Group([Face(quad((door_x - door_w / 2, 0, nave_z - 0.03), (door_w, 0, 0),
                                   (0, door_h, 0)), LABEL["door"], door_color,
                              np.array([0, 0, -1.0]))],
                        np.array([door_x, 1.0, nave_z - 0.5])))
    facade_windows = []
    for wx in (-1, 1):
        if rng.random() < 0.7:
            cx = door_x + wx * nave_w * 0.3
            facade_windows.append(Face(quad((cx - 0.35, nave_h * 0.45, nave_z - 0.03),
                                            (0.7, 0, 0), (0, nave_h * 0.35, 0)),
                                       LABEL["window"], glass, np.array([0, 0, -1.0])))
    if rng.random() < 0.6:
        facade_windows.append(Face(quad((door_x - 0.5, nave_h + 0.3, nave_z - 0.03), (1.0, 0, 0),
                                        (0, 1.0, 0)), LABEL["window"], glass,
                                   np.array([0, 0, -1.0])))
    if facade_windows:
        groups.append(Group(facade_windows, np.array([door_x, nave_h / 2, nave_z - 0.6])))
    side_windows = []
    side_x = nave_x - 0.03 if cam.position[0] < nave_x + nave_w / 2 else nave_x + nave_w + 0.03
    normal = np.array([-1.0 if side_x < nave_x + nave_w / 2 else 1.0, 0, 0])
    for wz in np.arange(nave_z + 1.0, nave_z + nave_d - 1.0, rng.uniform(1.6, 2.6)):
        side_windows.append(Face(quad((side_x, nave_h * 0.35, wz), (0, 0, 0.7),
                                      (0, nave_h * 0.4, 0)), LABEL["window"], glass, normal))
    if side_windows:
        groups.append(Group(side_windows, np.array([side_x + normal[0] * 0.5, nave_h / 2,
                                                    nave_z + nave_d / 2])))

    if rng.random() < 0.9:
        tw = rng.uniform(1.6, 2.6)
        th = nave_h + rng.uniform(3.0, 8.0)
        where = rng.choice(["front", "left", "right"])
        tx = {"front": door_x, "left": nave_x + tw / 2,
              "right": nave_x + nave_w - tw / 2}[str(where)]
        tz = nave_z - tw * 0.6 if where == "front" else nave_z + rng.uniform(0.0, 1.0)
        if where == "front":
            groups.append(Group([Face(quad((tx - door_w / 2.5, 0, tz - tw / 2 - 0.03),
                                           (door_w / 1.25, 0, 0), (0, door_h, 0)),
                                      LABEL["door"], door_color, np.array([0, 0, -1.0]))],
                                np.array([tx, 1.0, tz - tw / 2 - 0.6])))
        tower = box((tx - tw / 2, 0, tz - tw / 2), (tx + tw / 2, th, tz + tw / 2),
                    LABEL["tower"], tuple(c * 0.95 for c in stone))
        groups.append(tower)
        groups.append(Group([Face(quad((tx - 0.3, th - 1.6, tz - tw / 2 - 0.03), (0.6, 0, 0),
                                       (0, 1.0, 0)), LABEL["tower"], (0.12, 0.12, 0.14),
                                  np.array([0, 0, -1.0]))],
                            np.array([tx, th - 1.0, tz - tw / 2 - 0.5])))
        groups.append(spire(tx, tz, tw / 2 + 0.1, th, rng.uniform(2.0, 5.0), LABEL["roof"], roof))
    if rng.random() < 0.5:
        hx = rng.choice([-1, 1]) * rng.uniform(7, 12)
        hz = rng.uniform(12, 30)
        hw, hd, hh = rng.uniform(3, 6), rng.uniform(3, 6), rng.uniform(2.5, 4)
        house = _hsv(rng.uniform(0, 1), rng.uniform(0.1, 0.4), rng.uniform(0.5, 0.9))
        groups.append(box((hx, 0, hz), (hx + hw, hh, hz + hd), LABEL["building"], house))
        groups.append(gable_roof(hx, hx + hw, hh, hz, hz + hd, hw * 0.4, 0.15, LABEL["roof"],
                                 roof, LABEL["building"], house))
    canvas.groups(groups)
    trees = sorted(((rng.choice([-1, 1]) * rng.uniform(3, 14), rng.uniform(6, 35))
                    for _ in range(int(rng.integers(0, 6)))), key=lambda t: -t[1])
    for x, z in trees:
        if nave_x - 1 < x < nave_x + nave_w + 1 and z > nave_z:
            continue
        _tree(canvas, rng, x, z)


# ----------------------------------------------------------------------------- entry points


@dataclass(frozen=True)
class Domain:
    name: str
    description: str
    draw: Callable[[Canvas, np.random.Generator], None]
    indoor: bool
    depth: tuple[float, float] = (0.0, 0.0)


DOMAINS: dict[str, Domain] = {d.name: d for d in (
    Domain("bedroom", "a room with a bed, pillows, nightstands, lamps, rug, windows, "
           "paintings and a door", _bedroom, True, (3.8, 5.5)),
    Domain("conference_room", "a room with a long table, chairs, a wall screen, ceiling lamps "
           "and windows", _conference, True, (5.0, 7.5)),
    Domain("church_outdoor", "a church with nave, roof, tower and spire under the sky, on "
           "grass, with a road and trees", _church, False),
)}

# Per-class amplitude of the pixel noise that stands in for material texture (0-255 scale).
_NOISE = np.zeros(len(SCENE_WORLD), dtype=np.float32)
for _name, _amp in {"floor": 6, "grass": 14, "tree": 16, "rug": 8, "bed": 3, "wall": 2,
                    "building": 6, "tower": 6, "roof": 7, "road": 8, "sky": 1.5}.items():
    _NOISE[LABEL[_name]] = _amp


def get_domain(name: str) -> Domain:
    if name not in DOMAINS:
        raise InputError(f"unknown scene domain {name!r}; domains: {', '.join(DOMAINS)}")
    return DOMAINS[name]


def render(domain: str, seed: int, size: int = 64,
           supersample: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Render scene ``seed`` of ``domain``: (RGB uint8 [size, size, 3], labels uint8 [size, size]).

    Deterministic: the scene's geometry depends only on (domain, seed), so one seed is the same
    scene at every size, and ``render(d, s, n, k)`` has the block-majority labels of
    ``render(d, s, n * k, 1)``. Labels index ``SCENE_WORLD.names``.
    """
    spec = get_domain(domain)
    if size < 8 or supersample < 1:
        raise InputError(f"scene size must be >= 8 and supersample >= 1, got {size}, "
                         f"{supersample}")
    rng = np.random.default_rng([seed, sorted(DOMAINS).index(domain)])
    hi = size * supersample
    if spec.indoor:
        room = Room(rng.uniform(3.5, 5.5), rng.uniform(2.5, 3.2), rng.uniform(*spec.depth))
        camera = _room_camera(rng, room, hi)
        light = np.array([rng.uniform(-1, 1), rng.uniform(0.3, 1.0), rng.uniform(-1.0, 0.2)])
    else:
        room = None
        camera = Camera(np.array([rng.uniform(-3, 3), rng.uniform(1.3, 2.5), 0.0]),
                        yaw=rng.uniform(-0.35, 0.35), focal=rng.uniform(0.6, 1.0) * hi,
                        center=(hi / 2, hi * rng.uniform(0.5, 0.72)))
        light = np.array([rng.uniform(-1, 1), rng.uniform(0.4, 1.0), rng.uniform(-1.0, -0.2)])
    canvas = Canvas(size, supersample, camera, light, ambient=rng.uniform(0.3, 0.6), room=room)
    spec.draw(canvas, rng)

    rgb = np.asarray(canvas.rgb, dtype=np.float32)
    labels = np.asarray(canvas.labels)
    rgb = rgb.reshape(size, supersample, size, supersample, 3).mean(axis=(1, 3))
    blocks = labels.reshape(size, supersample, size, supersample).transpose(0, 2, 1, 3)
    blocks = blocks.reshape(size, size, supersample * supersample)
    counts = (blocks[..., None] == np.arange(len(SCENE_WORLD), dtype=np.uint8)).sum(axis=2)
    out_labels = counts.argmax(axis=2).astype(np.uint8)

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    lx, ly = rng.uniform(0, 1), rng.uniform(0, 0.6)
    glow = 1.0 + rng.uniform(0.05, 0.25) * np.exp(-((xx - lx) ** 2 + (yy - ly) ** 2) / 0.15)
    vignette = 1.0 - rng.uniform(0.05, 0.2) * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2) * 2
    rgb = rgb * (glow * vignette)[..., None]
    noise = rng.standard_normal((size, size, 1)).astype(np.float32)
    rgb = rgb + noise * _NOISE[out_labels][..., None]
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8), out_labels
