"""Joint conventions: every joint set the project reads or writes, and moving rows between them.

A joint set is an ordered tuple of names plus its left/right flip pairs and drawing
skeleton (index pairs into the names).  Rows move between sets **by name**
(``transfer_joints``); a joint a set does not have becomes a zero row.  Names are
shared across sets (``'L_Hip'`` is the same joint in COCO and SMPL-30), which is what
makes the transfer work.  See docs/METHOD.md, "Joint conventions".
"""
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np


@dataclass(frozen=True)
class JointSet:
    """One joint convention.

    names: joint names in row order; flip_pairs: (left, right) index pairs swapped by a
    horizontal flip; skeleton: index pairs drawn as bones; root: index of the root joint
    (None where a set has no use for one).
    """
    name: str
    names: Tuple[str, ...]
    flip_pairs: Tuple[Tuple[int, int], ...] = ()
    skeleton: Tuple[Tuple[int, int], ...] = ()
    root: Optional[int] = None

    def __len__(self):
        return len(self.names)

    def index(self, joint_name):
        return self.names.index(joint_name)


# ------------------------------------------------------------------ SMPL-30 and its subsets
SMPL30 = JointSet(
    'smpl30',
    ('Pelvis', 'L_Hip', 'R_Hip', 'Torso', 'L_Knee', 'R_Knee', 'Spine', 'L_Ankle', 'R_Ankle', 'Chest',
     'L_Toe', 'R_Toe', 'Neck', 'L_Thorax', 'R_Thorax', 'Head', 'L_Shoulder', 'R_Shoulder', 'L_Elbow',
     'R_Elbow', 'L_Wrist', 'R_Wrist', 'L_Hand', 'R_Hand', 'Nose', 'L_Eye', 'R_Eye', 'L_Ear', 'R_Ear',
     'Head_top'),
    flip_pairs=((1, 2), (4, 5), (7, 8), (10, 11), (13, 14), (16, 17), (18, 19), (20, 21), (22, 23),
                (25, 26), (27, 28)),
    skeleton=((0, 1), (1, 4), (4, 7), (7, 10), (0, 2), (2, 5), (5, 8), (8, 11), (0, 3), (3, 6), (6, 9),
              (9, 14), (14, 17), (17, 19), (19, 21), (21, 23), (9, 13), (13, 16), (16, 18), (18, 20),
              (20, 22), (9, 12), (12, 24), (24, 15), (24, 25), (24, 26), (25, 27), (26, 28), (24, 29)),
    root=0)
"""The 24 SMPL kinematic joints, then nose, eyes, ears (mesh vertices) and head top: the
common target set of every loader and the model's joint output."""

SMPL_POSE_JOINT_NUM = 24
"""The first 24 SMPL-30 joints are SMPL's kinematic joints (one rotation each)."""

SMPL_POSE_FLIP_PAIRS = tuple(pair for pair in SMPL30.flip_pairs if max(pair) < SMPL_POSE_JOINT_NUM)
"""SMPL-30 flip pairs among the 24 pose joints (used to mirror an SMPL pose)."""

GRAPH15 = JointSet(
    'graph15',
    ('Pelvis', 'L_Hip', 'R_Hip', 'L_Knee', 'R_Knee', 'L_Ankle', 'R_Ankle', 'Neck', 'Head_top',
     'L_Shoulder', 'R_Shoulder', 'L_Elbow', 'R_Elbow', 'L_Wrist', 'R_Wrist'),
    flip_pairs=((1, 2), (3, 4), (5, 6), (9, 10), (11, 12), (13, 14)),
    skeleton=((0, 1), (1, 3), (3, 5), (0, 2), (2, 4), (4, 6), (0, 7), (7, 8), (7, 9), (9, 11),
              (11, 13), (7, 10), (10, 12), (12, 14)),
    root=0)
"""The 15 joints RotationNet's graph runs over (a subset of SMPL-30)."""

# --------------------------------------------------------------------------- dataset sets
H36M17 = JointSet(
    'h36m17',
    ('Pelvis', 'R_Hip', 'R_Knee', 'R_Ankle', 'L_Hip', 'L_Knee', 'L_Ankle', 'Torso', 'Neck', 'Nose',
     'Head_top', 'L_Shoulder', 'L_Elbow', 'L_Wrist', 'R_Shoulder', 'R_Elbow', 'R_Wrist'),
    flip_pairs=((1, 4), (2, 5), (3, 6), (14, 11), (15, 12), (16, 13)),
    skeleton=((0, 7), (7, 8), (8, 9), (9, 10), (8, 11), (11, 12), (12, 13), (8, 14), (14, 15), (15, 16),
              (0, 1), (1, 2), (2, 3), (0, 4), (4, 5), (5, 6)),
    root=0)
"""Human3.6M's 17 joints; also the evaluation set on 3DPW (via the H36M regressor)."""

H36M_EVAL_JOINTS = (1, 2, 3, 4, 5, 6, 8, 10, 11, 12, 13, 14, 15, 16)
"""H36M-17 rows that MPJPE / PA-MPJPE average over: all but Pelvis, Torso and Nose."""

MUCO21 = JointSet(
    'muco21',
    ('Head_top', 'Thorax', 'R_Shoulder', 'R_Elbow', 'R_Wrist', 'L_Shoulder', 'L_Elbow', 'L_Wrist',
     'R_Hip', 'R_Knee', 'R_Ankle', 'L_Hip', 'L_Knee', 'L_Ankle', 'Pelvis', 'Spine', 'Head', 'R_Hand',
     'L_Hand', 'R_Toe', 'L_Toe'),
    flip_pairs=((2, 5), (3, 6), (4, 7), (8, 11), (9, 12), (10, 13), (17, 18), (19, 20)),
    skeleton=((0, 16), (16, 1), (1, 15), (15, 14), (14, 8), (14, 11), (8, 9), (9, 10), (10, 19),
              (11, 12), (12, 13), (13, 20), (1, 2), (2, 3), (3, 4), (4, 17), (1, 5), (5, 6), (6, 7),
              (7, 18)),
    root=14)
"""MuCo-3DHP's 21 joints."""

_COCO17_NAMES = ('Nose', 'L_Eye', 'R_Eye', 'L_Ear', 'R_Ear', 'L_Shoulder', 'R_Shoulder', 'L_Elbow',
                 'R_Elbow', 'L_Wrist', 'R_Wrist', 'L_Hip', 'R_Hip', 'L_Knee', 'R_Knee', 'L_Ankle',
                 'R_Ankle')
_COCO_FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
_COCO_SKELETON = ((1, 2), (0, 1), (0, 2), (2, 4), (1, 3), (6, 8), (8, 10), (5, 7), (7, 9), (12, 14),
                  (14, 16), (11, 13), (13, 15), (5, 6), (11, 12))

COCO17 = JointSet('coco17', _COCO17_NAMES, _COCO_FLIP_PAIRS, _COCO_SKELETON)
"""MS COCO's 17 keypoints (also the output of COCO-style 2D pose estimators)."""

COCO18 = JointSet('coco18', _COCO17_NAMES + ('Pelvis',), _COCO_FLIP_PAIRS, _COCO_SKELETON)
"""COCO-17 plus the hip midpoint: the set the training loaders synthesise input poses in."""

COCO19 = JointSet('coco19', _COCO17_NAMES + ('Pelvis', 'Neck'), _COCO_FLIP_PAIRS, _COCO_SKELETON)
"""COCO-17 plus hip and shoulder midpoints: HigherHRNet detections on 3DPW-Crowd."""

MPII16 = JointSet(
    'mpii16',
    ('R_Ankle', 'R_Knee', 'R_Hip', 'L_Hip', 'L_Knee', 'L_Ankle', 'Pelvis', 'Thorax', 'Neck',
     'Head_top', 'R_Wrist', 'R_Elbow', 'R_Shoulder', 'L_Shoulder', 'L_Elbow', 'L_Wrist'),
    flip_pairs=((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13)),
    skeleton=((0, 1), (1, 2), (2, 6), (3, 6), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9), (10, 11),
              (11, 12), (7, 12), (7, 13), (13, 14), (14, 15)))
"""MPII's 16 joints."""

_OPENPOSE18_NAMES = ('Nose', 'Neck', 'R_Shoulder', 'R_Elbow', 'R_Wrist', 'L_Shoulder', 'L_Elbow',
                     'L_Wrist', 'R_Hip', 'R_Knee', 'R_Ankle', 'L_Hip', 'L_Knee', 'L_Ankle', 'R_Eye',
                     'L_Eye', 'R_Ear', 'L_Ear')
OPENPOSE18 = JointSet('openpose18', _OPENPOSE18_NAMES)
"""OpenPose's COCO-18 body layout."""

OPENPOSE19 = JointSet('openpose19', _OPENPOSE18_NAMES + ('Pelvis',))
"""OpenPose-18 plus the hip midpoint (3DPW's OpenPose detections after adding the pelvis)."""

BODY25 = JointSet(
    'body25',
    ('Nose', 'Neck', 'R_Shoulder', 'R_Elbow', 'R_Wrist', 'L_Shoulder', 'L_Elbow', 'L_Wrist', 'MidHip',
     'R_Hip', 'R_Knee', 'R_Ankle', 'L_Hip', 'L_Knee', 'L_Ankle', 'R_Eye', 'L_Eye', 'R_Ear', 'L_Ear',
     'L_BigToe', 'L_SmallToe', 'L_Heel', 'R_BigToe', 'R_SmallToe', 'R_Heel'))
"""OpenPose's BODY_25 layout (its 'MidHip' is not mapped: the pelvis is recomputed from the hips)."""


# ------------------------------------------------------------------------------ operations
def transfer_joints(src_joints, src_names, dst_names):
    """Move rows from one joint set to another by name.

    src_joints (J_src, ...) with row names ``src_names``.  Returns float32
    (len(dst_names), ...): each joint both sets share at its destination row, zeros
    elsewhere.  A name repeated in ``dst_names`` is filled at its first row only.
    """
    src_joints = np.asarray(src_joints)
    dst_index = {}
    for i, joint_name in enumerate(dst_names):
        dst_index.setdefault(joint_name, i)
    pairs = [(i, dst_index[joint_name]) for i, joint_name in enumerate(src_names) if joint_name in dst_index]
    out = np.zeros((len(dst_names),) + src_joints.shape[1:], dtype=np.float32)
    if pairs:
        src_idx, dst_idx = (list(p) for p in zip(*pairs))
        out[dst_idx] = src_joints[src_idx]
    return out


def append_midpoint(joints, names, first, second, new_name):
    """Append the midpoint of two joints as a new last row.

    joints: (J, 3) rows ``[x, y, score_or_visibility]`` named by ``names``.  The new row
    is ``[(x_a + x_b) / 2, (y_a + y_b) / 2, s_a * s_b]`` (a midpoint is only as reliable
    as both ends), computed in the input's float precision.  Returns
    ``((J + 1, 3) array of the input's float dtype (float32 for other inputs), names + (new_name,))``.
    """
    joints = np.asarray(joints)
    if not np.issubdtype(joints.dtype, np.floating):
        joints = joints.astype(np.float32)
    a, b = joints[names.index(first)], joints[names.index(second)]
    row = np.array([(a[0] + b[0]) / 2, (a[1] + b[1]) / 2, a[2] * b[2]], dtype=joints.dtype)
    return np.concatenate([joints, row[None]], axis=0), tuple(names) + (new_name,)


def add_pelvis(joints, names):
    """``append_midpoint`` of the hips, named 'Pelvis'; returns only the (J + 1, 3) array."""
    return append_midpoint(joints, names, 'L_Hip', 'R_Hip', 'Pelvis')[0]


def add_neck(joints, names):
    """``append_midpoint`` of the shoulders, named 'Neck'; returns only the (J + 1, 3) array."""
    return append_midpoint(joints, names, 'L_Shoulder', 'R_Shoulder', 'Neck')[0]


def flip_rows(joints, flip_pairs):
    """Swap the rows of each (left, right) pair; returns a copy.  joints: (J, ...)."""
    out = np.array(joints, copy=True)
    for left, right in flip_pairs:
        out[[left, right]] = out[[right, left]]
    return out
