"""Reading the annotation files of the training and test sets.

JSON and COCO-style files are parsed with errors that name the file, the record and
the expected layout (docs/METHOD.md, "Data on disk").  The datalist entries these
helpers build are described in ``data/train_dataset.py``.
"""
import contextlib
import io
import logging
import os.path as osp
from functools import partial
from typing import NamedTuple, Tuple

import numpy as np
from pycocotools.coco import COCO

from common.errors import DataError
from common.utils.files import read_json_file
from common.utils.joints import H36M17
from common.utils.preprocessing import compute_iou, process_bbox
from common.utils.required_files import RequiredFile
from common.utils.smpl import load_regressor, regressor_file

logger = logging.getLogger(__name__)

H36M_REGRESSOR_FILE = 'J_regressor_h36m_correct.npy'
NEIGHBOUR_IOU_THRESHOLD = 0.1

# JSON field sizes of SMPL fits and NeuralAnnot cameras; image fields of COCO-style files.
SMPL_PARAM_SIZES = (('pose', 72), ('shape', 10), ('trans', 3))
NEURALANNOT_CAMERA_SIZES = (('focal', 2), ('princpt', 2))
IMAGE_FIELDS = ('file_name', 'width', 'height')


class AnnotationError(DataError):
    """A missing, malformed or non-finite annotation value; the message names the file and the record."""


def finite_array(value, shape, path, record, field, dtype=np.float32):
    """``value`` as an array of ``shape`` (``dtype``), every entry finite.

    path: the annotation file; record: which record (e.g. "annotation id 7"); field: the
    field name.  A missing value (None), a wrong number of entries, a non-numeric entry or a
    NaN/inf raises ``AnnotationError`` naming all three.
    """
    if value is None:
        raise AnnotationError(f"{path}: {record} lacks the field '{field}'.")
    try:
        array = np.asarray(value, dtype=dtype).reshape(shape)
    except (ValueError, TypeError) as err:
        raise AnnotationError(f"{path}: {record}: '{field}' must hold {int(np.prod(shape))} numbers {shape} "
                              f"({err}).") from err
    check_finite(array, path, record, field)
    return array


def check_finite(array, path, record, field):
    """Raise ``AnnotationError`` naming file, record and field when ``array`` holds a NaN or inf."""
    values = np.asarray(array)
    if values.dtype.kind in 'fc' and not np.isfinite(values).all():
        position = np.unravel_index(int(np.argmin(np.isfinite(values))), values.shape)
        bad = values[position]
        raise AnnotationError(f"{path}: {record}: '{field}' holds a non-finite value ({bad}) at index "
                              f"{tuple(int(i) for i in position)}.")
    return array


def check_finite_number(value, path, record, field):
    """``float(value)``, refused (``AnnotationError``) when missing, non-numeric or non-finite."""
    return float(finite_array(value, (), path, record, field, dtype=np.float64))


def count_missing_fits(dataset, datalist, fit_path):
    """Report the samples of ``datalist`` whose ``smpl_param`` is None (no SMPL fit).

    One warning line with the count when some lack a fit; ``AnnotationError`` naming
    ``fit_path`` when none of a non-empty datalist has one (an empty fit file, or one keyed
    differently from the annotations, would otherwise remove all SMPL supervision).
    Returns the number of samples without a fit.
    """
    missing = sum(1 for data in datalist if data.get('smpl_param') is None)
    if datalist and missing == len(datalist):
        raise AnnotationError(
            f"{fit_path}: none of the {len(datalist)} {dataset} samples has an SMPL fit in this file "
            "(empty, or keyed differently from the annotations; see docs/METHOD.md, \"Data on disk\").")
    if missing:
        logger.warning('%s: %d of %d samples have no SMPL fit in %s (trained without SMPL supervision).',
                       dataset, missing, len(datalist), fit_path)
    return missing


def read_json(path, layout_hint):
    """Parse one JSON annotation file; a missing or malformed file names itself and the layout."""
    return read_json_file(path, 'Annotation file', AnnotationError, hint=f'Expected layout: {layout_hint}')


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
            raise AnnotationError(f"{description}: malformed COCO-style annotations (missing field {err}).") from err
    return db


def read_coco_content(path, layout_hint=''):
    """The parsed content of a COCO-style file: a JSON object with 'images' and 'annotations' lists."""
    content = read_json(path, layout_hint)
    if not isinstance(content, dict) or not isinstance(content.get('images'), list) \
            or not isinstance(content.get('annotations'), list):
        raise AnnotationError(f"{path}: a COCO-style file needs top-level 'images' and 'annotations' lists.")
    return content


def read_coco(path, layout_hint):
    """A ``pycocotools.coco.COCO`` index of a COCO-style file (read once, index messages silenced)."""
    return coco_index(read_coco_content(path, layout_hint), path)


def read_json_object(path, layout_hint='', keyed_by='str(annotation id)'):
    """A JSON annotation file whose top level must be an object keyed by ``keyed_by``."""
    content = read_json(path, layout_hint)
    if not isinstance(content, dict):
        raise AnnotationError(f"{path}: expected a JSON object keyed by {keyed_by}.")
    return content


def read_json_list(path, layout_hint='', of='entries'):
    """A JSON annotation file whose top level must be a list of ``of``."""
    content = read_json(path, layout_hint)
    if not isinstance(content, list):
        raise AnnotationError(f"{path}: expected a JSON list of {of}.")
    return content


def coco_file(path, what, source, image_path=None, required=True):
    """``RequiredFile`` of a COCO-style annotation file; ``image_path(record)`` locates its images."""
    return RequiredFile(str(path), what, source, required=required, validate=read_coco_content,
                        image_path=image_path)


def json_object_file(path, what, source, keyed_by='str(annotation id)'):
    """``RequiredFile`` of a JSON annotation file holding one object keyed by ``keyed_by``."""
    return RequiredFile(str(path), what, source, validate=partial(read_json_object, keyed_by=keyed_by))


def json_list_file(path, what, source, of='entries'):
    """``RequiredFile`` of a JSON annotation file holding one list of ``of``."""
    return RequiredFile(str(path), what, source, validate=partial(read_json_list, of=of))


def image_folder(path, what, source):
    """``RequiredFile`` of a folder of images."""
    return RequiredFile(str(path), what, source, is_dir=True)


def image_in(folder, record):
    """``folder/<file_name>`` of an image record (the layout of every set but 3DPW)."""
    return osp.join(folder, record['file_name'])


def require_fields(record, fields, path, kind):
    """Raise naming the file and the record when a JSON record lacks one of ``fields``."""
    if not isinstance(record, dict):
        raise AnnotationError(f"{path}: a {kind} record must be a JSON object, got {type(record).__name__}.")
    missing = [field for field in fields if field not in record]
    if missing:
        raise AnnotationError(f"{path}: {kind} id {record.get('id')} lacks the field(s) {missing} "
                         "(file formats: docs/METHOD.md, \"Data on disk\").")


def float32_fields(record, sizes, path, entry, prefix=''):
    """``{key: float32 array of shape (size,)}`` for the (key, size) pairs of the JSON object ``record``.

    path: the file; entry: which record (e.g. "SMPL fit for annotation id 7"); prefix: put
    before each key in messages (e.g. "smpl_param.").  A record that is not an object, or a
    missing, wrongly sized or non-finite field, raises ``AnnotationError`` naming all three.
    """
    if not isinstance(record, dict):
        layout = ', '.join(f'{prefix}{key}[{size}]' for key, size in sizes)
        raise AnnotationError(f"{path}: {entry}: expected a JSON object with {layout}, got {type(record).__name__}.")
    return {key: finite_array(record.get(key), (size,), path, entry, prefix + key) for key, size in sizes}


def parse_smpl_param(param, path, entry):
    """JSON SMPL fit -> float32 ``pose`` (72,), ``shape`` (10,), ``trans`` (3,) (metres).

    ``entry`` says which fit of the file (e.g. "for annotation id 7") in the error message.
    """
    return float32_fields(param, SMPL_PARAM_SIZES, path, f'SMPL fit {entry}')


def parse_neuralannot(entry, path, ann_id):
    """NeuralAnnot entry -> (smpl_param {pose (72,), shape (10,), trans (3,)}, cam_param {focal, princpt}).

    Arrays are float32; a malformed entry raises naming the file, the annotation id and the field.
    """
    record = f'NeuralAnnot entry for annotation id {ann_id}'
    if not isinstance(entry, dict):
        raise AnnotationError(f"{path}: {record}: expected a JSON object with 'smpl_param' and 'cam_param'.")
    return (float32_fields(entry.get('smpl_param'), SMPL_PARAM_SIZES, path, record, 'smpl_param.'),
            float32_fields(entry.get('cam_param'), NEURALANNOT_CAMERA_SIZES, path, record, 'cam_param.'))


def parse_keypoints(ann, num_joints, path):
    """COCO-style ``keypoints`` -> (num_joints, 3) float32; a wrong length or a NaN names file and annotation."""
    try:
        keypoints = np.asarray(ann['keypoints'], dtype=np.float32).reshape(num_joints, 3)
    except (KeyError, ValueError, TypeError) as err:
        raise AnnotationError(f"{path}: annotation id {ann.get('id')} needs 'keypoints' with "
                              f"{num_joints} x [x, y, v] values ({err}).") from err
    return check_finite(keypoints, path, f"annotation id {ann.get('id')}", 'keypoints')


def parse_bbox(ann, path, dtype=np.float32):
    """Annotated ``bbox`` [x, y, w, h] -> (4,) array of ``dtype``, refused (``AnnotationError``) when
    missing, malformed or non-finite (a NaN box would otherwise be dropped silently as degenerate).
    float64 keeps the JSON values unrounded, as ``process_bbox`` of the raw list sees them."""
    return finite_array(ann.get('bbox'), (4,), path, f"annotation id {ann.get('id')}", 'bbox', dtype=dtype)


def split_validity(joint_img):
    """(J, 3) ``[x, y, v]`` keypoints -> (joint_img with 0/1 validity as third column, joint_valid (J, 1)).

    A joint is valid when its annotated v > 0.  Returns new float32 arrays.
    """
    joint_img = np.array(joint_img, dtype=np.float32, copy=True)
    joint_valid = (joint_img[:, 2:] > 0).astype(np.float32)
    joint_img[:, 2] = joint_valid[:, 0]
    return joint_img, joint_valid


def h36m_regressor_file(data_dir):
    """``RequiredFile`` of the (17, 6890) H36M joint regressor in ``<data_dir>/Human36M``."""
    return regressor_file(osp.join(data_dir, 'Human36M', H36M_REGRESSOR_FILE), len(H36M17),
                          'H36M joint regressor')


def load_h36m_regressor(data_dir):
    """The (17, 6890) H36M joint regressor from ``<data_dir>/Human36M`` (float64, read-only).

    Both 3D training sets use it for the fitting error; Human36M and 3DPW for evaluation.
    """
    path = h36m_regressor_file(data_dir).path
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
    Returns (datalist, number of degenerate boxes).  Missing or non-finite values raise
    ``AnnotationError`` naming the file and the record.
    """
    annot_path, fit_path, image_dir, ann_fields, layout_hint = files
    db = read_coco(annot_path, layout_hint)
    fits = read_json_object(fit_path, layout_hint)
    datalist, degenerate = [], 0
    for img_id, img in db.imgs.items():
        require_fields(img, IMAGE_FIELDS, annot_path, 'image')
        width, height = img['width'], img['height']
        for field in ('width', 'height'):
            check_finite_number(img[field], annot_path, f'image id {img_id}', field)
        img_path = image_in(image_dir, img)
        people = []
        for ann in db.imgToAnns.get(img_id, []):
            require_fields(ann, ann_fields, annot_path, 'annotation')
            if keep_annotation is not None and not keep_annotation(ann):
                continue
            annotated_bbox = parse_bbox(ann, annot_path, dtype=np.float64)
            bbox = process_bbox(annotated_bbox, width, height, aspect_ratio=aspect_ratio)
            if bbox is None:
                degenerate += 1
                continue
            joint_img, joint_valid = person_joints(ann)
            smpl_param = cam_param = None
            if str(ann['id']) in fits:
                smpl_param, cam_param = parse_neuralannot(fits[str(ann['id'])], fit_path, ann['id'])
            people.append({
                'img_path': img_path, 'img_id': img_id, 'ann_id': ann['id'], 'img_shape': (height, width),
                'bbox': bbox, 'tight_bbox': annotated_bbox.astype(np.float32),
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
