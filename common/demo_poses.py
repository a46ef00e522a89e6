"""Where the demo's 2D poses come from, per picture (``common.demo_inputs.Frame``).

Each source has ``detections(frame) -> [Detection]`` and ``origin(frame) -> str`` (recorded
in the summary as ``pose_file``):

* :class:`OpenPoseFolder`: OpenPose's ``--write_json`` folder, one
  ``<frame name>_keypoints.json`` per picture (``<video stem>_<12-digit frame>_keypoints.json``
  for a video); a picture without its file is an error.
* :class:`CocoResults`: one COCO keypoint-results file for many pictures.  The rule that maps
  ``image_id`` to a picture is explicit: with a COCO-format image list (``--coco_images``, a
  JSON file with ``"images": [{"id", "file_name"}, ...]``, e.g. the annotation file the
  detector ran on) a picture is the listed image whose ``file_name`` has the picture's name
  stem (folders and extension ignored); listed images without entries have nobody in them.
  Without a list, a picture's id is its numeric file stem (``000000000785.jpg`` -> 785), and a
  video frame's id is its frame number; a picture whose stem is no number, or whose id has no
  entry, is an error.
* :class:`EstimatorPoses`: the built-in estimator (``common.pose_estimator``), COCO-17 poses
  turned into detections exactly like COCO-results entries.
* :class:`SingleFile`: one OpenPose or COCO-results file for one image (``read_pose_file``'s
  rules, ``--image_id``).

:func:`pose_source` picks the source from ``--pose``.
"""
from pathlib import Path

import numpy as np

from common.demo_defaults import AUTO
from common.demo import (Detection, PoseFileError, coco_results_by_image, image_id_key, is_coco_results,
                         load_pose_json, parse_pose_data, read_pose_file)
from common.utils.joints import COCO17

ESTIMATOR_LAYOUT = 'coco17-estimator'


class SingleFile:
    """One pose file for the one picture of the run."""

    def __init__(self, path, img_path, image_id=None, data=None):
        """data: the file's parsed JSON when already read (None: read ``path``)."""
        self.path = str(path)
        data = load_pose_json(path) if data is None else data
        self._detections = parse_pose_data(data, path, img_path, image_id)

    def detections(self, frame):
        return self._detections

    def origin(self, frame):
        return self.path


class OpenPoseFolder:
    """OpenPose's output folder: ``<folder>/<frame name>_keypoints.json`` per picture."""

    def __init__(self, folder):
        self.folder = Path(folder)

    def file_of(self, frame):
        return self.folder / f'{frame.name}_keypoints.json'

    def detections(self, frame):
        path = self.file_of(frame)
        if not path.is_file():
            raise PoseFileError(f"No OpenPose file {path.name} in {self.folder} for {_describe(frame)} "
                                "(OpenPose's --write_json names it <image stem>_keypoints.json, "
                                "<video stem>_<12-digit frame>_keypoints.json for a video).")
        return read_pose_file(path)

    def origin(self, frame):
        return str(self.file_of(frame))


class CocoResults:
    """A COCO keypoint-results file of many pictures, mapped by the rule of the module docstring."""

    def __init__(self, path, images_path=None, entries=None):
        """entries: the file's parsed JSON when already read (None: read ``path``)."""
        self.path = Path(path)
        entries = load_pose_json(self.path) if entries is None else entries
        if not is_coco_results(entries):
            raise PoseFileError(f"Pose file {self.path} is not a COCO keypoint-results list "
                                "[{\"image_id\": ..., \"keypoints\": [x, y, s] * 17, \"score\": ...}, ...].")
        self.by_id = coco_results_by_image(entries, self.path)
        self.images_path = images_path
        self.ids_by_stem = _image_list(images_path) if images_path else None

    def image_id(self, frame):
        """The key of ``frame``'s id; :class:`PoseFileError` when the rule finds none."""
        if self.ids_by_stem is not None:
            ids = self.ids_by_stem.get(frame.name)
            if not ids:
                raise PoseFileError(f"{_describe(frame)}: no image named {frame.name}.* in the image list "
                                    f"{self.images_path}.")
            if len(ids) > 1:
                raise PoseFileError(f"{_describe(frame)}: the image list {self.images_path} names {frame.name}.* "
                                    f"{len(ids)} times (ids {', '.join(map(str, ids))}).")
            return ids[0]
        if frame.index is not None:
            key = image_id_key(frame.index)
        elif frame.name.isdigit():
            key = image_id_key(frame.name)
        else:
            raise PoseFileError(f"{_describe(frame)}: its name is not a number, so no image_id of {self.path} "
                                "matches it; pass --coco_images with the COCO image list (id, file_name) the "
                                "results refer to.")
        if key not in self.by_id:
            raise PoseFileError(f"{_describe(frame)}: {self.path} has no entry with image_id {key} (ids are "
                                "matched to numeric file stems, or frame numbers for a video; a results file "
                                "lists only images with detections: pass --coco_images to run the others too).")
        return key

    def detections(self, frame):
        return self.by_id.get(self.image_id(frame), [])

    def origin(self, frame):
        return str(self.path)


class EstimatorPoses:
    """Poses from a 2D estimator: ``estimator(bgr uint8 (H, W, 3)) -> (N, 17, 3)`` COCO-17
    ``[x, y, score]`` in image pixels (``common.pose_estimator.Rtmlib2DPose``); it is given
    the frame's decoded pixels themselves (``Frame.img.pixels``), not a copy."""

    def __init__(self, estimator):
        self.estimator = estimator

    def detections(self, frame):
        poses = np.asarray(self.estimator(frame.img.pixels), np.float64).reshape(-1, len(COCO17), 3)
        return [Detection(i, pose, COCO17.names, ESTIMATOR_LAYOUT) for i, pose in enumerate(poses)]

    def origin(self, frame):
        return self.estimator.describe()


def _image_list(path):
    """{name stem: [image_id keys]} of a COCO-format file's ``images`` list."""
    data = load_pose_json(path)
    images = data.get('images') if isinstance(data, dict) else None
    if not isinstance(images, list) or not all(isinstance(i, dict) and 'id' in i and 'file_name' in i
                                               for i in images):
        raise PoseFileError(f"Image list {path} has no COCO 'images' list of {{\"id\", \"file_name\"}} entries.")
    stems = {}
    for image in images:
        stems.setdefault(Path(str(image['file_name'])).stem, []).append(image_id_key(image['id']))
    return stems


def _describe(frame):
    return f'{frame.source} (frame {frame.index})' if frame.index is not None else frame.source


def pose_source(pose, input_kind, img_path, image_id=None, coco_images=None, make_estimator=None):
    """The pose source for ``--pose``.

    pose: 'auto' / None (the estimator: ``make_estimator()`` builds it), an OpenPose output
    folder, or a JSON file (an OpenPose file for a single image, or COCO keypoint results);
    input_kind: ``common.demo_inputs.input_kind`` of ``--img``.  Reading the files here
    reports a malformed one before any model work.
    """
    if pose in (None, AUTO):
        if make_estimator is None:
            raise ValueError("pose_source: no estimator factory for --pose auto")
        return EstimatorPoses(make_estimator())
    path = Path(pose)
    if path.is_dir():
        return OpenPoseFolder(path)
    data = load_pose_json(path)
    if is_coco_results(data) and (input_kind != 'image' or coco_images):
        return CocoResults(path, coco_images, entries=data)
    if input_kind != 'image':
        raise PoseFileError(f"Pose file {path} holds the poses of one image, but --img {img_path} is a "
                            f"{input_kind}: pass OpenPose's output folder (--write_json) or a COCO results file.")
    return SingleFile(path, img_path, image_id, data=data)
