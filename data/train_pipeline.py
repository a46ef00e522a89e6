"""The training-sample pipeline shared by Human36M, MuCo, MSCOCO and MPII (DATA.md §3.2, §3.3, §3.7).

A training loader derives from ``TrainDataset``, sets a few class attributes that
describe its joint set and fit variant, and implements ``load_data()`` returning the
datalist.  ``TrainDataset.__getitem__`` then runs the common steps:

1. image crop with augmentation (``load_crop``),
2. GT joint processing: flip, img2bb, heatmap scaling, normalised depth, truncation,
   transfer to SMPL-30 (``process_gt_joints``),
3. neighbours for swap errors (``process_neighbours``),
4. synthetic input pose through the PoseFix synthesiser (``synthesize_input_pose``),
5. SMPL-fit targets (``smpl_fit_targets``, variants "H36M", "camera_mm", "NeuralAnnot"),
   with the neutral body evaluated in NumPy (``NeutralSmplEvaluator``; training skins
   only the vertices the 30-joint and the fitting-error regressors read),
6. rotation augmentation and
7. assembly of ``(inputs, targets, meta_info)`` with the keys of DATA.md §3.3
   (``assemble_sample``).

Every random draw comes from the per-sample generator ``self.sample_rng(idx)``, in the
order: augmentation parameters, then the PoseFix synthesiser.  ``cfg.fix_flip_neighbours``
switches on the corrected neighbour handling of DATA.md §9.4 (off: SGRE's behaviour).
The helpers never modify their inputs in place.

Datalist entry (one person), keys read by ``TrainDataset.get_train_sample``:

=================  ==========================================================
``img_path``       str, absolute path of the image
``img_shape``      (H, W) of the original image, pixels
``bbox``           (4,) float32 processed bbox [x, y, w, h] (DATA.md §4.2)
``tight_bbox``     (4,) float32 annotated bbox
``joint_img``      (J, 3) float32 in the dataset joint set: (u, v, Z_mm) for 3D
                   sets, (u, v, valid) for 2D sets
``joint_cam``      (J, 3) float32 camera coordinates in mm (3D sets; 2D: None)
``joint_valid``    (J, 1) float32 0/1
``smpl_param``     dict with ``pose`` (72), ``shape`` (10), ``trans`` (3, metres),
                   or None when the person has no fit
``cam_param``      dict of float32 arrays ``focal`` (2,), ``princpt`` (2,) and, for
                   the "H36M" variant, ``R`` (3, 3) and ``t`` (3,) in mm.  For 2D
                   sets it is the NeuralAnnot camera (None without fit)
``num_overlap``    int, number of neighbours
``near_joints``    (K, J_coco, 3) float32 neighbours' joints in original-image
                   pixels with a validity column, in the COCO set of the dataset's
                   synthesis (K >= 1; ``zeros((1, J_coco, 3))`` when none)
=================  ==========================================================
"""
import contextlib
import io
import json
import os.path as osp
import weakref

import cv2
import numpy as np
import torch
from pycocotools.coco import COCO

from common.utils.posefix import synthesize_pose
from common.utils.preprocessing import (apply_affine, augmentation, compute_iou, flip_img_joints, in_bounds_mask,
                                        load_img, process_bbox)
from common.utils.smpl import get_smpl, load_regressor
from common.utils.smpl_layer import quat_axis_angle_to_rotmat
from common.utils.transforms import cam2pixel, rotation_z, transform_joint_to_other_db
from data.dataset import SeededDataset
from main.config import cfg

# ----------------------------------------------------------------- joint sets (§2.6, §2.7)
COCO17_JOINTS_NAME = (
    'Nose', 'L_Eye', 'R_Eye', 'L_Ear', 'R_Ear', 'L_Shoulder', 'R_Shoulder', 'L_Elbow', 'R_Elbow',
    'L_Wrist', 'R_Wrist', 'L_Hip', 'R_Hip', 'L_Knee', 'R_Knee', 'L_Ankle', 'R_Ankle')
COCO18_JOINTS_NAME = COCO17_JOINTS_NAME + ('Pelvis',)
COCO19_JOINTS_NAME = COCO18_JOINTS_NAME + ('Neck',)
COCO_FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
COCO_SKELETON = ((1, 2), (0, 1), (0, 2), (2, 4), (1, 3), (6, 8), (8, 10), (5, 7), (7, 9), (12, 14),
                 (14, 16), (11, 13), (13, 15), (5, 6), (11, 12))

MPII_JOINTS_NAME = (
    'R_Ankle', 'R_Knee', 'R_Hip', 'L_Hip', 'L_Knee', 'L_Ankle', 'Pelvis', 'Thorax', 'Neck', 'Head_top',
    'R_Wrist', 'R_Elbow', 'R_Shoulder', 'L_Shoulder', 'L_Elbow', 'L_Wrist')
MPII_FLIP_PAIRS = ((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13))
MPII_SKELETON = ((0, 1), (1, 2), (2, 6), (3, 6), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9), (10, 11),
                 (11, 12), (7, 12), (7, 13), (13, 14), (14, 15))

# SMPL-30 pose rows without a reliable fit (ankles, toes, wrists, hands): fit_param_valid = 0.
UNRELIABLE_POSE_JOINTS = (7, 8, 10, 11, 20, 21, 22, 23)
# SMPL-30 flip pairs that lie inside the 24 pose joints (§3.7.1).
SMPL_POSE_FLIP_PAIRS = ((1, 2), (4, 5), (7, 8), (10, 11), (13, 14), (16, 17), (18, 19), (20, 21), (22, 23))

SMPL_POSE_JOINT_NUM = 24
H36M_JOINT_NUM = 17
H36M_REGRESSOR_FILE = 'J_regressor_h36m_correct.npy'
FIT_VARIANTS = ('H36M', 'camera_mm', 'NeuralAnnot')
FITTING_ERROR_THRESHOLD_MM = 25.0
NEIGHBOUR_IOU_THRESHOLD = 0.1

# JSON field sizes of SMPL fits and NeuralAnnot cameras; image fields of COCO-style files.
SMPL_PARAM_SIZES = (('pose', 72), ('shape', 10), ('trans', 3))
NEURALANNOT_CAMERA_SIZES = (('focal', 2), ('princpt', 2))
IMAGE_FIELDS = ('file_name', 'width', 'height')


# -------------------------------------------------------------------- annotation files
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
                         "(file formats: DATA.md §1).")


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


def load_h36m_regressor():
    """The (17, 6890) H36M joint regressor from ``<data_dir>/Human36M`` (float64, read-only).

    Both 3D training sets use it for the fitting error (§3.7.4); Human36M also for evaluation.
    """
    path = osp.join(cfg.data_dir, 'Human36M', H36M_REGRESSOR_FILE)
    if not osp.isfile(path):
        raise FileNotFoundError(
            f"H36M joint regressor not found: {path}\nIt belongs in <cfg.data_dir>/Human36M/ and comes with "
            "the I2L-MeshNet/3DCrowdNet Human3.6M data release (or tool/make_synthetic_smpl.py for the "
            "synthetic stand-in).")
    return load_regressor(path, min_rows=H36M_JOINT_NUM)


def load_neuralannot_people(db, annot_path, fits, fit_path, image_dir, ann_fields, person_joints,
                            neighbour_joints=None, keep_annotation=None):
    """Datalist of a COCO-style 2D training set with NeuralAnnot fits (MSCOCO, MPII; §3.6).

    db: the ``read_coco`` index of ``annot_path``; fits: the NeuralAnnot dict of
    ``fit_path`` keyed by str(annotation id); images live at ``image_dir/<file_name>``.
    Images in index order, each one's annotations in order: a record lacking one of
    ``IMAGE_FIELDS`` / ``ann_fields`` raises, ``keep_annotation(ann)`` False skips it, a
    degenerate box skips and counts it.  ``person_joints(ann)`` -> (joint_img (J, 3) with
    validity column, joint_valid (J, 1)); the neighbours' joints for the synthesiser are
    ``neighbour_joints(joint_img)`` (default: joint_img).  People without a fit get
    ``smpl_param = cam_param = None``.  Returns (datalist, number of degenerate boxes).
    """
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
            bbox = process_bbox(ann['bbox'], width, height)
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
    """Set ``num_overlap`` and ``near_joints`` of every person of one image (§3.6).

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


# ------------------------------------------------------------------------------ helpers
def _heatmap_scale():
    """(sx, sy) turning crop pixels into heatmap cells (64/256 for both by default)."""
    height, width = cfg.input_img_shape
    return cfg.output_hm_shape[2] / width, cfg.output_hm_shape[1] / height


def to_heatmap_xy(xy):
    """Crop pixels -> heatmap space (x * 64/256, y * 64/256). xy: (N, >=2); returns a copy."""
    out = np.array(xy, dtype=np.float32, copy=True)
    sx, sy = _heatmap_scale()
    out[:, 0] = out[:, 0] * sx
    out[:, 1] = out[:, 1] * sy
    return out


def normalise_depth(depth_rel, unit_scale):
    """Root-relative depth -> heatmap depth in [0, 64) for +-bbox_3d_size/2 (§0.1).

    depth_rel: (N,) in mm (unit_scale=1000) or metres (unit_scale=1).
    """
    half_range = cfg.bbox_3d_size * unit_scale / 2
    return ((np.asarray(depth_rel, dtype=np.float32) / half_range + 1) / 2 * cfg.output_hm_shape[0]).astype(np.float32)


def flip_joint_rows(joints, flip_pairs):
    """Swap the rows of each flip pair along axis -2 (joints (..., J, C)); returns a new array."""
    joints = np.asarray(joints)
    out = joints.copy()
    if len(flip_pairs):
        first, second = np.asarray(flip_pairs).T
        out[..., first, :], out[..., second, :] = joints[..., second, :], joints[..., first, :]
    return out


def find_neighbours(tight_bboxes, index):
    """Indices of the other boxes with IoU >= 0.1 against ``tight_bboxes[index]`` (list order)."""
    return [other for other in range(len(tight_bboxes))
            if other != index and compute_iou(tight_bboxes[index], tight_bboxes[other]) >= NEIGHBOUR_IOU_THRESHOLD]


def add_pelvis(joints, names=COCO17_JOINTS_NAME):
    """Append the hip midpoint as last row; its third value = product of the hips' (§2.10).

    joints: (J, 3) rows [x, y, v] of the set ``names`` -> (J + 1, 3) float32.
    """
    joints = np.asarray(joints, dtype=np.float32)
    left, right = joints[names.index('L_Hip')], joints[names.index('R_Hip')]
    pelvis = np.array([(left[0] + right[0]) / 2, (left[1] + right[1]) / 2, left[2] * right[2]], dtype=np.float32)
    return np.concatenate([joints, pelvis[None]], axis=0)


# ------------------------------------------------------------------------- step 1: image
def load_crop(img_path, bbox, data_split, rng, transform=None):
    """Read the image, draw augmentation and cut the 256x256 patch (§3.2 step 1, §4.3-4.4).

    Returns (img (3, 256, 256) float32 in [0, 1] (a tensor when ``transform`` is
    torchvision's ToTensor, else a NumPy array), img2bb (2, 3) float32,
    bb2img (2, 3) float32, rot (degrees), do_flip (bool)).
    """
    image = load_img(img_path)
    augment = cfg.augment_options() if data_split == 'train' else None
    patch, img2bb, bb2img, rot, do_flip = augmentation(image, bbox, cfg.input_img_shape, augment, rng)
    patch = np.ascontiguousarray(patch, dtype=np.float32)
    if transform is not None:
        img = transform(patch) / 255.0
    else:
        img = np.ascontiguousarray(patch.transpose(2, 0, 1)) / np.float32(255.0)
    return img, np.asarray(img2bb, np.float32), np.asarray(bb2img, np.float32), float(rot), bool(do_flip)


# ------------------------------------------------------------------ step 2: GT joints
def process_gt_joints(joint_img, joint_valid, joints_name, flip_pairs, img2bb, do_flip, img_width,
                      joint_cam=None, root_joint_idx=None, rot=0.0, smpl_joints_name=None):
    """GT joints of the dataset set -> SMPL-30 targets (§3.2 step 2, steps 6-7 for cameras).

    joint_img: (J, 3) (u, v, Z_mm) for 3D sets (joint_cam given) or (u, v, valid) for 2D sets.
    joint_valid: (J, 1). joint_cam: (J, 3) mm camera coordinates (3D sets only).
    Returns a dict:
      ``joint_img`` (30, 3) heatmap x,y and normalised depth (3D) or flipped validity (2D),
      ``joint_valid`` (30, 1), ``joint_trunc`` (30, 1),
      ``joint_cam`` (30, 3) metres root-relative, rotation-augmented (zeros for 2D sets),
      ``crop_joints`` (J, 3) crop-space x,y of the (flipped) dataset joints with the
      original third column (the basis of the synthetic input pose),
      ``joint_valid_src`` (J, 1) flipped validity in the dataset set,
      ``joint_cam_mm`` (J, 3) flipped, root-relative mm camera joints before the rotation
      augmentation (3D sets; None otherwise; used by the fitting error).
    ``smpl_joints_name`` defaults to the shared wrapper's SMPL-30 names.
    """
    smpl_names = smpl_joints_name if smpl_joints_name is not None else get_smpl().joints_name
    is_3d = joint_cam is not None
    joint_img = np.array(joint_img, dtype=np.float32, copy=True)
    joint_valid = np.array(joint_valid, dtype=np.float32, copy=True).reshape(-1, 1)
    if is_3d:
        joint_cam = np.asarray(joint_cam, dtype=np.float32)
        joint_cam = joint_cam - joint_cam[root_joint_idx]
    if do_flip:
        joint_img = flip_img_joints(joint_img, img_width, flip_pairs)
        joint_valid = flip_joint_rows(joint_valid, flip_pairs)
        if is_3d:
            joint_cam = joint_cam * np.array([-1, 1, 1], dtype=np.float32)
            joint_cam = flip_joint_rows(joint_cam, flip_pairs)

    crop_joints = joint_img.copy()
    crop_joints[:, :2] = apply_affine(joint_img[:, :2], img2bb)
    joint_hm = to_heatmap_xy(crop_joints)
    if is_3d:
        joint_hm[:, 2] = normalise_depth(joint_img[:, 2] - joint_img[root_joint_idx, 2], 1000)
    joint_trunc = joint_valid * in_bounds_mask(joint_hm, cfg.output_hm_shape, check_depth=is_3d)

    if is_3d:
        cam_rotated = joint_cam @ rotation_z(rot).T
        joint_cam_30 = transform_joint_to_other_db(cam_rotated, joints_name, smpl_names) / 1000
    else:
        joint_cam_30 = np.zeros((len(smpl_names), 3), dtype=np.float32)
    return {
        'joint_img': transform_joint_to_other_db(joint_hm, joints_name, smpl_names),
        'joint_valid': transform_joint_to_other_db(joint_valid, joints_name, smpl_names),
        'joint_trunc': transform_joint_to_other_db(joint_trunc, joints_name, smpl_names),
        'joint_cam': joint_cam_30.astype(np.float32),
        'crop_joints': crop_joints,
        'joint_valid_src': joint_valid,
        'joint_cam_mm': joint_cam if is_3d else None,
    }


# ------------------------------------------------------------------ step 3: neighbours
def process_neighbours(near_joints, num_overlap, img2bb, do_flip, img_width, flip_pairs=COCO_FLIP_PAIRS):
    """Neighbours' joints -> crop space for swap errors (§3.2 step 3, §9.4).

    SGRE's behaviour (default): x,y through img2bb, NOT mirrored on flipped samples,
    validity forced to 1 for every joint.  With ``cfg.fix_flip_neighbours`` the joints
    are mirrored (u -> W-1-u, pairs swapped) before img2bb and keep their own validity.
    near_joints (K, Jc, 3); num_overlap == 0 gives ``zeros((1, Jc, 3))``.
    """
    near_joints = np.asarray(near_joints, dtype=np.float32)
    num_joints = near_joints.shape[-2]
    if num_overlap == 0 or near_joints.size == 0:
        return np.zeros((1, num_joints, 3), dtype=np.float32)
    out = np.ones_like(near_joints)
    if cfg.fix_flip_neighbours:
        if do_flip:
            near_joints = flip_img_joints(near_joints, img_width, flip_pairs)
        out[..., 2] = near_joints[..., 2]
    out[..., :2] = apply_affine(near_joints[..., :2], img2bb)
    return out


# ------------------------------------------------------------- step 4: synthetic input
def synthesize_input_pose(crop_joints, joint_valid, joints_name, synth_joints_name, shared_idx,
                          near_joints, num_overlap, tight_bbox, img2bb, rng, force_valid=False):
    """PoseFix-style corrupted input pose in the dataset joint set (§3.2 step 4, §3.9).

    crop_joints (J, 3) crop pixels (third column ignored); joint_valid (J, 1);
    the joints go to ``synth_joints_name`` (COCO-17 or COCO-18) by name with their
    validity (all ones when ``force_valid``: 3D sets), are corrupted, and only the x,y
    of the dataset joints ``shared_idx`` are replaced.  Returns (J, 2) crop pixels.
    """
    source = np.array(crop_joints, dtype=np.float32, copy=True)
    source[:, 2] = 1.0 if force_valid else np.asarray(joint_valid, dtype=np.float32).reshape(-1)
    coco = transform_joint_to_other_db(source, joints_name, synth_joints_name)
    coco = synthesize_pose(coco, near_joints, tight_bbox, num_overlap, img2bb, rng)
    back = transform_joint_to_other_db(coco, synth_joints_name, joints_name)
    out = source[:, :2].copy()
    shared_idx = np.asarray(shared_idx, dtype=np.int64)
    out[shared_idx] = back[shared_idx, :2]
    return out


# ------------------------------------------------------------------ step 5: SMPL fits
def flip_smpl_pose(pose):
    """Mirror a (72,) axis-angle pose: swap the 9 pose pairs, negate y and z (§3.7.1)."""
    pose = np.asarray(pose, dtype=np.float32).reshape(-1, 3)
    pose = flip_joint_rows(pose, SMPL_POSE_FLIP_PAIRS)
    pose[:, 1:3] *= -1
    return pose.reshape(-1)


def flip_translation_shift(root_cam, focal, princpt, img_width):
    """x shift making a flipped-pose fit reappear mirrored in the image (§3.7.5).

    root_cam (3,) pelvis in metres; returns dx = 2((W-1)/2 - c_x)/f_x * Z_r - 2 X_r.
    """
    return 2 * ((img_width - 1) / 2 - princpt[0]) / focal[0] * root_cam[2] - 2 * root_cam[0]


def rotate_root_pose(pose, rot):
    """Apply R_z(-rot) to the root orientation via a Rodrigues round trip (§3.2 step 6).

    pose (72,) -> new (72,) float32 whose root axis-angle is canonical (angle in [0, pi]).
    """
    pose = np.array(pose, dtype=np.float32, copy=True)
    root = cv2.Rodrigues(pose[:3].astype(np.float64))[0]
    root = rotation_z(rot).astype(np.float64) @ root
    pose[:3] = cv2.Rodrigues(root)[0][:, 0]
    return pose


class SparseRegressor:
    """A (K, V) vertex-to-joint regressor kept as its non-zero columns.

    ``vertex_ids`` (n,) sorted int64 ids of the vertices it reads, ``weights`` (K, n)
    float64.  ``weights @ mesh[vertex_ids]`` equals ``regressor @ mesh`` (the dropped
    columns contribute exact zeros).
    """

    def __init__(self, regressor):
        regressor = np.asarray(regressor, dtype=np.float64)
        if regressor.ndim != 2:
            raise ValueError(f"A joint regressor must be (K, V); got shape {regressor.shape}.")
        self.vertex_ids = np.flatnonzero(np.any(regressor != 0, axis=0))
        self.weights = np.ascontiguousarray(regressor[:, self.vertex_ids])

    def __len__(self):
        return len(self.weights)


class _SkinningSubset:
    """The neutral model's per-vertex arrays restricted to ``vertex_ids`` (contiguous float64).

    Built once per vertex set, so a call only multiplies: no per-sample gathering of the
    (V, 3, 207) pose blend shapes.  ``joint_rows`` are the positions of the 30-joint
    regressor's vertices inside the set.
    """

    def __init__(self, evaluator, vertex_ids):
        self.vertex_ids = vertex_ids
        every_vertex = np.array_equal(vertex_ids, np.arange(len(evaluator.v_template)))

        def rows(array):
            # The whole mesh shares the evaluator's arrays (the pose blend shapes are 34 MB).
            return array if every_vertex else array[vertex_ids]

        self.v_template = rows(evaluator.v_template)
        # Blend shapes as (3n, num_coefficients) matrices: one product per call.
        self.shapedirs = rows(evaluator.shapedirs).reshape(3 * len(vertex_ids), -1)
        self.posedirs = rows(evaluator.posedirs).reshape(3 * len(vertex_ids), -1)
        self.weights = rows(evaluator.weights)
        self.joint_rows = np.searchsorted(vertex_ids, evaluator.support)
        if not np.array_equal(vertex_ids[np.minimum(self.joint_rows, len(vertex_ids) - 1)], evaluator.support):
            raise ValueError("A vertex subset must contain every vertex the 30-joint regressor reads.")


class NeutralSmplEvaluator:
    """NumPy float64 forward of the neutral SMPL layer for one person (MODEL.md §3 semantics).

    Targets need the SMPL-30 joints (and, for the 3D sets' fitting error, the H36M
    joints), which read only the few hundred vertices in the regressors' support, so
    only those vertices are skinned unless the full mesh is asked for.  Same numbers
    as ``Reg30 @ layer(pose, shape, trans)`` up to float rounding (checked in
    tests/test_train_pipeline.py against smplpytorch and against the full mesh).

    The vertex-sized products use ``np.einsum`` (single-threaded C loops), not BLAS:
    OpenBLAS threads products of this size, and in a data-loader process on a busy
    machine each threaded call waits milliseconds for its helper threads.
    """

    def __init__(self, smpl):
        layer = smpl.layer['neutral']

        def as_array(buffer):
            return buffer.detach().cpu().double().numpy()

        self.v_template = as_array(layer.th_v_template).reshape(-1, 3)
        self.shapedirs = as_array(layer.th_shapedirs)
        self.posedirs = as_array(layer.th_posedirs)
        self.weights = as_array(layer.th_weights)
        j_regressor = as_array(layer.th_J_regressor)
        self.parents = list(layer.kintree_parents)
        self.joint_regressor = SparseRegressor(smpl.joint_regressor)
        self.support = self.joint_regressor.vertex_ids
        # Rest joints are linear in the betas: precompute template joints and their shape basis.
        self.j_template = j_regressor @ self.v_template
        self.j_shapedirs = np.einsum('jv,vcs->jcs', j_regressor, self.shapedirs)
        self._subsets = {}

    def subset(self, *regressors):
        """The cached ``_SkinningSubset`` of the 30-joint support plus the ``SparseRegressor``s' vertices."""
        vertex_ids = self.support
        for regressor in regressors:
            vertex_ids = np.union1d(vertex_ids, regressor.vertex_ids)
        key = vertex_ids.tobytes()
        if key not in self._subsets:
            self._subsets[key] = _SkinningSubset(self, vertex_ids)
        return self._subsets[key]

    def full(self):
        """The ``_SkinningSubset`` of every vertex (the whole mesh)."""
        key = 'all'
        if key not in self._subsets:
            self._subsets[key] = _SkinningSubset(self, np.arange(len(self.v_template)))
        return self._subsets[key]

    def _global_transforms(self, rotmats, joints_rest):
        """Per-joint skinning transforms (24, 12): global rotation (9) and translation (3)."""
        global_rot = np.empty_like(rotmats)
        global_pos = np.empty_like(joints_rest)
        global_rot[0], global_pos[0] = rotmats[0], joints_rest[0]
        for joint in range(1, len(self.parents)):
            parent = self.parents[joint]
            global_rot[joint] = global_rot[parent] @ rotmats[joint]
            global_pos[joint] = global_rot[parent] @ (joints_rest[joint] - joints_rest[parent]) + global_pos[parent]
        skin_trans = global_pos - np.einsum('kij,kj->ki', global_rot, joints_rest)
        return np.concatenate([global_rot.reshape(-1, 9), skin_trans], axis=1)

    def _skin(self, subset, rotmats, joints_rest, betas):
        """Posed vertices (len(subset.vertex_ids), 3) without translation."""
        pose_feature = (rotmats[1:] - np.eye(3)).reshape(-1)
        v_posed = (subset.v_template + np.einsum('is,s->i', subset.shapedirs, betas).reshape(-1, 3)
                   + np.einsum('ip,p->i', subset.posedirs, pose_feature).reshape(-1, 3))
        per_vertex = np.einsum('vk,kc->vc', subset.weights, self._global_transforms(rotmats, joints_rest))
        verts = np.einsum('vij,vj->vi', per_vertex[:, :9].reshape(-1, 3, 3), v_posed)
        return verts + per_vertex[:, 9:]

    def __call__(self, pose, shape, trans=None, subset=None):
        """pose (72,), shape (10,), trans (3,) metres -> (vertices, joints (30, 3)), float64.

        ``vertices`` (n, 3) are those of ``subset`` (from ``subset()``/``full()``;
        default: the 30-joint support), with the translation.
        """
        subset = self.subset() if subset is None else subset
        betas = np.asarray(shape, dtype=np.float64).reshape(-1)
        trans = np.zeros(3) if trans is None else np.asarray(trans, dtype=np.float64).reshape(3)
        pose = torch.as_tensor(np.asarray(pose, dtype=np.float64).reshape(-1, 3))
        rotmats = quat_axis_angle_to_rotmat(pose).numpy()
        joints_rest = self.j_template + self.j_shapedirs @ betas
        verts = self._skin(subset, rotmats, joints_rest, betas) + trans
        return verts, self.joint_regressor.weights @ verts[subset.joint_rows]


_EVALUATORS = weakref.WeakKeyDictionary()


def neutral_smpl_evaluator(smpl=None):
    """The cached ``NeutralSmplEvaluator`` of an SMPL wrapper (default: the shared ``get_smpl()``)."""
    smpl = smpl or get_smpl()
    if smpl not in _EVALUATORS:
        _EVALUATORS[smpl] = NeutralSmplEvaluator(smpl)
    return _EVALUATORS[smpl]


def smpl_mesh_and_joints(pose, shape, trans=None, smpl=None, with_mesh=True):
    """Neutral SMPL mesh (6890, 3) (None unless ``with_mesh``) and SMPL-30 joints (30, 3), metres, float32."""
    evaluate = neutral_smpl_evaluator(smpl)
    mesh, joints = evaluate(pose, shape, trans, evaluate.full() if with_mesh else None)
    return (mesh.astype(np.float32) if with_mesh else None), joints.astype(np.float32)


def _merge_camera_rotation(pose, rotation):
    """Root orientation of a world-frame fit expressed in the camera frame (§3.7.2 step 1)."""
    pose = np.array(pose, dtype=np.float32, copy=True).reshape(-1)
    root = cv2.Rodrigues(pose[:3].astype(np.float64))[0]
    pose[:3] = cv2.Rodrigues(np.asarray(rotation, np.float64) @ root)[0][:, 0]
    return pose


def smpl_fit_targets(smpl_param, cam_param, variant, do_flip, img_width, img2bb, rot=0.0, smpl=None,
                     with_mesh=True, regressor=None):
    """SMPL fit -> training targets (§3.7, §3.2 steps 5-7).

    variant: 'H36M' (world-frame fit, cam_param has R, t in mm), 'camera_mm' (MuCo) or
    'NeuralAnnot' (MSCOCO, MPII; metres).  Returns a dict:
      ``joint_img`` (30, 3) heatmap x,y + normalised depth relative to the fit pelvis,
      ``joint_trunc`` (30, 1), ``joint_cam`` (30, 3) metres, pelvis-relative, rotated,
      ``pose`` (72,) flipped and rotation-augmented, ``shape`` (10,) sanitised,
      ``mesh_cam`` (6890, 3) camera-frame mesh in the variant's unit (mm for 'H36M' and
      'camera_mm', metres for 'NeuralAnnot'; None when ``with_mesh`` is False: training
      needs only joints), ``joint_cam_abs`` (30, 3) same unit, float32 throughout, and
      ``regressor_joints`` (K, 3) float64: ``regressor`` (a ``SparseRegressor``, e.g. the
      H36M one for the fitting error) applied to the float32 camera-frame mesh, the same
      numbers as ``regressor @ mesh_cam``; None without ``regressor``.  Without the mesh
      only the vertices the regressors read are skinned.
    """
    if variant not in FIT_VARIANTS:
        raise ValueError(f"Unknown SMPL fit variant '{variant}'; expected one of {FIT_VARIANTS}.")
    smpl = smpl or get_smpl()
    evaluate = neutral_smpl_evaluator(smpl)
    subset = evaluate.full() if with_mesh else evaluate.subset(*([regressor] if regressor is not None else []))
    pose = np.asarray(smpl_param['pose'], dtype=np.float32).reshape(-1)
    shape = np.asarray(smpl_param['shape'], dtype=np.float32).reshape(-1)
    trans = np.asarray(smpl_param['trans'], dtype=np.float64).reshape(3)
    focal = np.asarray(cam_param['focal'], dtype=np.float64).reshape(2)
    princpt = np.asarray(cam_param['princpt'], dtype=np.float64).reshape(2)
    root_idx = smpl.root_joint_idx

    if variant == 'H36M':
        rotation = np.asarray(cam_param['R'], dtype=np.float64).reshape(3, 3)
        cam_t = np.asarray(cam_param['t'], dtype=np.float64).reshape(3)
        pose = _merge_camera_rotation(pose, rotation)
        if do_flip:
            pose = flip_smpl_pose(pose)
        verts, joints = evaluate(pose, shape, None, subset)
        root = joints[root_idx]
        # SMPL rotates about its root joint: moving a world-frame fit into the camera
        # frame needs this compensation of the translation.
        offset = rotation @ trans + cam_t / 1000 - root + rotation @ root
    else:
        if do_flip:
            pose = flip_smpl_pose(pose)
        verts, joints = evaluate(pose, shape, trans, subset)
        offset = np.zeros(3)
    if do_flip:
        offset[0] += flip_translation_shift(joints[root_idx] + offset, focal, princpt, img_width)
    if np.any(np.abs(shape) > 3):
        shape = np.zeros_like(shape)
    unit_scale = 1 if variant == 'NeuralAnnot' else 1000
    joints = (joints + offset) * unit_scale
    verts = ((verts + offset) * unit_scale).astype(np.float32)
    regressor_joints = None
    if regressor is not None:
        rows = np.searchsorted(subset.vertex_ids, regressor.vertex_ids)
        # einsum, not BLAS: a dense regressor (all 6890 columns) would make OpenBLAS thread this product.
        regressor_joints = np.einsum('kv,vc->kc', regressor.weights, verts[rows].astype(np.float64))

    joint_img = cam2pixel(joints, focal, princpt)
    joint_img[:, :2] = apply_affine(joint_img[:, :2], img2bb)
    joint_img = to_heatmap_xy(joint_img)
    joint_img[:, 2] = normalise_depth(joints[:, 2] - joints[root_idx, 2], unit_scale)
    joint_trunc = in_bounds_mask(joint_img, cfg.output_hm_shape, check_depth=True)

    joint_cam = (joints - joints[root_idx]) @ rotation_z(rot).T.astype(np.float64) / unit_scale
    return {
        'joint_img': joint_img,
        'joint_trunc': joint_trunc,
        'joint_cam': joint_cam.astype(np.float32),
        'pose': rotate_root_pose(pose, rot),
        'shape': shape.astype(np.float32),
        'mesh_cam': verts if with_mesh else None,
        'joint_cam_abs': joints.astype(np.float32),
        'regressor_joints': regressor_joints,
    }


def dummy_fit_targets(smpl=None):
    """Zero fit targets for a person without an SMPL fit (keys as ``smpl_fit_targets``)."""
    smpl = smpl or get_smpl()
    joint_num = smpl.joint_num
    return {
        'joint_img': np.zeros((joint_num, 3), np.float32),
        'joint_trunc': np.zeros((joint_num, 1), np.float32),
        'joint_cam': np.zeros((joint_num, 3), np.float32),
        'pose': np.zeros(smpl.orig_joint_num * 3, np.float32),
        'shape': np.zeros(smpl.shape_param_dim, np.float32),
        'mesh_cam': None,
        'joint_cam_abs': None,
        'regressor_joints': None,
    }


def fitting_error(gt_joint_cam, fit_joint_cam, joint_idx=None):
    """Mean joint distance (mm) after translation-only alignment (§3.7.4).

    gt_joint_cam (K, 3) mm; fit_joint_cam (K, 3) mm, the fit mesh's regressed joints
    (``smpl_fit_targets(..., regressor=...)['regressor_joints']``); joint_idx restricts
    both to the listed rows (MuCo: the 14 joints shared with H36M).
    """
    gt = np.asarray(gt_joint_cam, dtype=np.float64)
    pred = np.asarray(fit_joint_cam, dtype=np.float64)
    if joint_idx is not None:
        gt, pred = gt[list(joint_idx)], pred[list(joint_idx)]
    pred = pred - pred.mean(axis=0) + gt.mean(axis=0)
    return float(np.sqrt(((pred - gt) ** 2).sum(axis=1)).mean())


def fit_param_valid_mask():
    """(72,) float32: 1 except the pose entries of ankles, toes, wrists and hands (§3.3)."""
    mask = np.ones((SMPL_POSE_JOINT_NUM, 3), dtype=np.float32)
    mask[list(UNRELIABLE_POSE_JOINTS)] = 0
    return mask.reshape(-1)


# -------------------------------------------------------------------- step 7: assembly
def assemble_sample(img, input_joints_hm, gt, fit, is_valid_fit, is_3d):
    """The (inputs, targets, meta_info) triple of DATA.md §3.3.

    img (3, 256, 256) float32; input_joints_hm (30, 2); gt from ``process_gt_joints``;
    fit from ``smpl_fit_targets``/``dummy_fit_targets``.  ``is_valid_fit`` and ``is_3D``
    are 0-d float32 arrays (collate to (B,) float32).
    """
    inputs = {
        'img': img,
        'joints': np.asarray(input_joints_hm, dtype=np.float32),
        'joints_mask': gt['joint_trunc'],
    }
    targets = {
        'orig_joint_img': gt['joint_img'],
        'fit_joint_img': fit['joint_img'],
        'orig_joint_cam': gt['joint_cam'],
        'fit_joint_cam': fit['joint_cam'],
        'pose_param': fit['pose'],
        'shape_param': fit['shape'],
    }
    meta_info = {
        'orig_joint_valid': gt['joint_valid'],
        'orig_joint_trunc': gt['joint_trunc'],
        'fit_param_valid': fit_param_valid_mask(),
        'fit_joint_trunc': fit['joint_trunc'],
        'is_valid_fit': np.array(1.0 if is_valid_fit else 0.0, dtype=np.float32),
        'is_3D': np.array(1.0 if is_3d else 0.0, dtype=np.float32),
    }
    return inputs, targets, meta_info


# ---------------------------------------------------------------------- the base class
class TrainDataset(SeededDataset):
    """Base class of the four training loaders; ``__getitem__`` runs §3.2 for 'train'.

    Subclasses set the class attributes below, implement ``load_data()`` and, where
    needed, override ``fit_is_valid`` (3D sets: fitting error) and ``get_test_sample``.
    Pipeline functions never modify datalist arrays in place, so ``__getitem__`` only
    makes a shallow copy of the entry.
    """

    joints_name = ()             # dataset joint set
    flip_pairs = ()
    root_joint_idx = None        # 3D sets: root of camera/depth coordinates
    is_3d = False
    fit_variant = 'NeuralAnnot'
    fit_regressor = None         # 3D sets: SparseRegressor of the fitting-error joints
    synth_joints_name = COCO17_JOINTS_NAME   # COCO set of the synthesiser and of near_joints
    synth_shared_idx = ()        # dataset joints receiving synthetic x,y
    synth_force_valid = False    # 3D sets: every dataset joint counts as valid for synthesis

    def __init__(self, transform, data_split):
        self.transform = transform
        self.data_split = data_split
        self.smpl = get_smpl()
        self.datalist = self.load_data()

    def load_data(self):
        """Return the datalist (list of per-person dicts, keys in the module docstring)."""
        raise NotImplementedError

    def __len__(self):
        return len(self.datalist)

    def __getitem__(self, idx):
        data = dict(self.datalist[idx])
        if self.data_split == 'train':
            return self.get_train_sample(idx, data, self.sample_rng(idx))
        return self.get_test_sample(idx, data)

    def fit_is_valid(self, data, fit, gt, do_flip):
        """Whether the fit is usable (2D sets: always). 3D sets compare with GT (§3.7.4)."""
        return True

    def get_train_sample(self, idx, data, rng):
        """The §3.2 pipeline for one datalist entry (not modified)."""
        img_width = data['img_shape'][1]
        img, img2bb, _, rot, do_flip = load_crop(data['img_path'], data['bbox'], self.data_split, rng,
                                                 self.transform)
        gt = process_gt_joints(
            data['joint_img'], data['joint_valid'], self.joints_name, self.flip_pairs, img2bb, do_flip,
            img_width, joint_cam=data.get('joint_cam') if self.is_3d else None,
            root_joint_idx=self.root_joint_idx, rot=rot, smpl_joints_name=self.smpl.joints_name)
        near_joints = process_neighbours(data['near_joints'], data['num_overlap'], img2bb, do_flip, img_width,
                                         _flip_pairs_within(COCO_FLIP_PAIRS, np.shape(data['near_joints'])[-2]))
        synth_xy = synthesize_input_pose(
            gt['crop_joints'], gt['joint_valid_src'], self.joints_name, self.synth_joints_name,
            self.synth_shared_idx, near_joints, data['num_overlap'], data['tight_bbox'], img2bb, rng,
            force_valid=self.synth_force_valid)
        input_joints = transform_joint_to_other_db(to_heatmap_xy(synth_xy), self.joints_name,
                                                   self.smpl.joints_name)

        if data.get('smpl_param') is not None:
            fit = smpl_fit_targets(data['smpl_param'], data['cam_param'], self.fit_variant, do_flip, img_width,
                                   img2bb, rot, self.smpl, with_mesh=False, regressor=self.fit_regressor)
            is_valid_fit = self.fit_is_valid(data, fit, gt, do_flip)
        else:
            fit = dummy_fit_targets(self.smpl)
            is_valid_fit = False
        return assemble_sample(img, input_joints, gt, fit, is_valid_fit, self.is_3d)

    def get_test_sample(self, idx, data):
        """Non-train splits; loaders that have one override this."""
        raise NotImplementedError(f"{type(self).__name__} has no '{self.data_split}' split.")


class MocapTrainDataset(TrainDataset):
    """Base of the 3D training sets (Human36M, MuCo; §3.4, §3.5).

    GT joints come from mocap in camera coordinates and all count as valid for the
    synthesiser (COCO-17); an SMPL fit is valid when its fitting error against H36M-17
    joints regressed from the fit mesh is small (§3.7.4, ``fit_is_valid`` in the
    subclass), so only the vertices that regressor reads are skinned.
    Attributes: ``h36m_regressor`` (17, 6890) float64 and ``fit_regressor``, its
    ``SparseRegressor``.
    """

    is_3d = True
    synth_joints_name = COCO17_JOINTS_NAME
    synth_force_valid = True

    def __init__(self, transform, data_split):
        self.h36m_regressor = load_h36m_regressor()
        self.fit_regressor = SparseRegressor(self.h36m_regressor)
        super().__init__(transform, data_split)


def _flip_pairs_within(flip_pairs, num_joints):
    """The flip pairs whose both indices exist in a set of ``num_joints`` joints."""
    return tuple(pair for pair in flip_pairs if max(pair) < num_joints)
