"""Evaluation errors of predicted 3D joints and meshes: MPJPE, PA-MPJPE and MPVPE.

Batched NumPy, float64.  Every function is unit-agnostic: errors come out in the unit
of the inputs (mm in, mm out; metres in, metres out), averaged per sample over the
points, so an evaluator averages the (B,) results over its samples.  Alignment before
the distance (see docs/METHOD.md, "Evaluation"):

* ``'none'``: the points as given (camera frame);
* ``'root'``: both sets translated so that their root point is at the origin (MPJPE;
  the pelvis-centred MPVPE);
* ``'procrustes'``: root-relative first, then the prediction is mapped onto the ground
  truth by the least-squares similarity transform (rotation, isotropic scale,
  translation; ``common.utils.transforms.rigid_align_batch``): PA-MPJPE.
"""
import numpy as np

from common.utils.transforms import rigid_align_batch

ALIGNMENTS = ('none', 'root', 'procrustes')


def regress_joints(regressor, meshes):
    """(B, V, 3) meshes -> (B, J, 3) joints with a (J, V) joint regressor, float64."""
    return np.einsum('jv,bvc->bjc', np.asarray(regressor, dtype=np.float64), np.asarray(meshes, dtype=np.float64))


def mean_point_distance(pred, gt):
    """Mean Euclidean distance between corresponding points: (B, N, 3) x 2 -> (B,) float64."""
    diff = np.asarray(pred, dtype=np.float64) - np.asarray(gt, dtype=np.float64)
    return np.sqrt((diff ** 2).sum(-1)).mean(-1)


def _check_alignment(alignment):
    if alignment not in ALIGNMENTS:
        raise ValueError(f"Unknown alignment '{alignment}'; expected one of {ALIGNMENTS}.")


def joint_error(pred, gt, alignment='root', root=0, subset=None):
    """Per-sample mean joint position error (B,): MPJPE or, with 'procrustes', PA-MPJPE.

    pred, gt: (B, J, 3) joints in one unit; alignment: 'none', 'root' or 'procrustes'
    (module docstring); root: index of the root joint (used by 'root' and 'procrustes',
    before ``subset``); subset: joint indices the error averages over (None: all; the
    Procrustes fit uses only these).  Returns float64 (B,) in the input unit.
    """
    _check_alignment(alignment)
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if alignment != 'none':
        pred, gt = pred - pred[:, root:root + 1], gt - gt[:, root:root + 1]
    if subset is not None:
        pred, gt = pred[:, list(subset)], gt[:, list(subset)]
    if alignment == 'procrustes':
        pred = rigid_align_batch(pred, gt)
    return mean_point_distance(pred, gt)


def vertex_error(pred, gt, alignment='root', root_weights=None):
    """Per-sample mean vertex error (B,): MPVPE.

    pred, gt: (B, V, 3) meshes in one unit; alignment: 'none', 'root' or 'procrustes';
    root_weights: (V,) weights whose weighted sum of vertices is the root point (e.g.
    the pelvis row of a joint regressor), needed for 'root' and 'procrustes'.
    Returns float64 (B,) in the input unit.
    """
    _check_alignment(alignment)
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if alignment != 'none':
        if root_weights is None:
            raise ValueError(f"vertex_error with alignment '{alignment}' needs root_weights (V,).")
        weights = np.asarray(root_weights, dtype=np.float64)
        pred = pred - np.einsum('v,bvc->bc', weights, pred)[:, None]
        gt = gt - np.einsum('v,bvc->bc', weights, gt)[:, None]
    if alignment == 'procrustes':
        pred = rigid_align_batch(pred, gt)
    return mean_point_distance(pred, gt)
