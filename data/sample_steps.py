"""The steps that turn one datalist entry into a training sample.

``data/train_dataset.py`` runs them in this order (docs/METHOD.md, "Training samples"):

1. ``load_crop``: read the image, draw the augmentation, cut the input patch; the crop's
   geometry travels as one ``CropState`` to every later step;
2. ``process_gt_joints``: GT joints -> flip, crop, heatmap units, normalised depth,
   truncation, SMPL-30 rows;
3. ``process_neighbours``: the overlapping people's joints in the crop (swap errors);
4. ``synthesize_input_pose``: the PoseFix-style corrupted input pose;
5. SMPL-fit targets (``data/smpl_targets.py``);
6. ``assemble_sample``: the ``(inputs, targets, meta_info)`` triple.

Each step takes explicit arguments (geometry and augmentation records of
``common/options.py``, never the global configuration) and never modifies its inputs
in place.
"""
from dataclasses import dataclass
from typing import NamedTuple, Tuple

import numpy as np

from common.utils.joints import COCO17, SMPL30, flip_rows, transfer_joints
from common.utils.posefix import synthesize_pose
from common.utils.preprocessing import (apply_affine, augmentation, flip_img_joints, in_bounds_mask, read_image,
                                        normalise_depth, to_heatmap_xy)
from common.utils.transforms import rotation_z
from data.smpl_targets import fit_param_valid_mask


@dataclass(frozen=True)
class CropState:
    """Where a sample's input patch came from: the per-sample crop and augmentation.

    img2bb / bb2img: (2, 3) float32 affines original-image pixels <-> crop pixels (img2bb
    maps the *mirrored* image when ``do_flip``); rot: in-plane rotation, degrees;
    do_flip: the image was mirrored (u -> img_width - 1 - u) before cropping;
    img_width: width of the original image, pixels.
    """
    img2bb: np.ndarray
    bb2img: np.ndarray
    rot: float
    do_flip: bool
    img_width: int

    @classmethod
    def unaugmented(cls, img2bb, bb2img, img_width):
        """The state of a test-time crop: no rotation, no flip."""
        return cls(np.asarray(img2bb, np.float32), np.asarray(bb2img, np.float32), 0.0, False, img_width)


# ------------------------------------------------------------------------- step 1: image
def load_crop(data, geometry, augment=None, rng=None):
    """Read the entry's image and cut its (augmented) input patch.

    data: datalist entry (``img_path``, ``bbox``, ``img_shape``); geometry:
    ``GeometryOptions``; augment: ``AugmentOptions`` (None: no augmentation, nothing
    drawn); rng: the sample's generator (needed with ``augment``).
    Returns ``(patch (H_in, W_in, 3) float32 0..255, CropState)``.
    """
    image = read_image(data['img_path'])   # converted only where the crop reads it
    patch, img2bb, bb2img, rot, do_flip = augmentation(image, data['bbox'], geometry.input_img_shape, augment, rng)
    crop = CropState(np.asarray(img2bb, np.float32), np.asarray(bb2img, np.float32), float(rot), bool(do_flip),
                     data['img_shape'][1])
    return np.ascontiguousarray(patch, dtype=np.float32), crop


def input_image(patch, transform=None):
    """(H, W, 3) float32 0..255 patch -> (3, H, W) float32 in [0, 1].

    A tensor when ``transform`` is torchvision's ToTensor, else a NumPy array.
    """
    patch = np.ascontiguousarray(patch, dtype=np.float32)
    if transform is not None:
        return transform(patch) / 255.0
    return np.ascontiguousarray(patch.transpose(2, 0, 1)) / np.float32(255.0)


# ------------------------------------------------------------------ step 2: GT joints
def process_gt_joints(joint_img, joint_valid, joint_set, crop, geometry, joint_cam=None):
    """GT joints of the dataset set -> SMPL-30 targets in the augmented crop.

    joint_img: (J, 3) (u, v, Z_mm) for 3D sets (``joint_cam`` given) or (u, v, valid) for
    2D sets; joint_valid: (J, 1); joint_set: the dataset's ``JointSet`` (names, flip
    pairs, root); crop: ``CropState``; joint_cam: (J, 3) mm camera coordinates (3D sets).
    Returns a dict:
      ``joint_img`` (30, 3) heatmap x,y and normalised depth (3D) or flipped validity (2D),
      ``joint_valid`` (30, 1), ``joint_trunc`` (30, 1),
      ``joint_cam`` (30, 3) metres root-relative, rotation-augmented (zeros for 2D sets),
      ``crop_joints`` (J, 3) crop-space x,y of the (flipped) dataset joints with the
      original third column (the basis of the synthetic input pose),
      ``joint_valid_src`` (J, 1) flipped validity in the dataset set,
      ``joint_cam_mm`` (J, 3) flipped, root-relative mm camera joints before the rotation
      augmentation (3D sets; None otherwise; used by the fitting error).
    """
    names, flip_pairs, root = joint_set.names, joint_set.flip_pairs, joint_set.root
    is_3d = joint_cam is not None
    joint_img = np.array(joint_img, dtype=np.float32, copy=True)
    joint_valid = np.array(joint_valid, dtype=np.float32, copy=True).reshape(-1, 1)
    if is_3d:
        joint_cam = np.asarray(joint_cam, dtype=np.float32)
        joint_cam = joint_cam - joint_cam[root]
    if crop.do_flip:
        joint_img = flip_img_joints(joint_img, crop.img_width, flip_pairs)
        joint_valid = flip_rows(joint_valid, flip_pairs)
        if is_3d:
            joint_cam = joint_cam * np.array([-1, 1, 1], dtype=np.float32)
            joint_cam = flip_rows(joint_cam, flip_pairs)

    crop_joints = joint_img.copy()
    crop_joints[:, :2] = apply_affine(joint_img[:, :2], crop.img2bb)
    joint_hm = to_heatmap_xy(crop_joints, geometry)
    if is_3d:
        joint_hm[:, 2] = normalise_depth(joint_img[:, 2] - joint_img[root, 2], 1000, geometry)
    joint_trunc = joint_valid * in_bounds_mask(joint_hm, geometry.output_hm_shape, check_depth=is_3d)

    if is_3d:
        cam_rotated = joint_cam @ rotation_z(crop.rot).T
        joint_cam_30 = transfer_joints(cam_rotated, names, SMPL30.names) / 1000
    else:
        joint_cam_30 = np.zeros((len(SMPL30), 3), dtype=np.float32)
    return {
        'joint_img': transfer_joints(joint_hm, names, SMPL30.names),
        'joint_valid': transfer_joints(joint_valid, names, SMPL30.names),
        'joint_trunc': transfer_joints(joint_trunc, names, SMPL30.names),
        'joint_cam': joint_cam_30.astype(np.float32),
        'crop_joints': crop_joints,
        'joint_valid_src': joint_valid,
        'joint_cam_mm': joint_cam if is_3d else None,
    }


# ------------------------------------------------------------------ step 3: neighbours
def process_neighbours(near_joints, num_overlap, crop, fix_flip=False):
    """Neighbours' joints (original-image pixels) -> crop space, for the swap errors.

    SGRE's behaviour (``fix_flip=False``): x,y through img2bb, NOT mirrored on flipped
    samples, validity forced to 1 for every joint.  With ``fix_flip`` the joints are
    mirrored (u -> W-1-u, COCO pairs swapped) before img2bb and keep their own validity
    (docs/METHOD.md, "Differences from the original").
    near_joints (K, Jc, 3) in a COCO set; num_overlap == 0 gives ``zeros((1, Jc, 3))``.
    """
    near_joints = np.asarray(near_joints, dtype=np.float32)
    num_joints = near_joints.shape[-2]
    if num_overlap == 0 or near_joints.size == 0:
        return np.zeros((1, num_joints, 3), dtype=np.float32)
    out = np.ones_like(near_joints)
    if fix_flip:
        if crop.do_flip:
            flip_pairs = tuple(pair for pair in COCO17.flip_pairs if max(pair) < num_joints)
            near_joints = flip_img_joints(near_joints, crop.img_width, flip_pairs)
        out[..., 2] = near_joints[..., 2]
    out[..., :2] = apply_affine(near_joints[..., :2], crop.img2bb)
    return out


# ------------------------------------------------------------- step 4: synthetic input
class SynthesisSpec(NamedTuple):
    """How a dataset's GT joints feed the input-pose synthesiser.

    joints_name: the dataset joint names; synth_joints_name: the COCO set the
    synthesiser works in (COCO-17 or COCO-18, also the set of ``near_joints``);
    shared_idx: dataset joints that receive the synthetic x,y (the others keep their
    clean position); force_valid: every dataset joint counts as valid (3D sets).
    """
    joints_name: Tuple[str, ...]
    synth_joints_name: Tuple[str, ...]
    shared_idx: Tuple[int, ...]
    force_valid: bool


class Neighbours(NamedTuple):
    """The overlapping people of a sample: joints (K, Jc, 3) in crop pixels, count K' >= 0."""
    joints: np.ndarray
    count: int


def synthesize_input_pose(gt, spec, neighbours, tight_bbox, crop, rng):
    """PoseFix-style corrupted input pose in the dataset joint set.

    gt: ``process_gt_joints``'s dict (``crop_joints`` (J, 3) crop pixels, third column
    ignored; ``joint_valid_src`` (J, 1)); spec: the dataset's ``SynthesisSpec``;
    neighbours: ``Neighbours`` in crop pixels; tight_bbox (4,) annotated box, image
    pixels; crop: ``CropState``; rng: the sample's generator.  The joints go to
    ``spec.synth_joints_name`` by name with their validity, are corrupted, and only
    the x,y of the dataset joints ``spec.shared_idx`` are replaced.
    Returns (J, 2) crop pixels.
    """
    source = np.array(gt['crop_joints'], dtype=np.float32, copy=True)
    source[:, 2] = 1.0 if spec.force_valid else np.asarray(gt['joint_valid_src'], dtype=np.float32).reshape(-1)
    coco = transfer_joints(source, spec.joints_name, spec.synth_joints_name)
    coco = synthesize_pose(coco, neighbours.joints, tight_bbox, neighbours.count, crop.img2bb, rng)
    back = transfer_joints(coco, spec.synth_joints_name, spec.joints_name)
    out = source[:, :2].copy()
    shared_idx = np.asarray(spec.shared_idx, dtype=np.int64)
    out[shared_idx] = back[shared_idx, :2]
    return out


# -------------------------------------------------------------------- step 6: assembly
def assemble_sample(img, input_joints_hm, gt, fit, is_valid_fit, is_3d):
    """The (inputs, targets, meta_info) triple of a training sample.

    img (3, H_in, W_in) float32; input_joints_hm (30, 2); gt from ``process_gt_joints``;
    fit from ``smpl_fit_targets``/``dummy_fit_targets``.  ``is_valid_fit`` and ``is_3D``
    are 0-d float32 arrays (collate to (B,) float32).  Keys: docs/METHOD.md, "Training
    samples".
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
