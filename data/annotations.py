"""Reading the annotation files of the training and test sets.

JSON and COCO-style files are parsed with errors that name the file, the record and
the expected layout (docs/METHOD.md, "Data on disk").  The datalist entries these
helpers build are described in ``data/train_dataset.py``.
"""
import contextlib
import io
import json
import os.path as osp
from typing import NamedTuple, Tuple

import numpy as np
from pycocotools.coco import COCO

from common.utils.joints import H36M17
from common.utils.preprocessing import compute_iou, process_bbox
from common.utils.smpl import load_regressor

H36M_REGRESSOR_FILE = 'J_regressor_h36m_correct.npy'
NEIGHBOUR_IOU_THRESHOLD = 0.1

# JSON field sizes of SMPL fits and NeuralAnnot cameras; image fields of COCO-style files.
SMPL_PARAM_SIZES = (('pose', 72), ('shape', 10), ('trans', 3))
NEURALANNOT_CAMERA_SIZES = (('focal', 2), ('princpt', 2))
IMAGE_FIELDS = ('file_name', 'width', 'height')


def read_json(path, layout_hint):
    """Parse one JSON annotation file; a missing or malformed file names itself and the layout."""
    path = str(path)
    if not osp.isfile(path):
        raise FileNotFoundError(f"Annotation file not found: {path}\nExpected layout: {layout_hint}")
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"Annotation file {path} is not valid JSON ({err}).") from err


def coco_index(content, description):
    """A ``pycocotools.coco.COCO`` index over an in-memory COCO-style dict (index messages silenced).

    ``description`` names the source (file paths) in the error for a record lacking an id field.
    """
    db = COCO()
    db.dataset = content
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            db.createIndex()
        except KeyError as err:
            raise ValueError(f"{description}: malformed COCO-style annotations (missing field {err}).") from err
    return db


def read_coco(path, layout_hint):
    """A ``pycocotools.coco.COCO`` index of a COCO-style file (read once, index messages silenced)."""
    content = read_json(path, layout_hint)
    if not isinstance(content, dict) or not isinstance(content.get('images'), list) \
            or not isinstance(content.get('annotations'), list):
        raise ValueError(f"{path}: a COCO-style file needs top-level 'images' and 'annotations' lists.")
    return coco_index(content, path)


def require_fields(record, fields, path, kind):
    """Raise naming the file and the record when a JSON record lacks one of ``fields``."""
    missing = [field for field in fields if field not in record]
    if missing:
        raise ValueError(f"{path}: {kind} id {record.get('id')} lacks the field(s) {missing} "
                         "(file formats: docs/METHOD.md, \"Data on disk\").")


def float32_fields(record, sizes):
    """``{key: float32 array of shape size}`` for the (key, size) pairs of a JSON record.

    Raises KeyError, ValueError or TypeError on a missing or wrongly sized field (callers
    turn them into a message naming the file and the entry).
    """
    return {key: np.asarray(record[key], dtype=np.float32).reshape(size) for key, size in sizes}


def parse_smpl_param(param, path, entry):
    """JSON SMPL fit -> float32 ``pose`` (72,), ``shape`` (10,), ``trans`` (3,) (metres).

    ``entry`` says which fit of the file (e.g. "for annotation id 7") in the error message.
    """
    try:
        return float32_fields(param, SMPL_PARAM_SIZES)
    except (KeyError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: malformed SMPL fit {entry} (needs pose[72], shape[10], trans[3]): {err}") \
            from err


def parse_neuralannot(entry, path, ann_id):
    """NeuralAnnot entry -> (smpl_param {pose (72,), shape (10,), trans (3,)}, cam_param {focal, princpt}).

    Arrays are float32; a malformed entry raises naming the file and the annotation id.
    """
    try:
        smpl_param = float32_fields(entry['smpl_param'], SMPL_PARAM_SIZES)
        cam_param = float32_fields(entry['cam_param'], NEURALANNOT_CAMERA_SIZES)
    except (KeyError, ValueError, TypeError) as err:
        raise ValueError(
            f"{path}: malformed NeuralAnnot entry for annotation id {ann_id} "
            f"(needs smpl_param.pose[72], shape[10], trans[3] and cam_param.focal[2], princpt[2]): {err}") from err
    return smpl_param, cam_param


def parse_keypoints(ann, num_joints, path):
    """COCO-style ``keypoints`` -> (num_joints, 3) float32; a wrong length names file and annotation."""
    try:
        return np.asarray(ann['keypoints'], dtype=np.float32).reshape(num_joints, 3)
    except (KeyError, ValueError, TypeError) as err:
        raise ValueError(f"{path}: annotation id {ann.get('id')} needs 'keypoints' with "
                         f"{num_joints} x [x, y, v] values ({err}).") from err


def split_validity(joint_img):
    """(J, 3) ``[x, y, v]`` keypoints -> (joint_img with 0/1 validity as third column, joint_valid (J, 1)).

    A joint is valid when its annotated v > 0.  Returns new float32 arrays.
    """
    joint_img = np.array(joint_img, dtype=np.float32, copy=True)
    joint_valid = (joint_img[:, 2:] > 0).astype(np.float32)
    joint_img[:, 2] = joint_valid[:, 0]
    return joint_img, joint_valid


def load_h36m_regressor(data_dir):
    """The (17, 6890) H36M joint regressor from ``<data_dir>/Human36M`` (float64, read-only).

    Both 3D training sets use it for the fitting error; Human36M and 3DPW for evaluation.
    """
    path = osp.join(data_dir, 'Human36M', H36M_REGRESSOR_FILE)
    if not osp.isfile(path):
        raise FileNotFoundError(
            f"H36M joint regressor not found: {path}\nIt belongs in <data_dir>/Human36M/ and comes with "
            "the I2L-MeshNet/3DCrowdNet Human3.6M data release (or tool/make_synthetic_smpl.py for the "
            "synthetic stand-in).")
    return load_regressor(path, min_rows=len(H36M17))


class NeuralAnnotFiles(NamedTuple):
    """Where a COCO-style 2D training set with NeuralAnnot fits keeps its files.

    annot_path: COCO-style keypoint file; fit_path: NeuralAnnot fits keyed by
    str(annotation id); image_dir: images live at ``image_dir/<file_name>``;
    ann_fields: fields every annotation record must have; layout_hint: the expected
    layout, named in file errors.
    """
    annot_path: str
    fit_path: str
    image_dir: str
    ann_fields: Tuple[str, ...]
    layout_hint: str


def load_neuralannot_people(files, person_joints, neighbour_joints=None, keep_annotation=None, aspect_ratio=1.0):
    """Datalist of a COCO-style 2D training set with NeuralAnnot fits (MSCOCO, MPII).

    files: a ``NeuralAnnotFiles``.  Images in index order, each one's annotations in
    order: a record lacking one of ``IMAGE_FIELDS`` / ``files.ann_fields`` raises,
    ``keep_annotation(ann)`` False skips it, a degenerate box skips and counts it.
    ``person_joints(ann)`` -> (joint_img (J, 3) with validity column, joint_valid (J, 1));
    the neighbours' joints for the synthesiser are ``neighbour_joints(joint_img)``
    (default: joint_img).  Boxes are processed to ``aspect_ratio`` (W/H of the input
    crop).  People without a fit get ``smpl_param = cam_param = None``.
    Returns (datalist, number of degenerate boxes).
    """
    annot_path, fit_path, image_dir, ann_fields, layout_hint = files
    db = read_coco(annot_path, layout_hint)
    fits = read_json(fit_path, layout_hint)
    datalist, degenerate = [], 0
    for img_id, img in db.imgs.items():
        require_fields(img, IMAGE_FIELDS, annot_path, 'image')
        width, height = img['width'], img['height']
        img_path = osp.join(image_dir, img['file_name'])
        people = []
        for ann in db.imgToAnns.get(img_id, []):
            require_fields(ann, ann_fields, annot_path, 'annotation')
            if keep_annotation is not None and not keep_annotation(ann):
                continue
            bbox = process_bbox(ann['bbox'], width, height, aspect_ratio=aspect_ratio)
            if bbox is None:
                degenerate += 1
                continue
            joint_img, joint_valid = person_joints(ann)
            smpl_param = cam_param = None
            if str(ann['id']) in fits:
                smpl_param, cam_param = parse_neuralannot(fits[str(ann['id'])], fit_path, ann['id'])
            people.append({
                'img_path': img_path, 'img_id': img_id, 'ann_id': ann['id'], 'img_shape': (height, width),
                'bbox': bbox, 'tight_bbox': np.asarray(ann['bbox'], dtype=np.float32),
                'joint_img': joint_img, 'joint_valid': joint_valid,
                'smpl_param': smpl_param, 'cam_param': cam_param,
            })
        attach_neighbours(people, [person['joint_img'] if neighbour_joints is None
                                   else neighbour_joints(person['joint_img']) for person in people])
        datalist.extend(people)
    return datalist, degenerate


def attach_neighbours(people, neighbour_joints):
    """Set ``num_overlap`` and ``near_joints`` of every person of one image.

    people: the image's kept entries (with ``tight_bbox``); neighbour_joints: per person
    its (Jc, 3) joints as seen by the synthesiser.  Neighbours are the other people with
    tight-bbox IoU >= 0.1; without any, ``near_joints`` is ``zeros((1, Jc, 3))``.
    """
    boxes = [person['tight_bbox'] for person in people]
    for index, person in enumerate(people):
        others = find_neighbours(boxes, index)
        person['num_overlap'] = len(others)
        if others:
            person['near_joints'] = np.stack([neighbour_joints[other] for other in others]).astype(np.float32)
        else:
            person['near_joints'] = np.zeros((1,) + np.shape(neighbour_joints[index]), dtype=np.float32)


def find_neighbours(tight_bboxes, index):
    """Indices of the other boxes with IoU >= 0.1 against ``tight_bboxes[index]`` (list order)."""
    return [other for other in range(len(tight_bboxes))
            if other != index and compute_iou(tight_bboxes[index], tight_bboxes[other]) >= NEIGHBOUR_IOU_THRESHOLD]
