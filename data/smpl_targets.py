"""SMPL-fit targets of the training samples, with a NumPy evaluator of the neutral body.

A person's annotated SMPL fit (``SmplFit``) becomes the fit targets of its augmented
crop (``smpl_fit_targets``): SMPL-30 joints in heatmap units and in the camera frame,
the flipped and rotated pose, the sanitised shape and, for the 3D sets' fitting error
(``fitting_error``), joints regressed from the fit mesh.  See docs/METHOD.md,
"Training samples".  The body is evaluated in NumPy float64 (``NeutralSmplEvaluator``),
which skins only the vertices the joint regressors read unless the mesh is asked for.
"""
import weakref
from typing import NamedTuple

import cv2
import numpy as np
import torch

from common.utils.kinematics import forward_kinematics, skinning_transforms
from common.utils.joints import SMPL_POSE_FLIP_PAIRS, SMPL_POSE_JOINT_NUM, flip_rows
from common.utils.preprocessing import apply_affine, in_bounds_mask, normalise_depth, to_heatmap_xy
from common.utils.smpl_layer import quat_axis_angle_to_rotmat
from common.utils.transforms import cam2pixel, rotation_z

# SMPL-30 pose rows without a reliable fit (ankles, toes, wrists, hands): fit_param_valid = 0.
UNRELIABLE_POSE_JOINTS = (7, 8, 10, 11, 20, 21, 22, 23)
FIT_VARIANTS = ('H36M', 'camera_mm', 'NeuralAnnot')
FITTING_ERROR_THRESHOLD_MM = 25.0


def flip_smpl_pose(pose):
    """Mirror a (72,) axis-angle pose: swap the 9 left/right pose pairs, negate y and z."""
    pose = np.asarray(pose, dtype=np.float32).reshape(-1, 3)
    pose = flip_rows(pose, SMPL_POSE_FLIP_PAIRS)
    pose[:, 1:3] *= -1
    return pose.reshape(-1)


def flip_translation_shift(root_cam, focal, princpt, img_width):
    """x shift making a flipped-pose fit reappear mirrored in the image.

    root_cam (3,) pelvis in metres; returns dx = 2((W-1)/2 - c_x)/f_x * Z_r - 2 X_r.
    """
    return 2 * ((img_width - 1) / 2 - princpt[0]) / focal[0] * root_cam[2] - 2 * root_cam[0]


def rotate_root_pose(pose, rot):
    """Apply the in-plane rotation augmentation to the root orientation (Rodrigues round trip).

    ``rotation_z(rot)`` left-multiplies the root rotation matrix.

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
    """NumPy float64 forward of the neutral SMPL layer for one person (docs/METHOD.md, "Body model").

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
        global_rot, global_pos = forward_kinematics(rotmats, joints_rest, self.parents)
        return skinning_transforms(global_rot, global_pos, joints_rest)

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


def neutral_smpl_evaluator(smpl):
    """The cached ``NeutralSmplEvaluator`` of an SMPL wrapper (``common.utils.smpl.SMPL``)."""
    if smpl not in _EVALUATORS:
        _EVALUATORS[smpl] = NeutralSmplEvaluator(smpl)
    return _EVALUATORS[smpl]


def smpl_mesh_and_joints(pose, shape, trans, smpl, with_mesh=True):
    """Neutral SMPL mesh (6890, 3) (None unless ``with_mesh``) and SMPL-30 joints (30, 3), metres, float32."""
    evaluate = neutral_smpl_evaluator(smpl)
    mesh, joints = evaluate(pose, shape, trans, evaluate.full() if with_mesh else None)
    return (mesh.astype(np.float32) if with_mesh else None), joints.astype(np.float32)


def _merge_camera_rotation(pose, rotation):
    """Root orientation of a world-frame fit expressed in the camera frame (R_cam @ R_root)."""
    pose = np.array(pose, dtype=np.float32, copy=True).reshape(-1)
    root = cv2.Rodrigues(pose[:3].astype(np.float64))[0]
    pose[:3] = cv2.Rodrigues(np.asarray(rotation, np.float64) @ root)[0][:, 0]
    return pose


class SmplFit(NamedTuple):
    """One person's SMPL fit as annotated.

    param: ``pose`` (72,), ``shape`` (10,), ``trans`` (3,) metres; camera: ``focal`` (2,),
    ``princpt`` (2,) pixels and, for the 'H36M' variant, ``R`` (3, 3) and ``t`` (3,) mm;
    variant: 'H36M' (world-frame fit), 'camera_mm' (MuCo: camera frame, targets in mm)
    or 'NeuralAnnot' (MSCOCO, MPII: camera frame, metres).
    """
    param: dict
    camera: dict
    variant: str


def smpl_fit_targets(fit, crop, geometry, smpl, regressor=None, with_mesh=True):
    """SMPL fit -> training targets in the augmented crop (docs/METHOD.md, "Training samples").

    fit: a ``SmplFit``; crop: the sample's ``CropState`` (flip, rotation, img2bb);
    geometry: ``GeometryOptions``; smpl: ``common.utils.smpl.SMPL`` wrapper.  Returns a dict:
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
    smpl_param, cam_param, variant = fit
    do_flip, img_width, img2bb, rot = crop.do_flip, crop.img_width, crop.img2bb, crop.rot
    if variant not in FIT_VARIANTS:
        raise ValueError(f"Unknown SMPL fit variant '{variant}'; expected one of {FIT_VARIANTS}.")
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
    joint_img = to_heatmap_xy(joint_img, geometry)
    joint_img[:, 2] = normalise_depth(joints[:, 2] - joints[root_idx, 2], unit_scale, geometry)
    joint_trunc = in_bounds_mask(joint_img, geometry.output_hm_shape, check_depth=True)

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


def dummy_fit_targets(smpl):
    """Zero fit targets for a person without an SMPL fit (keys as ``smpl_fit_targets``)."""
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
    """Mean joint distance (mm) after translation-only alignment (mean centres matched).

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
    """(72,) float32: 1 except the pose entries of ankles, toes, wrists and hands."""
    mask = np.ones((SMPL_POSE_JOINT_NUM, 3), dtype=np.float32)
    mask[list(UNRELIABLE_POSE_JOINTS)] = 0
    return mask.reshape(-1)
