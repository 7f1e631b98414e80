"""Judges a video of the "shapes" domain: which color, shape and motion does it show?

:func:`analyze` is deterministic and classical (no learned weights), so it can score prompt
adherence of generated videos without being trained on them. Per frame it:

1. measures chroma (max - min over RGB): the objects are saturated and the background is
   near-black, so chroma separates them even under brightness shifts;
2. thresholds at half-way between the frame's background chroma (median) and its peak
   (mean of the top pixels), and keeps the 4-connected component with the most chroma mass,
   which drops specks of noise; the component must stand out by ``MIN_CONTRAST`` from the
   95th percentile of the rest of the frame, which rejects frames of noise;
3. turns chroma into a soft coverage ``alpha`` in [0, 1] around that component (dilated by
   two pixels, so anti-aliased or blurred edges count by their coverage), and measures its
   area, centroid, mean hue in the opponent plane ``(2R - G - B, sqrt(3) (G - B))``, and two
   shape features from cumulants of the mass distribution, which a symmetric blur leaves
   unchanged (it only adds to the variance):

   - ``corner``: 4th cumulant along the diagonals minus along the axes, over area^2, scaled
     so an axis-aligned square is 1 (it is wider along its diagonals) and a disk or an
     equilateral triangle (both isotropic to 4th order) is 0;
   - ``bottom``: minus the 3rd central moment of y over area^1.5, scaled so an upright
     equilateral triangle (mass low, y downward) is 1 and a disk or square is 0.

   These are exact for the ideal shapes (1/240 and 8 / (360 * 3^(1/4)) before scaling) and
   measure within ~0.06 of 0 or 1 on rendered clips (typically ~0.2 after H.264 at crf 18, but up to ~0.5 for the
   smallest circles centred on the pixel grid, where one of 1,152 extreme renders read as a square); blur, noise and
   compression move them toward the 0.5 thresholds, which the shape confidence reflects.

Frames with no object, with an implausibly large one (noise), or whose area is far from the clip's
median area or whose hue is more than ``HUE_OUTLIER`` from the circular mean of its hues are dropped as garbage.
Color is the named hue that more than half of the usable frames are nearest to: a clip split evenly between two
colours reads as no colour, and one that turns to a neighbouring colour in fewer than half its frames keeps the
colour of the rest (that drift is what hue stability, :mod:`videoeval.shapes_scoring`, reports). Shape is a vote
of per-frame decisions (triangle if bottom >= 0.5, else square if corner >= 0.5, else circle if both are within 0.5
of 0, else none);
motion is the dominant axis and sign of a Theil-Sen line through the centroid track, if it
travels at least ``MIN_DISPLACEMENT`` of the frame side. Each attribute's confidence in [0, 1]
multiplies its margin by the agreement across frames; the overall confidence is the smallest
of the three times the fraction of usable frames. Attributes that cannot be read are None with
confidence 0. An unsaturated (white or gray) object is not seen at all: every object of the
domain is saturated. :func:`track` and :func:`count_objects` expose the per-frame centroids and blob
counts that visual-conditioning evaluation needs.

Over 400 lines because the per-frame measurements, their robust aggregation and the two per-frame
readers share one segmentation (chroma threshold and components) that must stay identical.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from videodata.shapes.render import COLORS, DIRECTIONS, HUES, SHAPES, label_of

# Thresholds, in units that do not depend on the frame size.
MIN_CONTRAST = 48.0  # chroma (0..255) the object must stand out from the background by
TOP_FRACTION = 0.002  # share of pixels whose mean chroma is the frame's peak level
MAX_AREA = 0.25  # an "object" covering more of the frame than this is noise
MIN_AREA = 0.0008  # ... and less than this is a speck (3.3 px at 64x64)
AREA_OUTLIER = 2.0  # frames whose area is off the median by more than this factor are dropped
HUE_OUTLIER = 40.0  # degrees; frames whose hue is further than this from the circular mean are dropped
MIN_VALID_FRACTION = 0.5  # fewer usable frames than this and nothing is reported
MIN_DISPLACEMENT = 0.05  # of min(H, W): less travel than this is "no motion"
# Values of the unscaled shape features for the ideal shapes (see the module docstring):
# (kappa4 diagonal - kappa4 axis) / area^2 of a square, -mu3_y / area^1.5 of an upright
# equilateral triangle.
_SQUARE_CORNER = 1.0 / 240.0
_TRIANGLE_SKEW = 8.0 / (360.0 * 3.0**0.25)


@dataclass(frozen=True)
class Analysis:
    """What :func:`analyze` read from a clip.

    Attributes:
        color, shape, motion: the attributes, or None when they cannot be read.
        confidence: in [0, 1]; min of the three attribute confidences times the share of
            usable frames. 0 when any attribute is None.
        color_confidence, shape_confidence, motion_confidence: in [0, 1], each the margin of
            the decision times the agreement of the frames.
        num_frames: T of the input.
        num_valid_frames: frames in which one plausible object was found.
        hue: circular mean hue of the object in degrees, or None.
        corner: median "squareness" of the object: ~1 for an axis-aligned square, ~0 for a
            disk or triangle, ~-1 for a diamond; or None.
        bottom: median bottom-heaviness: ~1 for an upright equilateral triangle, ~0 for
            a disk or square, ~-1 for an inverted triangle; or None.
        size: median sqrt(area) of the object in px, or None.
        displacement: (dx, dy) of the centroid from the first to the last frame in px (Theil-Sen
            slope times T - 1), or None.
    """

    color: str | None
    shape: str | None
    motion: str | None
    confidence: float
    color_confidence: float
    shape_confidence: float
    motion_confidence: float
    num_frames: int
    num_valid_frames: int
    hue: float | None = None
    corner: float | None = None
    bottom: float | None = None
    size: float | None = None
    displacement: tuple[float, float] | None = None

    @property
    def label(self) -> int | None:
        """Class index of (color, shape, motion), or None if any is unknown."""
        if self.color is None or self.shape is None or self.motion is None:
            return None
        return label_of(self.color, self.shape, self.motion)

    def matches(self, color: str, shape: str, motion: str) -> bool:
        """True when all three attributes equal the given ones."""
        return (self.color, self.shape, self.motion) == (color, shape, motion)

    def to_dict(self) -> dict:
        """JSON-ready dict with floats rounded to 4 decimals."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float):
                out[key] = round(value, 4)
            elif isinstance(value, tuple):
                out[key] = [round(v, 4) for v in value]
        out["label"] = self.label
        return out


def _check_frames(frames: np.ndarray) -> None:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
        got = f"{type(frames).__name__} {getattr(frames, 'dtype', '')}"
        raise ValueError(f"frames must be a uint8 numpy array, got {got}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (T, H, W, 3), got {frames.shape}")
    T, H, W, _ = frames.shape
    if T < 1 or H < 8 or W < 8:
        raise ValueError(f"frames must have T >= 1 and H, W >= 8, got {frames.shape}")


def _components(mask: np.ndarray) -> np.ndarray:
    """4-connected components of each frame: (T, H, W) bool -> (T, H, W) int64 labels.

    A pixel's label is 1 + the smallest flat index in its component; background is 0. Labels
    are found by propagating the minimum to the neighbours, with pointer jumping (a label is
    itself a pixel index, whose label is at least as small) so it converges in few rounds.
    """
    T, H, W = mask.shape
    dtype = np.int32 if T * H * W < 2**31 - 1 else np.int64
    big = np.iinfo(dtype).max
    lab = np.where(mask, np.arange(T * H * W, dtype=dtype).reshape(T, H, W), big)
    for _ in range(4 * (H + W)):
        new = lab.copy()
        np.minimum(new[:, 1:], lab[:, :-1], out=new[:, 1:])
        np.minimum(new[:, :-1], lab[:, 1:], out=new[:, :-1])
        np.minimum(new[:, :, 1:], lab[:, :, :-1], out=new[:, :, 1:])
        np.minimum(new[:, :, :-1], lab[:, :, 1:], out=new[:, :, :-1])
        new[~mask] = big
        flat = new.reshape(-1)  # (T*H*W,)
        fg = flat != big
        flat[fg] = flat[flat[fg]]  # pointer jumping
        if np.array_equal(new, lab):
            break
        lab = new
    return np.where(mask, lab.astype(np.int64) + 1, 0)


def _dilate(mask: np.ndarray) -> np.ndarray:
    """3x3 binary dilation of each frame of a (T, H, W) bool array."""
    out = mask.copy()
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    grown = out.copy()
    out[:, :, 1:] |= grown[:, :, :-1]
    out[:, :, :-1] |= grown[:, :, 1:]
    return out


def _frame_features(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame object measurements; ``valid`` marks frames with one plausible object.

    Returns:
        dict of (T,) arrays: valid (bool), area, cx, cy, corner, bottom, hue (degrees).
    """
    T, H, W, _ = frames.shape
    r, g, b = frames[..., 0], frames[..., 1], frames[..., 2]  # (T, H, W) each; faster than max(-1)
    chroma = (np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)).astype(np.float32)  # (T, H, W)
    flat = chroma.reshape(T, H * W)
    background = np.median(flat, axis=1)  # (T,)
    k = max(4, math.ceil(TOP_FRACTION * H * W))
    peak = np.partition(flat, H * W - k, axis=1)[:, -k:].mean(axis=1)  # (T,)
    present = peak - background >= MIN_CONTRAST
    mask = (chroma >= (background + 0.5 * (peak - background))[:, None, None]) & present[:, None, None]
    labels = _components(mask)
    # Keep, per frame, the component holding the most chroma above the background.
    excess = np.clip(chroma - background[:, None, None], 0, None)
    mass = np.bincount(labels.reshape(-1), weights=excess.reshape(-1), minlength=T * H * W + 1)[1:]
    best = mass.reshape(T, H * W).argmax(axis=1) + np.arange(T) * H * W + 1  # (T,) label ids
    chosen = labels == best[:, None, None]  # (T, H, W)
    support = _dilate(_dilate(chosen))  # 2 px of margin keeps blurred edges in the moments
    # Clutter: how bright the rest of the frame gets (object zeroed out; it covers < 25%).
    clutter = np.percentile(np.where(support, 0.0, chroma).reshape(T, H * W), 95, axis=1)  # (T,)

    feats = {name: np.full(T, np.nan) for name in _FEATURES}
    valid = np.zeros(T, dtype=bool)
    for t in np.flatnonzero(present):
        rows, cols = np.flatnonzero(support[t].any(axis=1)), np.flatnonzero(support[t].any(axis=0))
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))  # the support's bounding box
        level = np.percentile(chroma[t][chosen[t]], 75)
        # The object must stand out from the rest of the frame, not just from its median:
        # in a frame of noise, the brightest cluster is no brighter than the noise around it.
        if level - max(background[t], clutter[t]) < MIN_CONTRAST:
            continue
        alpha = np.clip((chroma[t][box] - background[t]) / (level - background[t]), 0.0, 1.0)  # (h, w)
        alpha = alpha * support[t][box]
        area = float(alpha.sum())
        if not MIN_AREA * H * W <= area <= MAX_AREA * H * W:
            continue
        values = _measure(alpha, frames[t][box].astype(np.float64))
        values[1:3] += (cols[0], rows[0])  # centroid in frame coordinates
        valid[t] = True
        for name, value in zip(_FEATURES, values):
            feats[name][t] = value
    # Garbage frames: far from the clip's typical area or hue.
    if valid.any():
        med_area = np.median(feats["area"][valid])
        med_hue = _circular_mean(feats["hue"][valid])
        ratio = feats["area"] / med_area
        valid &= (ratio <= AREA_OUTLIER) & (ratio >= 1.0 / AREA_OUTLIER)
        valid &= angle_diff(feats["hue"], med_hue) <= HUE_OUTLIER
    feats["valid"] = valid
    return feats


_FEATURES = ("area", "cx", "cy", "corner", "bottom", "hue")


def _measure(alpha: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """Features of one object from its soft coverage.

    Args:
        alpha: (h, w) coverage in [0, 1] of a crop around the object, total > 0.
        rgb: (h, w, 3) float colors of the same crop.

    Returns:
        (6,) float64 in ``_FEATURES`` order: area (px), centroid x and y (px, in the crop),
        corner, bottom (see the constants above) and hue (degrees).
    """
    h, w = alpha.shape
    area = float(alpha.sum())
    p = alpha / area  # (h, w) mass distribution
    ys = np.arange(h, dtype=np.float64)[:, None] + 0.5  # (h, 1) pixel centers
    xs = np.arange(w, dtype=np.float64)[None, :] + 0.5  # (1, w)
    cx, cy = float((p * xs).sum()), float((p * ys).sum())
    x, y = xs - cx, ys - cy  # (1, w), (h, 1)
    # Cumulants of 1-D projections, normalized by area so they do not depend on size; a
    # symmetric blur adds nothing to the 3rd and 4th cumulants (only to the variance).
    k4 = [_kappa4(p, u) / area**2 for u in (x + 0 * y, y + 0 * x, (x + y) / math.sqrt(2), (x - y) / math.sqrt(2))]
    corner = ((k4[2] + k4[3]) - (k4[0] + k4[1])) / 2 / _SQUARE_CORNER
    bottom = -float((p * y**3).sum()) / math.sqrt(area) ** 3 / _TRIANGLE_SKEW
    # Hue of the summed color in the opponent plane: weighting by coverage and chroma both.
    r, g, b = (float((rgb[..., i] * alpha).sum()) for i in range(3))
    hue = math.degrees(math.atan2(math.sqrt(3.0) * (g - b), 2 * r - g - b)) % 360.0
    return np.array([area, cx, cy, corner, bottom, hue])


def _kappa4(p: np.ndarray, u: np.ndarray) -> float:
    """4th cumulant of coordinate ``u`` (centered) under the mass distribution ``p``."""
    m2 = float((p * u**2).sum())
    return float((p * u**4).sum()) - 3.0 * m2 * m2


def angle_diff(a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    """Absolute difference of angles in degrees, in [0, 180] (NaN stays NaN)."""
    return np.abs((np.asarray(a) - b + 180.0) % 360.0 - 180.0)


def _circular_mean(degrees: np.ndarray) -> float:
    rad = np.radians(degrees)
    return float(np.degrees(np.arctan2(np.sin(rad).mean(), np.cos(rad).mean())) % 360.0)


def _theil_sen(t: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    """Median pairwise slope of v(t), and the share of pairs whose slope has its sign."""
    i, j = np.triu_indices(len(t), k=1)
    slopes = (v[j] - v[i]) / (t[j] - t[i])
    slope = float(np.median(slopes))
    return slope, float(np.mean(np.sign(slopes) == np.sign(slope))) if slope else 0.0


def _read_color(hues: np.ndarray) -> tuple[str | None, float, float]:
    """(colour, circular mean hue, confidence). The colour is the named hue nearest to more than half of the frames'
    hues, else None; confidence = the margin of those frames' mean hue * their share. The colour nearest to the mean
    of all frames read a clip split evenly between two neighbours as the one listed first in ``COLORS``."""
    mean = _circular_mean(hues)
    centers = np.array([HUES[c] for c in COLORS])
    per_frame = np.argmin(angle_diff(hues[:, None], centers[None, :]), axis=1)  # (n,) index into COLORS
    votes = np.bincount(per_frame, minlength=len(COLORS))
    winner = int(votes.argmax())
    if 2 * votes[winner] <= len(hues):
        return None, mean, 0.0
    color = COLORS[winner]
    agreeing = _circular_mean(hues[per_frame == winner])
    margin = 1.0 - float(angle_diff(agreeing, HUES[color])) / 30.0  # 30 degrees = half-way to the next hue
    return color, mean, max(0.0, margin) * float(votes[winner] / len(hues))


def _read_shape(corner: np.ndarray, bottom: np.ndarray) -> tuple[str | None, float]:
    """Vote of per-frame shapes: the shape of a strict majority of the frames that show one (else None);
    confidence = vote share * median margin to the thresholds.

    A frame is a triangle when ``bottom >= 0.5``, else a square when ``corner >= 0.5``, else a
    circle when both are within 0.5 of 0; anything else (a diamond, an inverted triangle) is
    no shape. The margin of a frame is its distance to the nearest threshold it had to pass,
    divided by 0.5, so 1 means the ideal shape (capped at 1) and 0 a coin flip.
    """
    tri = bottom >= 0.5
    square = ~tri & (corner >= 0.5)
    circle = ~tri & (np.abs(bottom) < 0.5) & (np.abs(corner) < 0.5)
    votes = np.array([circle.sum(), square.sum(), tri.sum()])  # in SHAPES order
    winner = int(votes.argmax())
    if votes[winner] == 0 or 2 * votes[winner] <= len(corner) - votes.sum():
        return None, 0.0  # most frames show no known shape
    if 2 * votes[winner] <= votes.sum():  # no strict majority: argmax gave a tie to the shape listed first in SHAPES,
        return None, 0.0  # so a square clip turning circle half-way read "circle" and the reverse did not
    margin = (  # distance to the nearest threshold the winner had to pass, over 0.5
        np.minimum(0.5 - np.abs(corner), 0.5 - np.abs(bottom)),
        np.minimum(corner - 0.5, 0.5 - bottom),
        bottom - 0.5,
    )[winner] / 0.5
    chosen = (circle, square, tri)[winner]
    return SHAPES[winner], float(votes[winner] / len(corner)) * float(np.clip(np.median(margin[chosen]), 0.0, 1.0))


def _read_motion(
    t: np.ndarray, cx: np.ndarray, cy: np.ndarray, num_frames: int, side: int
) -> tuple[str | None, float, tuple[float, float]]:
    """Dominant axis and sign of the centroid's Theil-Sen track (None if it barely moves)."""
    (sx, ax), (sy, ay) = _theil_sen(t, cx), _theil_sen(t, cy)
    dx, dy = sx * (num_frames - 1), sy * (num_frames - 1)
    major, minor, agree = (dx, dy, ax) if abs(dx) >= abs(dy) else (dy, dx, ay)
    min_disp = MIN_DISPLACEMENT * side
    if abs(major) < min_disp:
        return None, 0.0, (dx, dy)
    step = (int(np.sign(major)), 0) if abs(dx) >= abs(dy) else (0, int(np.sign(major)))
    motion = next(m for m, d in DIRECTIONS.items() if d == step)
    dominance = 1.0 - abs(minor) / abs(major)
    strength = min(1.0, (abs(major) - min_disp) / min_disp)
    return motion, dominance * strength * agree, (dx, dy)


def analyze(frames: np.ndarray) -> Analysis:
    """Reads the color, shape and motion of the one object in a clip.

    Args:
        frames: (T, H, W, 3) uint8 RGB, any T >= 1 and H, W >= 8 (motion needs T >= 2).

    Returns:
        An :class:`Analysis`; attributes that cannot be read (no object, too few usable
        frames, no motion) are None with confidence 0.

    Raises:
        ValueError: ``frames`` is not a uint8 (T, H, W, 3) array.
    """
    _check_frames(frames)
    T, H, W, _ = frames.shape
    f = _frame_features(frames)
    valid = f["valid"]
    n = int(valid.sum())
    if n == 0 or n < MIN_VALID_FRACTION * T:
        return Analysis(None, None, None, 0.0, 0.0, 0.0, 0.0, T, n)
    color, hue, color_conf = _read_color(f["hue"][valid])
    shape, shape_conf = _read_shape(f["corner"][valid], f["bottom"][valid])
    motion, motion_conf, disp = None, 0.0, None
    if n >= 2:
        t = np.flatnonzero(valid).astype(np.float64)
        motion, motion_conf, disp = _read_motion(t, f["cx"][valid], f["cy"][valid], T, min(H, W))
    confidence = min(color_conf, shape_conf, motion_conf) * n / T if shape is not None else 0.0
    return Analysis(
        color, shape, motion, confidence, color_conf, shape_conf, motion_conf, T, n, hue=hue,
        corner=float(np.median(f["corner"][valid])), bottom=float(np.median(f["bottom"][valid])),
        size=float(np.sqrt(np.median(f["area"][valid]))), displacement=disp,
    )  # fmt: skip


def track(frames: np.ndarray) -> np.ndarray:
    """The object's centroid (x, y) in px in every frame, NaN where no plausible object was found.

    Coordinates are continuous: pixel i spans [i, i + 1), as in :mod:`videodata.shapes.render`.

    Args:
        frames: (T, H, W, 3) uint8 RGB.

    Returns:
        (T, 2) float64.
    """
    _check_frames(frames)
    f = _frame_features(frames)
    xy = np.stack([f["cx"], f["cy"]], axis=1)  # (T, 2)
    xy[~f["valid"]] = np.nan
    return xy


def frame_hues(frames: np.ndarray) -> np.ndarray:
    """The object's hue in degrees in every frame, NaN where no plausible object was found.

    Unlike :func:`analyze`, frames whose hue strays far from the clip's are kept: this is the measurement
    of hue drift, not a reading of the color.

    Args:
        frames: (T, H, W, 3) uint8 RGB.

    Returns:
        (T,) float64.
    """
    _check_frames(frames)
    return _frame_features(frames)["hue"]


def hue_stability(hues: np.ndarray, tolerance: float) -> tuple[int, int]:
    """(frames whose hue is within ``tolerance`` degrees of the clip's median hue, frames).

    The median is taken around the circular mean; a frame without an object (NaN) counts as not within.
    """
    seen = hues[~np.isnan(hues)]
    if not len(seen):
        return 0, len(hues)
    center = _circular_mean(seen)
    median = center + float(np.median((seen - center + 180.0) % 360.0 - 180.0))
    return int((angle_diff(seen, median) <= tolerance).sum()), len(hues)


def count_objects(frames: np.ndarray) -> np.ndarray:
    """How many separate colored blobs of at least ``MIN_AREA`` of the frame stand out in each frame.

    A blob is a 4-connected region whose chroma exceeds the frame's median by ``MIN_CONTRAST``.
    One object gives 1; a phantom (a second shape, or specks of another color) gives more.

    Args:
        frames: (T, H, W, 3) uint8 RGB.

    Returns:
        (T,) int64 counts.
    """
    _check_frames(frames)
    T, H, W, _ = frames.shape
    f = frames.astype(np.int16)
    chroma = f.max(axis=-1) - f.min(axis=-1)  # (T, H, W)
    background = np.median(chroma.reshape(T, -1), axis=1)  # (T,)
    labels = _components(chroma >= background[:, None, None] + MIN_CONTRAST)  # (T, H, W)
    min_px = max(2.0, MIN_AREA * H * W)
    counts = np.zeros(T, dtype=np.int64)
    for t in range(T):
        sizes = np.bincount(labels[t].reshape(-1))[1:]  # pixels per label id (0 = background)
        counts[t] = int((sizes >= min_px).sum())
    return counts
