"""Videos to evaluate: media files, or folders of frame images, listed in one order and paired by relative path.

:func:`find_videos` lists the videos under a folder: every video file (mp4, avi, gif, ...) is one
video, and every folder that directly holds image files is one video whose frames are those
images in name order ("raw frames"). FVD reads clips from them (:func:`videoeval.fvd.iter_clips`);
paired metrics match real and generated videos by :meth:`VideoSource.key`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.video_io import IMAGE_EXTS, VIDEO_EXTS, frame_files, list_media, read_video

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoSource:
    """One video: a media file, or a folder whose image files (``frames``) are its frames."""

    path: Path
    frames: tuple[Path, ...] = ()

    @property
    def kind(self) -> str:
        """The kind of video: "frames" for a folder of images, else "file"."""
        return "frames" if self.frames else "file"

    def key(self, root: Path) -> str:
        """Relative path without the file suffix: ``a/b.mp4``, ``a/b.avi`` and folder ``a/b/`` pair up.

        A video that is the root itself (one file, or one folder of frames) is keyed by its own name (``b``).
        """
        if self.path == root:
            return self.path.name if self.frames else self.path.stem
        rel = self.path.relative_to(root)
        return (rel if self.frames else rel.with_suffix("")).as_posix()

    def read(self, *, num_frames: int | None = None, stride: int = 1, start: int = 0) -> np.ndarray:
        """Frames ``start, start + stride, ...`` as (T, H, W, 3) uint8 (all to the end if num_frames is None).

        Raises:
            ValueError: unreadable, too short, or (frame folder) images of different sizes.
        """
        if not self.frames:
            return read_video(self.path, num_frames=num_frames, stride=stride, start=start)
        total = len(self.frames)
        needed = start + 1 if num_frames is None else start + (num_frames - 1) * stride + 1
        if total < needed:
            want = f"num_frames={num_frames}, stride={stride}, start={start}"
            raise ValueError(f"{str(self.path)!r} is too short: it has {total} frames, {want} needs {needed}")
        stop = total if num_frames is None else needed
        frames = [read_video(p)[0] for p in self.frames[start:stop:stride]]  # each (H, W, 3)
        if len({f.shape for f in frames}) != 1:
            raise ValueError(f"frame folder {str(self.path)!r} holds images of different sizes")
        return np.stack(frames)


def find_videos(root: str | os.PathLike) -> list[VideoSource]:
    """Lists the videos under ``root``, sorted by relative path.

    Every file with a suffix in ``VIDEO_EXTS`` is one video; every folder (``root`` included) that directly holds
    files with a suffix in ``IMAGE_EXTS``, and no video file, is one video made of those images in
    :func:`core.video_io.frame_files` order (numbers compared as numbers). Images beside video files are not frames
    (``generate.py`` writes a contact sheet ``video_000.png`` beside each ``video_000.mp4``: they were read as one
    more video). Hidden files and folders (".name") are skipped.

    Args:
        root: a folder, or a single video file.

    Raises:
        ValueError: ``root`` does not exist or is not a video file.
    """
    root = Path(root)
    if root.is_file():
        return [VideoSource(p) for p in list_media(root, exts=VIDEO_EXTS)]
    sources, frame_folders = [], {}
    for path in list_media(root, exts=VIDEO_EXTS | IMAGE_EXTS):  # sorted
        if path.suffix.lower() in VIDEO_EXTS:
            sources.append(VideoSource(path))
        else:
            frame_folders.setdefault(path.parent, []).append(path)
    with_videos = {src.path.parent for src in sources}
    ignored = [folder for folder in frame_folders if folder in with_videos]
    if ignored:
        log.info("%d folder(s) hold videos and images: their images are not read as frames (e.g. %s)",
                 len(ignored), ignored[0])  # fmt: skip
    # a folder's frames in frame_files' order, the one read_video reads: numbers as numbers (frame_2 before frame_10;
    # the name order of list_media read ffmpeg's unpadded out_%d.png time-shuffled, and identical videos at 9 dB)
    sources += [VideoSource(folder, tuple(frame_files(folder))) for folder in frame_folders if folder not in ignored]
    return sorted(sources, key=lambda s: s.key(root))


def videos_by_key(root: str | os.PathLike, what: str) -> dict[str, VideoSource]:
    """The videos under ``root`` by :meth:`VideoSource.key`, in key order.

    Raises:
        ValueError: two videos share a key (``a/b.mp4`` and ``a/b.avi``, or a file and a frame folder ``a/b/``):
            a prediction for one would replace the other's, and a pairing would pick one at random. ``what``
            names the side in the message.
    """
    root = Path(root)
    by_key: dict[str, VideoSource] = {}
    for src in find_videos(root):
        key = src.key(root)
        if key in by_key:
            raise ValueError(f"{what}: {str(by_key[key].path)!r} and {str(src.path)!r} both pair as {key!r}")
        by_key[key] = src
    return by_key
