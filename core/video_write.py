"""Writing video clips and contact sheets from uint8 (T, H, W, 3) frames.

Every write goes to a temp file in the target folder that is then renamed over the target
(:func:`core.files.atomic_path`), so a crash never leaves a half-written file under the real name.
mp4 is H.264 yuv420p through imageio-ffmpeg's ffmpeg binary; GIF goes through Pillow.
"""

from __future__ import annotations

import errno
import logging
import math
import numbers
import os
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

from core.files import atomic_dir, atomic_path
from core.frames import check_frames
from core.video_display import ffmpeg_path

log = logging.getLogger(__name__)

_WRITE_EXTS = (".mp4", ".gif")


MARK = "tokvid"  # a GIF's comment and a PNG sheet's "Software" text: files tokvid wrote (see :func:`written_by_tokvid`)
MAX_MP4_SIDE = 16384  # libx264's largest frame side
MAX_GIF_FPS = 100  # one centisecond, a GIF's shortest delay
_FFMPEG_ERRNOS = {  # what ffmpeg prints -> the errno a CLI reports as one line (an OSError without one: a traceback)
    "No space left on device": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT,
    "Permission denied": errno.EACCES, "Read-only file system": errno.EROFS,
}  # fmt: skip


def _write_mp4(tmp: Path, frames: np.ndarray, fps: float, crf: int, target: Path) -> None:
    import imageio_ffmpeg

    H, W = frames.shape[1:3]  # frames: (T, H, W, 3)
    if H % 2 or W % 2:
        # yuv420p needs even sides: repeat the last row/column rather than rescale the content.
        frames = np.pad(frames, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)), mode="edge")
        log.debug("padded %dx%d frames to %dx%d for yuv420p", W, H, frames.shape[2], frames.shape[1])
    rate = Fraction(fps).limit_denominator(100_000)
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-hide_banner", "-loglevel", "error",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{frames.shape[2]}x{frames.shape[1]}",
        "-r", f"{rate.numerator}/{rate.denominator}", "-i", "-", "-an",
        "-c:v", "libx264", "-preset", "medium", "-crf", str(crf), "-pix_fmt", "yuv420p",
        "-movflags", "+faststart", "-f", "mp4", ffmpeg_path(tmp),
    ]  # fmt: skip
    # Its own session: a terminal's Ctrl-C meant for a server let the server finish its jobs but killed this encode
    # (a 500); in a CLI the KeyboardInterrupt makes subprocess.run kill it.
    raw = np.ascontiguousarray(frames).tobytes()  # rgb24, frame after frame
    proc = subprocess.run(cmd, input=raw, capture_output=True, check=False, start_new_session=True)
    if proc.returncode != 0:
        lines = proc.stderr.decode(errors="replace").strip().replace(ffmpeg_path(tmp), tmp.name).splitlines()
        last = lines[-1] if lines else f"exit {proc.returncode}"
        code = next((n for text, n in _FFMPEG_ERRNOS.items() if any(text in line for line in lines)), None)
        # strerror is the reason alone, without the folder (a server shows it); the path is the filename
        reason = os.strerror(code) if code is not None else f"ffmpeg failed: {last}"
        raise OSError(code if code is not None else errno.EIO, reason, str(target))


def _write_gif(tmp: Path, frames: np.ndarray, fps: float) -> None:
    # GIF delays are whole centiseconds: choose them so frame i ends at round(100 * (i + 1) / fps)
    # cs, which keeps the average rate right (e.g. 30 fps -> 3, 4, 3 cs, ...).
    ends = [round(100 * (i + 1) / fps) for i in range(len(frames))]
    durations_ms = [10 * max(1, e - s) for s, e in zip([0, *ends[:-1]], ends)]
    if fps > 50:
        log.warning("GIF at %.1f fps: many players slow down frames shorter than 20 ms", fps)
    # Each frame to 256 colours as Pillow's GIF writer does (an adaptive palette), here, so that what it compares is
    # known: it folds a frame that shows the same as its predecessor into it (adding the delays), and has no option
    # not to. The timing is kept but such a GIF reads back with fewer frames, so say so; frames that differ only
    # before quantization merge too (a count of exactly equal input frames missed those).
    images = [Image.fromarray(f).convert("P", palette=Image.Palette.ADAPTIVE) for f in frames]
    shown = [np.asarray(im.convert("RGB")) for im in images]  # (H, W, 3) each, as a player shows the frame
    repeats = sum(bool(np.array_equal(a, b)) for a, b in zip(shown[:-1], shown[1:]))
    if repeats:
        log.warning("%s: %d frame(s) that show the same as the one before in 256 colours are merged into it (GIF); "
                    "it reads back with %d of %d "
                    "frames, at the same timing: write .mp4 to keep every frame", tmp.name, repeats,
                    len(frames) - repeats, len(frames))  # fmt: skip
    images[0].save(
        tmp, format="GIF", save_all=True, append_images=images[1:], duration=durations_ms, loop=0, comment=MARK
    )


def written_by_tokvid(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a GIF or PNG contact sheet that tokvid wrote (it carries :data:`MARK`); False for any other
    file, one that cannot be read as an image included. Writers that put files beside the one a user named (a sheet
    next to ``--out x.mp4``) replace only these."""
    try:
        with Image.open(path) as image:
            if image.format == "GIF":
                return image.info.get("comment") == MARK.encode()
            return image.format == "PNG" and image.text.get("Software") == MARK
    except (OSError, ValueError, Image.DecompressionBombError):
        return False


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float, *, crf: int = 18) -> None:
    """Writes frames as an H.264 (yuv420p) ``.mp4`` or an animated ``.gif``, atomically.

    Odd heights/widths are padded by one repeated row/column for yuv420p, so an mp4 of odd
    size reads back one pixel larger. Missing parent folders are created.

    Args:
        path: destination; the extension picks the format. A GIF merges a frame equal to the one before it into that
            one (Pillow's writer; a warning says how many), so it can read back with fewer frames than written.
        frames: (T, H, W, 3) uint8 RGB.
        fps: frames per second, > 0.
        crf: x264 constant rate factor for mp4 (0 = lossless luma, 18 = visually lossless).

    Raises:
        ValueError: bad frames, fps or extension.
        OSError: the file cannot be written (the target is then left untouched).
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in _WRITE_EXTS:
        raise ValueError(f"cannot write {str(path)!r}: the extension must be one of {list(_WRITE_EXTS)}")
    check_frames(frames)
    check_fps(fps)
    if ext == ".mp4" and max(frames.shape[1:3]) > MAX_MP4_SIDE:  # libx264 failed with "Nothing was written"
        raise ValueError(f"cannot write {str(path)!r}: H.264 takes frames up to {MAX_MP4_SIDE} px a side, got "
                         f"{frames.shape[2]}x{frames.shape[1]}")  # fmt: skip
    if ext == ".gif" and fps > MAX_GIF_FPS:  # delays are whole centiseconds: 1000 fps was written at 100
        raise ValueError(f"cannot write {str(path)!r} at {fps} fps: a GIF holds at most {MAX_GIF_FPS} (write .mp4)")
    with atomic_path(path) as tmp:
        if ext == ".mp4":
            _write_mp4(tmp, frames, float(fps), crf, path)
        else:
            _write_gif(tmp, frames, float(fps))


def check_fps(fps: object) -> None:
    """ValueError unless ``fps`` is a frame rate a video can be written at: a real number in [0.01, 1000] (a rate of
    1e-6 became 0/1 in the container's time base, an OSError or an OverflowError while writing); NumPy's count."""
    real = isinstance(fps, numbers.Real) and not isinstance(fps, bool)
    if not real or not math.isfinite(fps) or not 0.01 <= fps <= 1000:
        raise ValueError(f"fps must be a number in [0.01, 1000], got {fps!r}")


def write_frame_folder(path: str | os.PathLike, frames: np.ndarray) -> None:
    """Writes frames losslessly as a folder of PNGs (``00000.png``, ...), the frame-folder video that
    :func:`core.video_io.read_video` reads; the folder appears whole or not at all, replacing an older one.

    Raises:
        ValueError: bad frames, or ``path`` is a file.
    """
    path = Path(path)
    check_frames(frames)
    if path.exists() and not path.is_dir():
        raise ValueError(f"cannot write frames into {str(path)!r}: it is a file")
    with atomic_dir(path) as tmp:
        for i, frame in enumerate(frames):
            Image.fromarray(frame).save(tmp / f"{i:05d}.png")


def write_contact_sheet(
    path: str | os.PathLike, rows: list[np.ndarray], *, pad: int = 2, background: int = 255
) -> None:
    """Writes a PNG with one row per clip, its frames side by side (e.g. original over recon).

    Rows may differ in frame count and frame size; cells are top-left aligned and the rest is
    ``background``. There are ``pad`` pixels between cells and around the border.

    Args:
        path: destination ``.png``.
        rows: clips, each (T_i, H_i, W_i, 3) uint8.
        pad: gap in pixels, >= 0.
        background: gray level of the gaps, 0..255.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"contact sheet {str(path)!r} must be a .png file")
    if not rows:
        raise ValueError("write_contact_sheet needs at least one row")
    if pad < 0 or not 0 <= background <= 255:
        raise ValueError(f"pad must be >= 0 and background in [0, 255], got {pad}, {background}")
    for i, row in enumerate(rows):
        check_frames(row, f"rows[{i}]")
    width = max(r.shape[0] * (r.shape[2] + pad) for r in rows) + pad
    height = sum(r.shape[1] + pad for r in rows) + pad
    sheet = np.full((height, width, 3), background, dtype=np.uint8)
    y = pad
    for row in rows:
        T, H, W, _ = row.shape
        for t in range(T):
            x = pad + t * (W + pad)
            sheet[y : y + H, x : x + W] = row[t]
        y += H + pad
    with atomic_path(path) as tmp:
        info = PngImagePlugin.PngInfo()
        info.add_text("Software", MARK)
        Image.fromarray(sheet).save(tmp, format="PNG", pnginfo=info)
