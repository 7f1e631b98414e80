"""Writing pipeline outputs: mp4 (H.264), gif and a PNG contact sheet, all atomically."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from core.files import atomic_path, folder_lock
from core.video_write import write_contact_sheet, write_video, written_by_tokvid
from pipelines.video import VideoOutput

VIDEO_SUFFIXES = (".mp4", ".gif")


class OutputWriteError(ValueError):
    """A result could not be written (a full disk, a folder gone): the message names the user's path and the
    system's reason, ``reason`` the reason alone (what a server shows, without its own folders)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"cannot write {str(path)!r}: {reason}")
        self.reason = reason


def output_paths(out: str | os.PathLike, num_videos: int) -> list[Path]:
    """Video paths for ``num_videos`` videos: ``out`` itself for one video (an .mp4 or .gif file),
    ``out/video_000.mp4`` ... when ``out`` is a directory, ends with a path separator (``run.v2/``), or several
    videos are asked for."""
    folder = str(out).endswith((os.sep, os.altsep or os.sep))  # Path() drops it: clips.mp4/ was written as a file
    out = Path(out)
    if folder:
        return [out / f"video_{i:03d}.mp4" for i in range(num_videos)]
    if num_videos == 1 and out.suffix.lower() in VIDEO_SUFFIXES:
        return [out]
    if out.suffix.lower() in VIDEO_SUFFIXES:
        raise ValueError(f"{num_videos} videos need a directory for --out, not the file {str(out)!r}")
    if out.suffix and not out.is_dir():  # clip.webm / clip.png silently became a folder of that name
        raise ValueError(f"--out {str(out)!r} must be an .mp4 or .gif file, or a directory (end a new folder's "
                         "name with /)")  # fmt: skip
    return [out / f"video_{i:03d}.mp4" for i in range(num_videos)]


def _files_of(path: Path, gif: bool) -> list[Path]:
    """The files :func:`save_output` writes for one video: the video, optionally a ``.gif``, the ``.png`` sheet."""
    extra_gif = [path.with_suffix(".gif")] if gif and path.suffix.lower() != ".gif" else []
    return [path, *extra_gif, path.with_suffix(".png")]


def check_writable(paths: list[Path], inputs: tuple[str | os.PathLike | None, ...] = (), gif: bool = False) -> None:
    """Fails before any work when an output folder cannot be created or written, when an output file would
    replace one of ``inputs`` (``--image first.png --out first.mp4`` wrote its contact sheet over first.png), or when
    a file written beside a named video (its sheet, its gif) would replace one that tokvid did not write (``--out
    x.mp4`` replaced the user's own x.png). The named videos themselves are replaced."""
    given = {Path(i).resolve() for i in inputs if i is not None}
    for target in (f for path in paths for f in _files_of(path, gif)):
        if target.resolve() in given:
            raise ValueError(f"writing {str(target)!r} would replace an input file: choose another --out")
        inside = [i for i in given if i.is_dir() and i in target.resolve().parents]
        if inside:  # a frame folder given as --video: a sheet written into it made it unreadable
            raise ValueError(f"writing {str(target)!r} would put a file into the input folder {str(inside[0])!r}: "
                             "choose another --out")  # fmt: skip
    for folder in {p.parent for p in paths}:
        probe = folder
        while not probe.exists():
            if probe.is_symlink():  # a link to a disk that is not mounted: mkdir failed after sampling
                raise ValueError(f"cannot write to {str(folder)!r}: {str(probe)!r} is a link to nothing")
            probe = probe.parent
        if not probe.is_dir():
            raise ValueError(f"cannot write to {str(folder)!r}: {str(probe)!r} is not a directory")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise ValueError(f"cannot write to {str(folder)!r}: permission denied")
        try:  # permission bits are not the whole story (root, read-only mounts, /proc): try a file
            with tempfile.NamedTemporaryFile(dir=probe, prefix=".tokvid-probe-"):
                pass
        except OSError as err:
            raise ValueError(f"cannot write to {str(folder)!r}: {err.strerror or err}") from None
    for target in (f for path in paths for f in _files_of(path, gif)):  # the sheet and gif too: found after sampling
        if target.is_dir():
            raise ValueError(f"cannot write {str(target)!r}: a directory is in the way")
    for path in paths:
        for extra in _files_of(path, gif)[1:]:
            if extra.exists() and not written_by_tokvid(extra):
                raise ValueError(f"writing {str(extra)!r} beside {path.name!r} would replace a file that tokvid did "
                                 "not write: move it, or choose another --out")  # fmt: skip


def save_output(output: VideoOutput, paths: list[Path], gif: bool = False) -> list[Path]:
    """Writes each video to its path, a ``.png`` contact sheet beside it, and optionally a ``.gif``.

    Returns:
        Every file written.

    Raises:
        OutputWriteError: an OS error while writing (what was already written is kept).
    """
    if len(paths) != len(output.frames):  # zip dropped the videos past the last path without a word
        raise ValueError(f"{len(output.frames)} videos need as many paths, got {len(paths)}")
    written: list[Path] = []
    target = None
    try:  # an OS error names the user's path, not the temporary file it was being written to
        for frames, path in zip(output.frames, paths):
            target = path  # an error making its folder names this video, not None or the one before
            path.parent.mkdir(parents=True, exist_ok=True)
            files = _files_of(path, gif)
            # A video's files replace the old ones together, or none do: a Ctrl-C between its mp4 and its sheet
            # left a new video beside an earlier run's sheet; and two runs writing the same names take turns (their
            # renames interleaved: one run's video beside the other's sheet).
            with folder_lock(path.parent), contextlib.ExitStack() as together:
                for target in files:
                    tmp = together.enter_context(atomic_path(target))
                    if target.suffix.lower() == ".png":
                        write_contact_sheet(tmp, [frames])
                    else:
                        write_video(tmp, frames, output.fps)
            written += files
    except OSError as err:
        raise OutputWriteError(target, str(err.strerror or err)) from None
    return written
