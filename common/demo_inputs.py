"""The demo's input pictures: one image, a folder of images, or the frames of a video.

What ``--img`` names decides the kind (:func:`input_kind`): a folder is a folder of images
(its files with an image extension, sorted by name, not recursive); a file with a video
extension is a video, read frame by frame with ``cv2.VideoCapture``; any other file is an
image.  Every picture becomes a :class:`Frame` holding it as decoded, uint8 BGR
(``common.utils.preprocessing.BGRImage``): the crops, the estimator and the reduced drawing
read those pixels directly, so no full-size converted copy is made.  A video frame is named
as OpenPose names it, ``<video stem>_<frame number, 12 digits>``, so that its outputs and its
OpenPose file (``<name>_keypoints.json``) share that name.

:class:`VideoOutput` writes the rendered frames into one ``.mp4`` (``mp4v`` codec).
"""
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from common.errors import DataError, ImageFileError
from common.utils.files import remove_stale_temp_files, temp_path_for
from common.utils.preprocessing import BGRImage, read_image

IMAGE_EXTENSIONS = frozenset({'.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp'})
VIDEO_EXTENSIONS = frozenset({'.mp4', '.avi', '.mov', '.mkv', '.webm', '.m4v', '.mpg', '.mpeg', '.wmv'})
FRAME_DIGITS = 12          # OpenPose numbers video frames with 12 digits, from 0


class InputError(DataError):
    """``--img`` names nothing usable: an empty folder, clashing image names, a video without a
    readable frame.  (A video that does not open at all is, like an image that does not
    decode, a ``common.errors.ImageFileError``.)"""


@dataclass
class Frame:
    """One input picture.

    name: the output name stem (image file stem, or ``<video stem>_<000000000000>``);
    img: a ``BGRImage`` (``pixels`` (H, W, 3) uint8, BGR, as OpenCV decodes it); source: the
    image or video path; index: the frame number in a video (from 0), None for an image.
    """
    name: str
    img: BGRImage
    source: str
    index: int = None


def input_kind(path):
    """'folder', 'video' or 'image' for the ``--img`` path (see the module docstring)."""
    path = Path(path)
    if path.is_dir():
        return 'folder'
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return 'video'
    return 'image'


def frame_name(video_path, index):
    """OpenPose's name of a video frame: ``<video stem>_<index, 12 digits>``."""
    return f'{Path(video_path).stem}_{index:0{FRAME_DIGITS}d}'


def folder_images(folder):
    """Image files of ``folder`` (by extension, sorted by name).

    Raises :class:`InputError` when there is none, or when two share a stem (their outputs
    would overwrite each other: ``a.jpg`` and ``a.png`` both write ``a_render.jpg``).
    """
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise InputError(f"No images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in the folder {folder}.")
    stems = {}
    for path in files:
        stems.setdefault(path.stem, []).append(path.name)
    clashes = [names for names in stems.values() if len(names) > 1]
    if clashes:
        raise InputError(f"Images in {folder} share a name stem, so their outputs would collide: "
                         f"{', '.join(' / '.join(c) for c in clashes[:5])}; rename or move one of each.")
    return [str(p) for p in files]


def check_input(path):
    """Fail early, before any model work, on an ``--img`` that cannot be read.

    An image is decoded; a folder must hold images (the first is decoded); a video must open
    and give a first frame.  Returns the kind (:func:`input_kind`).  Raises
    ``common.errors.ImageFileError`` for an image or video that cannot be decoded or opened,
    :class:`InputError` for a folder without images or a video without a frame.
    """
    kind = input_kind(path)
    if kind == 'image':
        read_image(path)
    elif kind == 'folder':
        read_image(folder_images(path)[0])
    else:
        with _open_video(path) as capture:
            if not capture.read()[0]:
                raise InputError(f"The video {path} holds no readable frame.")
    return kind


def iter_frames(path):
    """The :class:`Frame` s of ``--img`` in order, each decoded when it is reached."""
    kind = input_kind(path)
    if kind == 'image':
        yield Frame(Path(path).stem, read_image(path), str(path))
    elif kind == 'folder':
        for image in folder_images(path):
            yield Frame(Path(image).stem, read_image(image), image)
    else:
        yield from _video_frames(path)


def _video_frames(path):
    with _open_video(path) as capture:
        index = 0
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            yield Frame(frame_name(path, index), BGRImage(bgr), str(path), index)
            index += 1


class _open_video:
    """``cv2.VideoCapture`` as a context manager; ``FileNotFoundError`` for a missing file,
    ``common.errors.ImageFileError`` if it does not open (unsupported or corrupt)."""

    def __init__(self, path):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Video file not found: {path}")
        self.path = str(path)
        self.capture = cv2.VideoCapture(self.path)

    def __enter__(self):
        if not self.capture.isOpened():
            self.capture.release()
            raise ImageFileError(f"Cannot open the video {self.path} (unsupported or corrupt file).")
        return self.capture

    def __exit__(self, *exc):
        self.capture.release()
        return False


def video_fps(path, default=30.0):
    """Frames per second stored in the video (``default`` when the file does not say)."""
    with _open_video(path) as capture:
        fps = capture.get(cv2.CAP_PROP_FPS)
    return float(fps) if np.isfinite(fps) and fps > 0 else default


class VideoOutput:
    """Rendered frames -> one ``.mp4`` video (``mp4v``), sized by the first frame.

    The file is written under a temporary name unique to the writer
    (``common.utils.files.temp_path_for``, keeping ``.mp4``: OpenCV picks the container from
    it) and renamed on :meth:`close`, so a run that fails halfway leaves no truncated video
    under the final name, two runs into one folder do not mix their frames, and the leftover
    of a killed run is removed by the next writer into that folder.
    """

    def __init__(self, path, fps):
        self.path = Path(path)
        self.tmp = temp_path_for(self.path, keep_suffix=True)
        self.fps = float(fps)
        self.writer = None
        self.size = None

    def write(self, rgb):
        """Append an (H, W, 3) uint8 RGB frame (every frame must have the first one's size)."""
        height, width = rgb.shape[:2]
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temp_files(self.path.parent)
            self.size = (width, height)
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*'mp4v'), self.fps, self.size)
            if not self.writer.isOpened():
                raise OSError(f"Cannot write the video {self.path} (OpenCV has no mp4v encoder here).")
        if (width, height) != self.size:
            raise ValueError(f"Video frame of {width}x{height} after frames of {self.size[0]}x{self.size[1]}.")
        self.writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def close(self):
        """Finish the file and move it to its name; returns the path (None if no frame came)."""
        if self.writer is None:
            return None
        self.writer.release()
        self.writer = None
        os.replace(self.tmp, self.path)
        return str(self.path)

    def abort(self):
        """Drop a partial video (after a failure)."""
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        if self.tmp.exists():
            self.tmp.unlink()
