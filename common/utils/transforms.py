"""Geometry and rotation helpers (docs/METHOD.md, "Images, boxes and crops", "Network").

NumPy helpers serve the data side (projection, extrinsics, similarity alignment,
heatmap-to-image joints, adjacency); torch helpers serve the model (6D -> matrix,
matrix <-> axis-angle, global <-> relative rotations down the SMPL tree, composed by
``common.utils.kinematics``). Shapes and camera values are always arguments.

The torch rotation conversions re-derive the torchgeometry-0.1.2 formulas (rotation
matrix -> quaternion -> axis-angle, and its Rodrigues axis-angle -> matrix), so the
forward values match the authors' code; branch selection uses ``torch.where`` with safe
substitutes in the unused branch so there are no NaN gradients where the original's
backward gives NaN (docs/METHOD.md, "Differences from the original"). Low-precision inputs (float16/bfloat16,
e.g. under autocast) are converted in float32; float64 stays float64. The tree
compositions (global <-> relative) are plain matmuls and follow autocast.
"""
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from common.utils.kinematics import global_rotations, relative_rotations, tree_plan


__all__ = [
    'cam2pixel', 'pixel2cam', 'world2cam', 'cam2world',
    'rigid_transform_3D', 'rigid_align', 'rigid_align_batch',
    'denorm_joints',
    'build_adj', 'normalize_adj', 'rotation_z',
    'rot6d_to_rotmat', 'rotmat_to_axis_angle', 'axis_angle_to_rotmat',
    'global_to_relative', 'relative_to_global',
    'global_to_relative_loop', 'relative_to_global_loop',
]


# --------------------------------------------------------------------------- projection

def cam2pixel(cam_coord, f, c):
    """Pinhole projection.

    cam_coord (N,3) camera coordinates (any length unit), f (fx, fy) and c (cx, cy) in
    pixels. Returns (N,3): (u, v, Z) with u = X/Z*fx + cx, v = Y/Z*fy + cy.
    """
    x = cam_coord[:, 0] / cam_coord[:, 2] * f[0] + c[0]
    y = cam_coord[:, 1] / cam_coord[:, 2] * f[1] + c[1]
    z = cam_coord[:, 2]
    return np.stack((x, y, z), axis=1)


def pixel2cam(pixel_coord, f, c):
    """Back-projection, inverse of ``cam2pixel``: (u, v, Z) (N,3) -> (X, Y, Z) (N,3)."""
    x = (pixel_coord[:, 0] - c[0]) / f[0] * pixel_coord[:, 2]
    y = (pixel_coord[:, 1] - c[1]) / f[1] * pixel_coord[:, 2]
    z = pixel_coord[:, 2]
    return np.stack((x, y, z), axis=1)


def world2cam(world_coord, R, t):
    """World -> camera: X_c = R X_w + t per row.

    world_coord (N,3), R (3,3), t (3,) in the unit of world_coord; returns (N,3).
    """
    return world_coord @ np.asarray(R).T + np.asarray(t).reshape(1, 3)


def cam2world(cam_coord, R, t):
    """Camera -> world, inverse of ``world2cam``: X_w = R^-1 (X_c - t) per row."""
    return (cam_coord - np.asarray(t).reshape(1, 3)) @ np.linalg.inv(R).T


# ----------------------------------------------------------------- similarity alignment

def rigid_transform_3D(A, B):
    """Similarity (Umeyama) fit of A onto B.

    A, B (n,3). Returns (c, R, t): scale (float), rotation (3,3) with det +1, translation
    (3,) such that c R A_i + t ~ B_i in the least-squares sense.
    """
    n = A.shape[0]
    mu_a = A.mean(axis=0)
    mu_b = B.mean(axis=0)
    H = (A - mu_a).T @ (B - mu_b) / n
    U, s, Vt = np.linalg.svd(H)
    R = Vt.T @ U.T
    if np.linalg.det(R) < 0:
        # Reflection: flip the weakest direction so R is a proper rotation.
        s = s.copy()
        s[-1] = -s[-1]
        Vt = Vt.copy()
        Vt[-1] = -Vt[-1]
        R = Vt.T @ U.T
    var_a = np.var(A, axis=0).sum()  # population variance, summed over the axes
    c = s.sum() / var_a
    t = mu_b - c * (R @ mu_a)
    return c, R, t


def rigid_align(A, B):
    """A (n,3) aligned onto B (n,3) by the similarity of ``rigid_transform_3D``; returns (n,3)."""
    c, R, t = rigid_transform_3D(A, B)
    return c * (A @ R.T) + t


def rigid_align_batch(A, B):
    """Vectorised ``rigid_align`` for stacks: A, B (b,n,3) -> aligned A (b,n,3)."""
    A = np.asarray(A)
    B = np.asarray(B)
    n = A.shape[1]
    mu_a = A.mean(axis=1, keepdims=True)
    mu_b = B.mean(axis=1, keepdims=True)
    H = np.swapaxes(A - mu_a, 1, 2) @ (B - mu_b) / n
    U, s, Vt = np.linalg.svd(H)
    V = np.swapaxes(Vt, 1, 2)
    Ut = np.swapaxes(U, 1, 2)
    R = V @ Ut
    reflect = np.linalg.det(R) < 0
    # Same reflection fix as the single version, applied only where det R < 0.
    sign = np.ones((A.shape[0], 3), dtype=s.dtype)
    sign[reflect, -1] = -1.0
    s = s * sign
    V = V * sign[:, None, :]
    R = V @ Ut
    var_a = np.var(A, axis=1).sum(axis=1)
    c = s.sum(axis=1) / var_a
    t = mu_b[:, 0] - c[:, None] * (R @ mu_a[:, 0, :, None])[..., 0]
    return c[:, None, None] * (A @ np.swapaxes(R, 1, 2)) + t[:, None, :]


# ------------------------------------------------------------------- heatmap helpers

def denorm_joints(joints_hm, bb2img_trans, input_img_shape, output_hm_shape):
    """Heatmap-space joints -> original-image pixels; does not modify the input.

    joints_hm (N,C), C >= 2, columns x, y in heatmap units (0..W_hm); bb2img_trans (2,3)
    crop -> image affine; input_img_shape (H, W) crop pixels; output_hm_shape (D, H, W)
    heatmap cells (``GeometryOptions`` holds both). Columns beyond x, y are copied unchanged.
    """
    img_h, img_w = input_img_shape
    hm_shape = output_hm_shape
    joints = np.array(joints_hm, copy=True)
    x_crop = joints[:, 0] / hm_shape[2] * img_w
    y_crop = joints[:, 1] / hm_shape[1] * img_h
    xy1 = np.stack((x_crop, y_crop, np.ones_like(x_crop)), axis=1)
    joints[:, :2] = xy1 @ np.asarray(bb2img_trans).T
    return joints


def build_adj(joint_num, skeleton, flip_pairs):
    """Symmetric 0/1 float64 adjacency (joint_num, joint_num) over bones and flip pairs.

    ``skeleton`` and ``flip_pairs`` are sequences of (i, j).
    """
    adj = np.zeros((joint_num, joint_num), dtype=np.float64)
    for i, j in tuple(skeleton) + tuple(flip_pairs):
        adj[i, j] = 1.0
        adj[j, i] = 1.0
    return adj


def normalize_adj(adj):
    """D^-1/2 (A + I) D^-1/2 (float64) with d the column sums of A + I.

    As the original, the smallest positive float64 is added to every entry of diag(d)
    before the power; it keeps the off-diagonal zeros finite (no inf*0) and leaves the
    diagonal 1/sqrt(d_j) unchanged.
    """
    adj = np.asarray(adj, dtype=np.float64)
    eye = np.eye(adj.shape[0])
    adj_hat = adj + eye
    degree = adj_hat.sum(axis=0)
    d_inv_sqrt = np.power(np.diag(degree) + np.nextafter(0.0, 1.0), -0.5) * eye
    return d_inv_sqrt @ adj_hat @ d_inv_sqrt


def rotation_z(rot_deg):
    """Rotation-augmentation matrix R_z(-rot), float32 (3,3), rot in degrees (the crop is
    rotated by +rot, so camera-frame joints turn by -rot about the optical axis)."""
    alpha = np.deg2rad(-rot_deg)
    cos_a, sin_a = np.cos(alpha), np.sin(alpha)
    return np.array([[cos_a, -sin_a, 0.0],
                     [sin_a, cos_a, 0.0],
                     [0.0, 0.0, 1.0]], dtype=np.float32)


# ------------------------------------------------------------------- torch rotations

def _compute_dtype(x):
    """float32 for float16/bfloat16 (and integer) inputs, otherwise the input's float dtype."""
    return torch.promote_types(x.dtype, torch.float32)


def rot6d_to_rotmat(x):
    """6D -> rotation matrix, interleaved convention.

    x (..., 6) (any leading shape; typically (N,6)). The 6 numbers form a 3x2 matrix row
    by row, so a1 = (c0, c2, c4), a2 = (c1, c3, c5); Gram-Schmidt with F.normalize
    (eps 1e-12), b3 = b1 x b2, R = [b1 b2 b3] as columns. Returns (..., 3, 3) in float32
    for float16/bfloat16 input (the original's normalisations are float32 under AMP),
    otherwise in the input dtype.
    """
    lead = x.shape[:-1]
    x = x.reshape(-1, 3, 2).to(_compute_dtype(x))
    a1 = x[:, :, 0]
    a2 = x[:, :, 1]
    b1 = F.normalize(a1, dim=-1, eps=1e-12)
    # Element-wise dot (not einsum) so autocast cannot move it to half precision.
    dot = (b1 * a2).sum(dim=-1, keepdim=True)
    b2 = F.normalize(a2 - dot * b1, dim=-1, eps=1e-12)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-1).reshape(*lead, 3, 3)


# The four candidate quaternions of torchgeometry's case rule, each followed by its t (the
# candidate's large diagonal term), are linear in the nine entries of R plus a constant:
# candidate k = R_flat @ _CANDIDATE_MAP[:, k] + _CANDIDATE_ONES[k], shapes (9, 4, 5) and (4, 5).
# Rows: the entry r_ij at 3i + j; columns per candidate (w, x, y, z, t).
def _candidate_tables():
    def entry(name):
        return 3 * int(name[1]) + int(name[2])

    # sign and entries of each (w, x, y, z) component, torchgeometry's q0..q3; 't' marks t_k
    layout = (
        (('+r21', '-r12'), 't', ('+r10', '+r01'), ('+r02', '+r20')),
        (('+r02', '-r20'), ('+r10', '+r01'), 't', ('+r21', '+r12')),
        (('+r10', '-r01'), ('+r02', '+r20'), ('+r21', '+r12'), 't'),
        ('t', ('+r21', '-r12'), ('+r02', '-r20'), ('+r10', '-r01')),
    )
    # t_k = 1 +- r00 +- r11 +- r22, signs per candidate
    t_signs = ((1, -1, -1), (-1, 1, -1), (-1, -1, 1), (1, 1, 1))
    linear = np.zeros((9, 4, 5))
    ones = np.zeros((4, 5))
    for k, components in enumerate(layout):
        t_column = np.zeros(9)
        t_column[[0, 4, 8]] = t_signs[k]
        for c, terms in enumerate(components):
            if terms == 't':
                linear[:, k, c] = t_column
                ones[k, c] = 1
            else:
                for term in terms:
                    linear[entry(term[1:]), k, c] += 1.0 if term[0] == '+' else -1.0
        linear[:, k, 4] = t_column
        ones[k, 4] = 1
    return linear, ones


_CANDIDATE_MAP, _CANDIDATE_ONES = _candidate_tables()


@lru_cache(maxsize=16)
def _candidate_constants(dtype, device):
    """``_CANDIDATE_MAP`` (9, 4, 5) and ``_CANDIDATE_ONES`` (4, 5) as cached tensors."""
    return (torch.tensor(_CANDIDATE_MAP, dtype=dtype, device=device),
            torch.tensor(_CANDIDATE_ONES, dtype=dtype, device=device))


def _rotmat_to_quaternion(R):
    """(N,3,3) -> quaternion (N,4) (w,x,y,z), torchgeometry-0.1.2 case rule.

    All four candidates come from one linear map of the nine entries (element-wise products
    and a sum, so autocast keeps them in float32); the case picks one with a gather.
    """
    flat = R.reshape(-1, 9)
    linear, ones = _candidate_constants(R.dtype, R.device)
    candidates = (flat[:, :, None, None] * linear).sum(dim=1) + ones  # (N, 4, 5)
    r00, r11, r22 = flat[:, 0], flat[:, 4], flat[:, 8]
    # case: 0 if r22 < 1e-6 and r00 > r11; 1 if r22 < 1e-6 otherwise; 2 if r00 < -r11; else 3
    case = torch.where(r22 < 1e-6, (r00 <= r11).long(), 2 + (r00 >= -r11).long())
    chosen = candidates.gather(1, case[:, None, None].expand(-1, 1, 5))[:, 0]  # (N, 5)
    # t is selected before the square root, so no unused (possibly negative) t reaches sqrt,
    # which would put NaN into the backward pass.
    return chosen[:, :4] * (0.5 / torch.sqrt(chosen[:, 4:]))


def _quaternion_to_axis_angle(q):
    """(N,4) (w,x,y,z) -> (N,3) axis-angle, torchgeometry formula with a NaN-free backward."""
    w, axis = q[:, 0], q[:, 1:]
    s2 = (axis * axis).sum(dim=-1)
    has_axis = s2 > 0
    # At s2 == 0 the k = theta2 / s branch is unused; a substitute of 1 keeps its
    # gradient finite (the original gets NaN there).
    s = torch.sqrt(torch.where(has_axis, s2, torch.ones_like(s2)))
    two_theta = 2 * torch.where(w < 0, torch.atan2(-s, -w), torch.atan2(s, w))
    k = torch.where(has_axis, two_theta / s, torch.full_like(s2, 2.0))
    return axis * k[:, None]


def rotmat_to_axis_angle(R):
    """Rotation matrix -> axis-angle (radians), torchgeometry-0.1.2 route.

    R (..., 3, 3) (a (...,3,4) input is accepted; the 4th column is ignored as in the
    original). Returns (..., 3); NaN elements (only from non-finite input) become 0.
    Float32 for float16/bfloat16 input, otherwise the input dtype.
    """
    lead = R.shape[:-2]
    R = R[..., :3, :3].reshape(-1, 3, 3).to(_compute_dtype(R))
    aa = _quaternion_to_axis_angle(_rotmat_to_quaternion(R))
    aa = torch.where(torch.isnan(aa), torch.zeros_like(aa), aa)
    return aa.reshape(*lead, 3)


def _skew_generators():
    """(3, 3, 3) E with sum_k v_k E[:, :, k] = [v]_x, the cross-product matrix of v."""
    generators = np.zeros((3, 3, 3))
    for row, column, k in ((2, 1, 0), (0, 2, 1), (1, 0, 2)):
        generators[row, column, k], generators[column, row, k] = 1.0, -1.0
    return generators


_SKEW_GENERATORS = _skew_generators()


@lru_cache(maxsize=16)
def _rotation_constants(dtype, device):
    """(identity (3, 3), skew generators (3, 3, 3)) as cached tensors."""
    return (torch.eye(3, dtype=dtype, device=device),
            torch.tensor(_SKEW_GENERATORS, dtype=dtype, device=device))


def axis_angle_to_rotmat(aa):
    """Axis-angle (radians) -> rotation matrix, torchgeometry ``angle_axis_to_rotation_matrix``
    (the ground-truth side of the rotation loss), top-left 3x3.

    aa (..., 3) -> (..., 3, 3). For theta^2 > 1e-6 Rodrigues with w = r/(theta + 1e-6),
    R = cos(theta) I + (1 - cos(theta)) w w^T + sin(theta) [w]_x; otherwise the first-order form
    I + [r]_x. Every entry is the original's sum in the original's order (the added zeros are
    exact). Float32 for float16/bfloat16 input, otherwise the input dtype. Gradients are finite
    at theta = 0.
    """
    lead = aa.shape[:-1]
    r = aa.reshape(-1, 3).to(_compute_dtype(aa))
    eye, generators = _rotation_constants(r.dtype, r.device)
    theta2 = (r * r).sum(dim=-1, keepdim=True)
    use_rodrigues = theta2 > 1e-6
    # Substitute 1 in the unused branch: sqrt'(0) = inf would make 0 * inf = NaN gradients.
    theta = torch.sqrt(torch.where(use_rodrigues, theta2, torch.ones_like(theta2)))
    w = r / (theta + 1e-6)
    c = torch.cos(theta)[:, :, None]
    outer = w[:, :, None] * w[:, None, :]
    # sin(theta) * w goes into the skew part as sin * w_k, the original's product
    skew_terms = torch.cat((torch.sin(theta) * w, r), dim=0)[:, None, None, :] * generators
    skew = skew_terms.sum(dim=-1)  # (2N, 3, 3): [sin w]_x, then [r]_x
    rodrigues = c * eye + outer * (1.0 - c) + skew[:len(r)]
    first_order = eye + skew[len(r):]
    R = torch.where(use_rodrigues[:, :, None], rodrigues, first_order)
    return R.reshape(*lead, 3, 3)


def global_to_relative(R_global, parents):
    """Global -> parent-relative rotations (docs/METHOD.md, "Network").

    R_global (..., J, 3, 3), parents: J ints (entry 0, the root, is ignored).
    R_rel_0 = R_g_0, R_rel_j = R_g_parent(j)^T R_g_j. One batched matmul over all children;
    under autocast it runs in half precision, as the original's products do.
    """
    return relative_rotations(R_global, parents)


def relative_to_global(R_rel, parents):
    """Parent-relative -> global rotations: G_0 = R_0, G_j = G_parent(j) R_j.

    R_rel (..., J, 3, 3), parents: J ints (entry 0 ignored). One batched matmul per tree
    depth (8 for SMPL), each product G_parent @ R_j associated as in the per-joint loop;
    no in-place writes, so autograd is safe. Under autocast the products run in half
    precision, as in the original's ground-truth accumulation.
    """
    return global_rotations(R_rel, parents)


def _parents_tuple(parents, num_joints):
    parents = tuple(int(p) for p in parents)
    if len(parents) != num_joints:
        raise ValueError(f'parents has {len(parents)} entries for {num_joints} joints')
    return parents


def global_to_relative_loop(R_global, parents):
    """Per-joint reference implementation of ``global_to_relative`` (for tests)."""
    parents = _parents_tuple(parents, R_global.shape[-3])
    out = [R_global[..., 0, :, :]]
    for j in range(1, len(parents)):
        out.append(R_global[..., parents[j], :, :].transpose(-1, -2) @ R_global[..., j, :, :])
    return torch.stack(out, dim=-3)


def relative_to_global_loop(R_rel, parents):
    """Per-joint reference implementation of ``relative_to_global`` (for tests)."""
    parents = _parents_tuple(parents, R_rel.shape[-3])
    out = {0: R_rel[..., 0, :, :]}
    for j in tree_plan(parents).order[1:]:
        out[j] = out[parents[j]] @ R_rel[..., j, :, :]
    return torch.stack([out[j] for j in range(len(parents))], dim=-3)
