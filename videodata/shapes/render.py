"""The "shapes" domain: attributes, labels, captions, and anti-aliased clip rendering.

A clip shows one saturated object (circle, square or upright triangle) on a near-black
background, moving left, right, up or down for ``NUM_FRAMES`` frames of ``SIZE x SIZE``
pixels. Everything random is drawn from an explicit ``numpy.random.Generator``, so a clip is a
pure function of its :class:`ClipSpec`, and a spec a pure function of the generator's state.

Image coordinates: x grows to the right, y grows downward; pixel ``(row i, col j)`` covers
``[j, j + 1) x [i, i + 1)``, so its center is ``(j + 0.5, i + 0.5)``. "up" means y decreases.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from core.checks import is_int

NUM_FRAMES = 17
SIZE = 64  # frame height = width, pixels
FPS = 8

COLORS: tuple[str, ...] = ("red", "yellow", "green", "cyan", "blue", "magenta")
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
MOTIONS: tuple[str, ...] = ("left", "right", "up", "down")
ATTRIBUTES: Mapping[str, tuple[str, ...]] = MappingProxyType({"color": COLORS, "shape": SHAPES, "motion": MOTIONS})
NUM_CLASSES = len(COLORS) * len(SHAPES) * len(MOTIONS)  # 72

# Hue of each color in degrees: saturated hues 60 degrees apart, in COLORS order.
HUES: Mapping[str, float] = MappingProxyType({c: 60.0 * i for i, c in enumerate(COLORS)})
# Unit step of each motion in image coordinates (dx, dy).
DIRECTIONS: Mapping[str, tuple[int, int]] = MappingProxyType(
    {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
)

# Jitter ranges (inclusive lower, exclusive upper bounds of uniform draws).
SIZE_RANGE = (10.0, 18.0)  # side of square / triangle, diameter of circle, px
SPEED_RANGE = (1.0, 2.5)  # px per frame
HUE_JITTER = 4.0  # degrees either side
VALUE_RANGE = (0.85, 1.0)  # HSV value of the object color
SATURATION_RANGE = (0.9, 1.0)
BACKGROUND_RANGE = (3.0, 10.0)  # gray level of the background at the frame center
NOISE_RANGE = (0.5, 2.0)  # std of per-pixel Gaussian noise, gray levels
MARGIN = 1.0  # px kept free between the object and the frame border
SUPERSAMPLE = 4  # samples per pixel side for anti-aliasing

_SQRT3_2 = math.sqrt(3.0) / 2.0

# Caption pieces. No word here may contain a direction word other than its own ("bright"
# contains "right"), so a caption names exactly one direction.
_VERBS = (("moving", "moves"), ("sliding", "slides"), ("going", "goes"), ("drifting", "drifts"),
          ("gliding", "glides"), ("traveling", "travels"), ("heading", "heads"))  # fmt: skip
_DIRECTION_PHRASES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "left": ("left", "to the left", "leftward"),
    "right": ("right", "to the right", "rightward"),
    "up": ("up", "upward", "upwards"),
    "down": ("down", "downward", "downwards"),
})  # fmt: skip
_TEMPLATES = (
    "a {color} {shape} {ing} {dir}",
    "{color} {shape} {s} {dir}",
    "the {color} {shape} {s} {dir}",
    "a video of a {color} {shape} {ing} {dir}",
    "a {color} {shape} {ing} {dir} on a black background",
    "one {color} {shape} {s} {dir} across the frame",
    "a small {color} {shape} that {s} {dir}",
    "{color} {shape}, {ing} {dir}",
)


def _check_attr(kind: str, value: object) -> str:
    options = ATTRIBUTES[kind]
    if value not in options:
        raise ValueError(f"unknown {kind} {value!r}; choose from {list(options)}")
    return value  # type: ignore[return-value]


def label_of(color: str, shape: str, motion: str) -> int:
    """Class index of an attribute combination, in ``range(NUM_CLASSES)``.

    The index is ``(color_index * 3 + shape_index) * 4 + motion_index`` in the order of
    ``COLORS``, ``SHAPES`` and ``MOTIONS``.

    Raises:
        ValueError: an attribute is not in its vocabulary.
    """
    c = COLORS.index(_check_attr("color", color))
    s = SHAPES.index(_check_attr("shape", shape))
    m = MOTIONS.index(_check_attr("motion", motion))
    return (c * len(SHAPES) + s) * len(MOTIONS) + m


def attributes_of(label: int) -> tuple[str, str, str]:
    """Inverse of :func:`label_of`: ``label -> (color, shape, motion)``.

    Raises:
        ValueError: ``label`` is not an int in ``range(NUM_CLASSES)``.
    """
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= label < NUM_CLASSES:
        raise ValueError(f"label must be an int in [0, {NUM_CLASSES}), got {label!r}")
    cs, m = divmod(int(label), len(MOTIONS))
    c, s = divmod(cs, len(SHAPES))
    return COLORS[c], SHAPES[s], MOTIONS[m]


def caption_for(color: str, shape: str, motion: str, rng: np.random.Generator) -> str:
    """A caption such as "red square slides up", with template and synonyms drawn from ``rng``.

    Every caption contains the color word, the shape word and exactly one direction word
    (``left``/``right``/``up``/``down``, possibly inside "leftward", "upwards", ...).
    """
    label_of(color, shape, motion)  # validates
    template = _TEMPLATES[rng.integers(len(_TEMPLATES))]
    ing, s = _VERBS[rng.integers(len(_VERBS))]
    phrases = _DIRECTION_PHRASES[motion]
    return template.format(color=color, shape=shape, ing=ing, s=s, dir=phrases[rng.integers(len(phrases))])


def all_captions(color: str, shape: str, motion: str) -> frozenset[str]:
    """Every caption :func:`caption_for` can produce for these attributes (the training phrasings)."""
    label_of(color, shape, motion)  # validates
    return frozenset(
        template.format(color=color, shape=shape, ing=ing, s=s, dir=phrase)
        for template in _TEMPLATES
        for ing, s in _VERBS
        for phrase in _DIRECTION_PHRASES[motion]
    )


def class_caption(label: int) -> str:
    """The canonical caption of a class, "a {color} {shape} moving {direction}"."""
    color, shape, motion = attributes_of(label)
    return f"a {color} {shape} moving {motion}"


@dataclass(frozen=True)
class ClipSpec:
    """Everything that determines one rendered clip.

    Attributes:
        color, shape, motion: the class attributes.
        size: side (square, triangle) or diameter (circle) in px.
        speed: px per frame along the motion direction.
        x0, y0: center of the object's bounding box in frame 0, px.
        rgb: object color, floats in [0, 255].
        background: background gray level at the frame center.
        noise: std of the per-pixel Gaussian noise.
        noise_seed: seeds the noise generator.
    """

    color: str
    shape: str
    motion: str
    size: float
    speed: float
    x0: float
    y0: float
    rgb: tuple[float, float, float]
    background: float
    noise: float
    noise_seed: int

    @property
    def label(self) -> int:
        return label_of(self.color, self.shape, self.motion)

    @property
    def extent(self) -> tuple[float, float]:
        """Bounding-box (width, height) of the object in px."""
        return (self.size, self.size * _SQRT3_2) if self.shape == "triangle" else (self.size, self.size)

    def centers(self, num_frames: int = NUM_FRAMES) -> np.ndarray:
        """(num_frames, 2) bounding-box centers (x, y) of every frame; past ``NUM_FRAMES`` the motion goes on."""
        dx, dy = DIRECTIONS[self.motion]
        t = np.arange(num_frames, dtype=np.float64) * self.speed
        return np.stack([self.x0 + dx * t, self.y0 + dy * t], axis=1)


def sample_spec(color: str, shape: str, motion: str, rng: np.random.Generator) -> ClipSpec:
    """Draws size, speed, start position, color jitter and background for one clip.

    The start position is drawn so that the object's bounding box stays at least ``MARGIN``
    px inside the frame in all ``NUM_FRAMES`` frames.
    """
    label_of(color, shape, motion)  # validates
    size = float(rng.uniform(*SIZE_RANGE))
    speed = float(rng.uniform(*SPEED_RANGE))
    w, h = (size, size * _SQRT3_2) if shape == "triangle" else (size, size)
    travel = speed * (NUM_FRAMES - 1)
    dx, dy = DIRECTIONS[motion]

    def start(extent: float, step: int) -> float:
        lo, hi = MARGIN + extent / 2, SIZE - MARGIN - extent / 2  # range of the center
        if step > 0:
            hi -= travel
        elif step < 0:
            lo += travel
        assert lo <= hi, "size and speed ranges must let the object cross the frame"
        return float(rng.uniform(lo, hi))

    x0, y0 = start(w, dx), start(h, dy)
    hue = (HUES[color] + rng.uniform(-HUE_JITTER, HUE_JITTER)) % 360.0
    rgb = colorsys.hsv_to_rgb(hue / 360.0, rng.uniform(*SATURATION_RANGE), rng.uniform(*VALUE_RANGE))
    return ClipSpec(
        color=color, shape=shape, motion=motion, size=size, speed=speed, x0=x0, y0=y0,
        rgb=tuple(float(255.0 * v) for v in rgb), background=float(rng.uniform(*BACKGROUND_RANGE)),
        noise=float(rng.uniform(*NOISE_RANGE)), noise_seed=int(rng.integers(2**63 - 1)),
    )  # fmt: skip


def coverage(shape: str, size: float, centers: np.ndarray, frame_size: int = SIZE) -> np.ndarray:
    """Anti-aliased coverage of a shape: fraction of each pixel inside it.

    Args:
        shape: one of ``SHAPES``.
        size: side or diameter in px.
        centers: (T, 2) bounding-box centers (x, y) in px.
        frame_size: frame height = width in px.

    Returns:
        (T, frame_size, frame_size) float32 in [0, 1], from ``SUPERSAMPLE**2`` samples per pixel.
    """
    _check_attr("shape", shape)
    T = centers.shape[0]
    # Only a window around the object is sampled: K x K pixels, K covering the shape plus a
    # pixel either side, placed per frame (clamped to the frame) and pasted into the output.
    K = min(frame_size, math.ceil(size) + 3)
    origin = np.clip(np.floor(centers - size / 2).astype(np.int64) - 1, 0, frame_size - K)  # (T, 2) x, y
    local = (np.arange(K * SUPERSAMPLE, dtype=np.float64) + 0.5) / SUPERSAMPLE  # sample offsets, px
    rel = origin[:, None, :] + local[None, :, None] - centers[:, None, :]  # (T, K*s, 2) from the center
    x, y = rel[:, None, :, 0], rel[:, :, None, 1]  # (T, 1, K*s), (T, K*s, 1)
    half = size / 2
    if shape == "circle":
        inside = x * x + y * y <= half * half
    elif shape == "square":
        inside = (np.abs(x) <= half) & (np.abs(y) <= half)
    else:  # upright equilateral triangle: apex at the top, base at the bottom
        height = size * _SQRT3_2
        depth = y + height / 2  # distance below the apex
        inside = (depth >= 0) & (depth <= height) & (np.abs(x) <= depth * (half / height))
    window = inside.reshape(T, K, SUPERSAMPLE, K, SUPERSAMPLE).mean(axis=(2, 4), dtype=np.float32)  # (T, K, K)
    out = np.zeros((T, frame_size, frame_size), dtype=np.float32)
    for t, (ox, oy) in enumerate(origin):
        out[t, oy : oy + K, ox : ox + K] = window[t]
    return out


def render_clip(spec: ClipSpec, num_frames: int = NUM_FRAMES) -> np.ndarray:
    """Renders a clip from its spec.

    The background is a dim vignette (brightest at the center) plus Gaussian noise; the
    object is composited over it with its anti-aliased coverage. Past ``NUM_FRAMES`` (the
    world's own continuation of a clip, for judging long videos) the object keeps its speed and
    may leave the frame; the first ``NUM_FRAMES`` frames are those of the clip.

    Returns:
        (num_frames, SIZE, SIZE, 3) uint8 RGB frames.
    """
    if not is_int(num_frames) or num_frames < 1:
        raise ValueError(f"num_frames must be an integer >= 1, got {num_frames!r}")
    cov = coverage(spec.shape, spec.size, spec.centers(num_frames))[..., None]  # (T, H, W, 1)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + 0.5
    r2 = ((xx - SIZE / 2) ** 2 + (yy - SIZE / 2) ** 2) / (SIZE / 2) ** 2  # 0 at center, 2 in corners
    background = (spec.background * (1.0 - 0.3 * r2))[None, :, :, None]  # (1, H, W, 1)
    color = np.asarray(spec.rgb, dtype=np.float32)  # (3,)
    frames = background * (1.0 - cov) + color * cov  # (T, H, W, 3)
    noise_rng = np.random.default_rng(spec.noise_seed)
    frames = frames + noise_rng.normal(0.0, spec.noise, size=frames.shape).astype(np.float32)
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)
