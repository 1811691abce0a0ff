"""Procedural RGB-D scenes with exact depth and exact camera motion: unlimited training data and
exact-answer tests.

A scene is a room (floor, ceiling, back and side walls) with a few boxes on the floor, every surface
carrying its own procedural solid texture (a sum of sinusoids of the 3-D position, times Lambertian
shading from a fixed light), so colours are a function of the surface point alone and every view of
the scene is photometrically consistent. Images are ray cast (vectorised numpy, float64): a pixel's
depth is the exact ``z`` of the first surface its ray hits. Cameras follow the ``x`` right, ``y`` down,
``z`` forward convention of :func:`depthmetric.warp`. Every pixel also has the class of the surface it
sees (:data:`CLASSES`: floor, ceiling, wall, box), exact per-pixel segmentation labels for the training
application's segmentation distillation.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["Texture", "Plane", "Box", "render", "SyntheticScenes", "axis_angle_to_matrix", "CLASSES", "IGNORE_LABEL"]

# The segmentation classes of a scene's surfaces (``labels`` of a sample), and the label of a pixel that sees
# none (depthmetric.segmentation's default ignore_index).
CLASSES = ("floor", "ceiling", "wall", "box")
IGNORE_LABEL = 255

_LIGHT = np.array([0.3, -0.8, -0.5]) / np.linalg.norm([0.3, -0.8, -0.5])
_EPS = 1e-9


@dataclass
class Texture:
    """``colour(p) = clip(shade * (base + sum_i amp_i * sin(k_i . p + phase_i)), 0, 1)``.

    ``waves`` is ``N,3`` wave vectors (rad/m), ``phases`` ``N``, ``amps`` ``N,3`` (per colour channel).
    """

    base: np.ndarray = field(default_factory=lambda: np.array([0.5, 0.5, 0.5]))
    waves: np.ndarray = field(default_factory=lambda: np.array([[6.0, 0.0, 0.0], [0.0, 7.0, 3.0]]))
    phases: np.ndarray = field(default_factory=lambda: np.zeros(2))
    amps: np.ndarray = field(default_factory=lambda: np.array([[0.2, 0.1, 0.0], [0.0, 0.1, 0.2]]))

    @classmethod
    def random(cls, rng: np.random.Generator, waves: int = 4, max_frequency: float = 20.0) -> Texture:
        directions = rng.normal(size=(waves, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        # frequencies spread over octaves so that there is texture at every scale the camera sees
        frequency = max_frequency * 2.0 ** -rng.uniform(0.0, 2.5, size=(waves, 1))
        return cls(
            base=rng.uniform(0.25, 0.75, size=3),
            waves=directions * frequency,
            phases=rng.uniform(0, 2 * np.pi, size=waves),
            amps=rng.uniform(-0.25, 0.25, size=(waves, 3)) / np.sqrt(waves / 2),
        )

    def colour(self, points: np.ndarray) -> np.ndarray:
        """``N,3`` world points -> ``N,3`` unshaded colour."""
        return self.base + np.sin(points @ self.waves.T + self.phases) @ self.amps


@dataclass
class Plane:
    """The infinite plane through ``point`` with normal ``normal``."""

    point: np.ndarray
    normal: np.ndarray
    texture: Texture = field(default_factory=Texture)

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ray parameter ``t`` (inf where missed) and the surface normal at the hit, per ray."""
        normal = np.asarray(self.normal, dtype=np.float64)
        normal = normal / np.linalg.norm(normal)
        denom = dirs @ normal
        with np.errstate(divide="ignore", invalid="ignore"):
            t = ((np.asarray(self.point, dtype=np.float64) - origin) @ normal) / denom
        t = np.where(np.isfinite(t) & (t > _EPS), t, np.inf)
        return t, np.broadcast_to(normal, dirs.shape)


@dataclass
class Box:
    """A box with centre ``center``, half extents ``half`` along its own axes, turned by ``yaw`` (radians)
    about the vertical (``y``) axis."""

    center: np.ndarray
    half: np.ndarray
    yaw: float = 0.0
    texture: Texture = field(default_factory=Texture)

    def _rotation(self) -> np.ndarray:
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])

    def intersect(self, origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        R = self._rotation()
        half = np.asarray(self.half, dtype=np.float64)
        o = R.T @ (origin - np.asarray(self.center, dtype=np.float64))
        d = dirs @ R  # rows are R^T d
        with np.errstate(divide="ignore", invalid="ignore"):
            t1 = (-half - o) / d
            t2 = (half - o) / d
        # fmin/fmax skip the NaN of 0/0 (a ray in a slab's boundary plane)
        t_near = np.fmax.reduce(np.fmin(t1, t2), axis=1)
        t_far = np.fmin.reduce(np.fmax(t1, t2), axis=1)
        t = np.where((t_far >= t_near) & (t_near > _EPS), t_near, np.inf)
        # the face hit is the axis where the local hit point touches the box surface
        local = o + np.where(np.isfinite(t), t, 0.0)[:, None] * d
        axis = np.argmax(np.abs(local) / half, axis=1)
        normals_local = np.zeros_like(local)
        normals_local[np.arange(len(local)), axis] = np.sign(local[np.arange(len(local)), axis])
        return t, normals_local @ R.T


def render(
    primitives, cam_to_world: np.ndarray, K: np.ndarray, height: int, width: int, return_index: bool = False
) -> tuple[torch.Tensor, ...]:
    """Ray cast ``primitives`` from a camera: ``(image 3,H,W float32 in [0,1], depth 1,H,W float32 m)``, and
    with ``return_index`` also the index (into ``primitives``) of the surface each pixel sees, ``H,W`` int64,
    -1 where no primitive is hit.

    A pixel's depth is the camera ``z`` of the nearest hit (0 where no primitive is hit; colour 0 there).
    Rays go through pixel centres at integer coordinates (pixel ``(x, y)`` -> ``K^-1 [x, y, 1]``), the
    convention of :func:`depthmetric.warp`.
    """
    cam_to_world = np.asarray(cam_to_world, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    ys, xs = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64), indexing="ij")
    pixels = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)], axis=1)
    rays_cam = pixels @ np.linalg.inv(K).T  # z = 1, so the ray parameter t is the depth
    rays_cam[:, 2] = 1.0
    dirs = rays_cam @ cam_to_world[:3, :3].T
    origin = cam_to_world[:3, 3]
    hits = [p.intersect(origin, dirs) for p in primitives]
    ts = np.stack([t for t, _ in hits])
    nearest = np.argmin(ts, axis=0)
    depth = ts[nearest, np.arange(ts.shape[1])]
    hit = np.isfinite(depth)
    colour = np.zeros((ts.shape[1], 3))
    points = origin + np.where(hit, depth, 0.0)[:, None] * dirs
    for index, (primitive, (_, normals)) in enumerate(zip(primitives, hits)):
        sel = hit & (nearest == index)
        if sel.any():
            shade = 0.55 + 0.45 * np.abs(normals[sel] @ _LIGHT)
            colour[sel] = primitive.texture.colour(points[sel]) * shade[:, None]
    image = np.clip(colour, 0.0, 1.0).reshape(height, width, 3).transpose(2, 0, 1)
    depth = np.where(hit, depth, 0.0).reshape(1, height, width)
    out = torch.from_numpy(image.astype(np.float32)), torch.from_numpy(depth.astype(np.float32))
    if return_index:
        out += (torch.from_numpy(np.where(hit, nearest, -1).reshape(height, width).astype(np.int64)),)
    return out


def axis_angle_to_matrix(v: np.ndarray) -> np.ndarray:
    """Rodrigues: a rotation vector (radians) -> ``3,3`` rotation matrix."""
    v = np.asarray(v, dtype=np.float64)
    angle = np.linalg.norm(v)
    if angle < 1e-12:
        return np.eye(3)
    k = v / angle
    cross = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def _rigid(rotation_vector, translation) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = axis_angle_to_matrix(rotation_vector)
    T[:3, 3] = translation
    return T


class SyntheticScenes(Dataset):
    """``n`` random rooms with boxes, each seen by a target camera and ``sources`` nearby cameras.

    Item ``i`` is a sequence sample (see :mod:`depthmetric.training.data`): ``image`` (target, 3,H,W), ``depth``
    (target, 1,H,W, exact), ``labels`` (target, H,W int64: the index into :data:`CLASSES` of the surface each
    pixel sees, ``IGNORE_LABEL`` where none), ``sources`` (S,3,H,W), ``poses`` (S,4,4, exact target camera ->
    source camera) and ``K`` (3,3). Source cameras move along a random velocity (translation up to ``max_translation``
    metres and rotation up to ``max_rotation`` radians per axis per frame step): with ``sources=2`` they
    are the previous and next frames, more sources step further out (-1, +1, -2, +2, ...). Item ``i``
    depends on ``(seed, i)`` only, so the data set is deterministic and workers need no coordination.
    Rendering one 96x128 item with two sources takes about 40 ms on one CPU core.
    """

    def __init__(
        self,
        n: int,
        height: int = 96,
        width: int = 128,
        sources: int = 2,
        seed: int = 0,
        max_translation: float = 0.15,
        max_rotation: float = 0.03,
        transform=None,
    ):
        if n < 1 or height < 2 or width < 2 or sources < 0:
            raise ValueError(f"need n >= 1, height, width >= 2 and sources >= 0, got {n}, {height}, {width}, {sources}")
        self.n, self.height, self.width, self.sources, self.seed = n, height, width, sources, seed
        self.max_translation, self.max_rotation = max_translation, max_rotation
        self.transform = transform

    def __len__(self) -> int:
        return self.n

    @property
    def classes(self) -> tuple[str, ...]:
        """The segmentation classes of ``labels`` (a data set without labels has no ``classes``)."""
        return CLASSES

    @staticmethod
    def surface_classes(primitives) -> np.ndarray:
        """The class of each primitive of :meth:`scene`: floor, ceiling, three walls, then boxes."""
        walls = [CLASSES.index(c) for c in ("floor", "ceiling", "wall", "wall", "wall")]
        return np.array(walls + [CLASSES.index("box")] * (len(primitives) - len(walls)), dtype=np.int64)

    def scene(self, rng: np.random.Generator) -> list:
        floor, ceiling = rng.uniform(1.0, 1.6), -rng.uniform(1.5, 2.5)
        back, side = rng.uniform(6.0, 9.0), rng.uniform(2.5, 4.0)
        # Point-sampled texture aliases where a surface is seen at a grazing angle, and aliasing differs
        # between views; floor, ceiling and side walls therefore get lower frequencies than the back wall.
        grazing = 8.0
        walls = [
            Plane(np.array([0.0, floor, 0.0]), np.array([0.0, -1.0, 0.0]), Texture.random(rng, max_frequency=grazing)),
            Plane(np.array([0.0, ceiling, 0.0]), np.array([0.0, 1.0, 0.0]), Texture.random(rng, max_frequency=grazing)),
            Plane(np.array([0.0, 0.0, back]), np.array([0.0, 0.0, -1.0]), Texture.random(rng)),
            Plane(np.array([-side, 0.0, 0.0]), np.array([1.0, 0.0, 0.0]), Texture.random(rng, max_frequency=grazing)),
            Plane(np.array([side, 0.0, 0.0]), np.array([-1.0, 0.0, 0.0]), Texture.random(rng, max_frequency=grazing)),
        ]
        boxes = []
        for _ in range(rng.integers(1, 4)):
            half = rng.uniform(0.2, 0.7, size=3)
            center = np.array([rng.uniform(-side + 0.7, side - 0.7), floor - half[1], rng.uniform(2.5, back - 1.0)])
            boxes.append(Box(center, half, rng.uniform(-0.7, 0.7), Texture.random(rng, max_frequency=15.0)))
        return walls + boxes

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.n:
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, index])
        primitives = self.scene(rng)
        focal = 0.7 * self.width * rng.uniform(0.9, 1.1)
        K = np.array([[focal, 0.0, (self.width - 1) / 2], [0.0, focal, (self.height - 1) / 2], [0.0, 0.0, 1.0]])
        target_pose = _rigid(rng.uniform(-0.08, 0.08, size=3), rng.uniform(-0.2, 0.2, size=3))
        velocity_r = rng.uniform(-self.max_rotation, self.max_rotation, size=3)
        velocity_t = rng.uniform(-self.max_translation, self.max_translation, size=3)
        image, depth, index = render(primitives, target_pose, K, self.height, self.width, return_index=True)
        classes = torch.from_numpy(self.surface_classes(primitives))
        labels = torch.where(index >= 0, classes[index.clamp(min=0)], IGNORE_LABEL)
        sample = {"image": image, "depth": depth, "labels": labels, "K": torch.from_numpy(K.astype(np.float32))}
        if self.sources:
            steps = [(1 + j // 2) * (-1 if j % 2 == 0 else 1) for j in range(self.sources)]
            images, poses = [], []
            for step in steps:
                source_pose = target_pose @ _rigid(step * velocity_r, step * velocity_t)
                images.append(render(primitives, source_pose, K, self.height, self.width)[0])
                poses.append(np.linalg.inv(source_pose) @ target_pose)  # target camera -> source camera
            sample["sources"] = torch.stack(images)
            sample["poses"] = torch.from_numpy(np.stack(poses).astype(np.float32))
        return self.transform(sample) if self.transform is not None else sample
