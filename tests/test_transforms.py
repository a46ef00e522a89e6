"""Geometry, rotation and kinematic-tree helpers against scipy, kornia, per-joint loops and
hand-computed values."""
import numpy as np
import pytest
import torch
from kornia.geometry import conversions as kconv
from scipy.spatial.transform import Rotation

from common.utils.transforms import (
    axis_angle_to_rotmat, build_adj, cam2pixel, cam2world, denorm_joints, global_to_relative,
    global_to_relative_loop, normalize_adj, pixel2cam, relative_to_global,
    relative_to_global_loop, rigid_align, rigid_align_batch, rigid_transform_3D, rot6d_to_rotmat,
    rotation_z, rotmat_to_axis_angle, world2cam,
)
from common.utils import kinematics
from common.utils.joints import transfer_joints

SMPL_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]


def random_rotvecs(n, seed, max_angle=None):
    rotvec = Rotation.random(n, random_state=seed).as_rotvec()
    if max_angle is not None:
        angle = np.linalg.norm(rotvec, axis=1, keepdims=True)
        rotvec = rotvec / angle * np.minimum(angle, max_angle)
    return rotvec


# ----------------------------------------------------------------- rotations vs scipy

def test_axis_angle_to_rotmat_matches_scipy_random():
    rotvec = random_rotvecs(500, seed=0)
    R = axis_angle_to_rotmat(torch.tensor(rotvec))
    # torchgeometry's w = r / (theta + 1e-6) costs ~1e-6 relative, by design.
    np.testing.assert_allclose(R.numpy(), Rotation.from_rotvec(rotvec).as_matrix(), atol=2e-6)


def test_axis_angle_to_rotmat_small_angles_use_first_order_form():
    rng = np.random.default_rng(1)
    axes = rng.normal(size=(20, 3))
    rotvec = axes / np.linalg.norm(axes, axis=1, keepdims=True) * 1e-7
    R = axis_angle_to_rotmat(torch.tensor(rotvec)).numpy()
    np.testing.assert_allclose(R, Rotation.from_rotvec(rotvec).as_matrix(), atol=1e-13)
    rx, ry, rz = rotvec[0]
    np.testing.assert_array_equal(R[0], [[1, -rz, ry], [rz, 1, -rx], [-ry, rx, 1]])
    zero = axis_angle_to_rotmat(torch.zeros(1, 3))
    assert torch.equal(zero[0], torch.eye(3))


def test_axis_angle_to_rotmat_follows_spec_formula():
    """Straight re-derivation of torchgeometry's Rodrigues, both sides of the theta^2 = 1e-6 switch."""
    rng = np.random.default_rng(30)
    axes = rng.normal(size=(40, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = np.concatenate([rng.uniform(0, 3.1, 30), [1.1e-3, 1.001e-3, 0.999e-3, 0.9e-3,
                                                          1e-4, 0, 2.0, 0.5, 1e-2, 3.14159]])
    rotvec = axes * angles[:, None]
    expected = []
    for r in rotvec:
        theta2 = r @ r
        if theta2 > 1e-6:
            theta = np.sqrt(theta2)
            wx, wy, wz = r / (theta + 1e-6)
            c, s = np.cos(theta), np.sin(theta)
            v = 1 - c
            expected.append([[c + wx * wx * v, wx * wy * v - wz * s, wy * s + wx * wz * v],
                             [wz * s + wx * wy * v, c + wy * wy * v, -wx * s + wy * wz * v],
                             [-wy * s + wx * wz * v, wx * s + wy * wz * v, c + wz * wz * v]])
        else:
            rx, ry, rz = r
            expected.append([[1, -rz, ry], [rz, 1, -rx], [-ry, rx, 1]])
    out = axis_angle_to_rotmat(torch.tensor(rotvec)).numpy()
    np.testing.assert_allclose(out, np.asarray(expected), rtol=0, atol=1e-15)


def test_rotmat_to_axis_angle_matches_scipy_random():
    rotvec = random_rotvecs(500, seed=2, max_angle=np.pi - 1e-3)
    R = Rotation.from_rotvec(rotvec).as_matrix()
    aa = rotmat_to_axis_angle(torch.tensor(R)).numpy()
    np.testing.assert_allclose(aa, rotvec, atol=1e-12)
    aa32 = rotmat_to_axis_angle(torch.tensor(R, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(aa32, rotvec, atol=2e-5)


def test_rotmat_to_axis_angle_near_zero():
    rng = np.random.default_rng(3)
    axes = rng.normal(size=(20, 3))
    rotvec = axes / np.linalg.norm(axes, axis=1, keepdims=True) * 1e-7
    aa = rotmat_to_axis_angle(torch.tensor(Rotation.from_rotvec(rotvec).as_matrix())).numpy()
    np.testing.assert_allclose(aa, rotvec, rtol=1e-6, atol=1e-15)
    assert torch.equal(rotmat_to_axis_angle(torch.eye(3)[None]), torch.zeros(1, 3))


def test_rotmat_to_axis_angle_near_pi():
    rng = np.random.default_rng(4)
    axes = rng.normal(size=(50, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    rotvec = axes * (np.pi - 1e-6)
    R = Rotation.from_rotvec(rotvec).as_matrix()
    aa = rotmat_to_axis_angle(torch.tensor(R)).numpy()
    np.testing.assert_allclose(aa, rotvec, atol=1e-8)


@pytest.mark.parametrize('axis', [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (0, -1, 1)])
def test_rotmat_to_axis_angle_exactly_pi(axis):
    n = np.asarray(axis, dtype=np.float64)
    n /= np.linalg.norm(n)
    R = 2 * np.outer(n, n) - np.eye(3)  # rotation by pi about n
    aa = rotmat_to_axis_angle(torch.tensor(R)[None])[0].numpy()
    assert np.isclose(np.linalg.norm(aa), np.pi, atol=1e-12)
    assert np.allclose(np.abs(aa @ n), np.pi, atol=1e-12)  # +-pi n: both are the same rotation
    np.testing.assert_allclose(Rotation.from_rotvec(aa).as_matrix(), R, atol=1e-12)


def test_rotmat_to_axis_angle_non_orthonormal_and_nan_input():
    rng = np.random.default_rng(5)
    R = torch.tensor(rng.normal(size=(200, 3, 3)))
    aa = rotmat_to_axis_angle(R)
    assert torch.isfinite(aa).all()  # the case rule keeps t_c >= 1 - 1e-6
    bad = torch.full((1, 3, 3), float('nan'))
    assert torch.equal(rotmat_to_axis_angle(bad), torch.zeros(1, 3))


def test_rotmat_to_axis_angle_follows_spec_case_rule():
    """Straight re-derivation of torchgeometry's matrix -> quaternion case rule on arbitrary
    (non-rotation) matrices."""
    rng = np.random.default_rng(6)
    mats = rng.normal(size=(100, 3, 3))
    expected = []
    for R in mats:
        t = [1 + R[0, 0] - R[1, 1] - R[2, 2], 1 - R[0, 0] + R[1, 1] - R[2, 2],
             1 - R[0, 0] - R[1, 1] + R[2, 2], 1 + R[0, 0] + R[1, 1] + R[2, 2]]
        q = [(R[2, 1] - R[1, 2], t[0], R[1, 0] + R[0, 1], R[0, 2] + R[2, 0]),
             (R[0, 2] - R[2, 0], R[1, 0] + R[0, 1], t[1], R[2, 1] + R[1, 2]),
             (R[1, 0] - R[0, 1], R[0, 2] + R[2, 0], R[2, 1] + R[1, 2], t[2]),
             (t[3], R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1])]
        if R[2, 2] < 1e-6:
            case = 0 if R[0, 0] > R[1, 1] else 1
        else:
            case = 2 if R[0, 0] < -R[1, 1] else 3
        w, x, y, z = np.asarray(q[case]) / np.sqrt(t[case]) * 0.5
        s = np.sqrt(x * x + y * y + z * z)
        theta2 = 2 * (np.arctan2(-s, -w) if w < 0 else np.arctan2(s, w))
        k = theta2 / s if s * s > 0 else 2.0
        expected.append((x * k, y * k, z * k))
    aa = rotmat_to_axis_angle(torch.tensor(mats)).numpy()
    np.testing.assert_allclose(aa, np.asarray(expected), rtol=1e-12, atol=1e-14)


def test_axis_angle_round_trip():
    rotvec = random_rotvecs(300, seed=7, max_angle=np.pi - 1e-2)
    back = rotmat_to_axis_angle(axis_angle_to_rotmat(torch.tensor(rotvec, dtype=torch.float32)))
    np.testing.assert_allclose(back.numpy(), rotvec, atol=2e-5)


def test_conversions_agree_with_kornia_float32():
    rotvec = torch.tensor(random_rotvecs(300, seed=8, max_angle=3.0), dtype=torch.float32)
    R = axis_angle_to_rotmat(rotvec)
    torch.testing.assert_close(R, kconv.axis_angle_to_rotation_matrix(rotvec), atol=1e-5, rtol=0)
    R_ref = torch.tensor(Rotation.from_rotvec(rotvec.double().numpy()).as_matrix(),
                         dtype=torch.float32)
    torch.testing.assert_close(rotmat_to_axis_angle(R_ref),
                               kconv.rotation_matrix_to_axis_angle(R_ref), atol=1e-5, rtol=0)


def test_gradients_finite_at_exact_identity():
    weights = torch.tensor([[0.3, -1.2, 0.7]], dtype=torch.float64)
    for dtype in (torch.float32, torch.float64):
        R = torch.eye(3, dtype=dtype).repeat(2, 1, 1).requires_grad_()
        (rotmat_to_axis_angle(R) * weights.to(dtype)).sum().backward()
        assert torch.isfinite(R.grad).all()
        # log map at I: aa = vee((R - R^T) / 2)
        wx, wy, wz = weights[0].tolist()
        expected = 0.5 * torch.tensor([[0, -wz, wy], [wz, 0, -wx], [-wy, wx, 0]], dtype=dtype)
        torch.testing.assert_close(R.grad[0], expected)

        aa = torch.zeros(2, 3, dtype=dtype, requires_grad=True)
        mix = torch.arange(9, dtype=dtype).reshape(3, 3)
        (axis_angle_to_rotmat(aa) * mix).sum().backward()
        assert torch.isfinite(aa.grad).all()
        # d/dr of I + [r]_x contracted with mix
        expected = torch.tensor([mix[2, 1] - mix[1, 2], mix[0, 2] - mix[2, 0],
                                 mix[1, 0] - mix[0, 1]], dtype=dtype)
        torch.testing.assert_close(aa.grad[0], expected)


def test_gradcheck_generic_rotations():
    rotvec = torch.tensor(random_rotvecs(4, seed=9, max_angle=2.5), requires_grad=True)
    assert torch.autograd.gradcheck(axis_angle_to_rotmat, (rotvec,))
    R = torch.tensor(Rotation.from_rotvec(random_rotvecs(4, seed=10)).as_matrix(),
                     requires_grad=True)
    assert torch.autograd.gradcheck(rotmat_to_axis_angle, (R,))


# ------------------------------------------------------------------------------- 6D

def test_rot6d_interleaved_convention_and_round_trip():
    # a1 = (c0, c2, c4), a2 = (c1, c3, c5): this input is the identity only if interleaved.
    x = torch.tensor([[1.0, 0.0, 0.0, 1.0, 0.0, 0.0]])
    assert torch.equal(rot6d_to_rotmat(x)[0], torch.eye(3))
    R = Rotation.random(200, random_state=11).as_matrix()
    six = torch.tensor(R[:, :, :2].reshape(-1, 6))  # first two columns, row-major
    np.testing.assert_allclose(rot6d_to_rotmat(six).numpy(), R, atol=1e-12)


def test_rot6d_gram_schmidt_matches_spec():
    rng = np.random.default_rng(12)
    six = rng.normal(size=(50, 6))
    a1, a2 = six[:, 0::2], six[:, 1::2]
    b1 = a1 / np.linalg.norm(a1, axis=1, keepdims=True)
    u = a2 - np.sum(b1 * a2, axis=1, keepdims=True) * b1
    b2 = u / np.linalg.norm(u, axis=1, keepdims=True)
    b3 = np.cross(b1, b2)
    expected = np.stack((b1, b2, b3), axis=-1)
    out = rot6d_to_rotmat(torch.tensor(six)).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(out), 1.0, atol=1e-12)
    assert rot6d_to_rotmat(torch.tensor(six).reshape(2, 25, 6)).shape == (2, 25, 3, 3)
    assert torch.isfinite(rot6d_to_rotmat(torch.zeros(1, 6))).all()  # eps 1e-12 guard


def test_conversions_under_bfloat16_autocast():
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 24 * 6)
    feat = torch.randn(3, 8)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        six = head(feat)
        assert six.dtype == torch.bfloat16
        R_g = rot6d_to_rotmat(six.reshape(-1, 6))
        assert R_g.dtype == torch.float32
        R_rel = global_to_relative(R_g.reshape(3, 24, 3, 3), SMPL_PARENTS)
        aa = rotmat_to_axis_angle(R_rel.reshape(-1, 3, 3))
        assert aa.dtype == torch.float32
        gt = axis_angle_to_rotmat(torch.randn(72, 3))
        assert gt.dtype == torch.float32
    # The 6D conversion itself is evaluated in float32 from the bfloat16 values.
    torch.testing.assert_close(R_g, rot6d_to_rotmat(six.float().reshape(-1, 6)))
    eye = torch.eye(3).expand_as(R_g)
    torch.testing.assert_close(R_g.transpose(1, 2) @ R_g, eye, atol=1e-5, rtol=0)
    assert torch.isfinite(aa).all()
    aa.sum().backward()
    assert torch.isfinite(head.weight.grad).all()
    for dtype in (torch.float16, torch.bfloat16):
        assert axis_angle_to_rotmat(torch.zeros(2, 3, dtype=dtype)).dtype == torch.float32
        assert rotmat_to_axis_angle(torch.eye(3, dtype=dtype)[None]).dtype == torch.float32


# ------------------------------------------------------------ global <-> relative

def random_rotmats(shape, seed):
    n = int(np.prod(shape))
    R = Rotation.random(n, random_state=seed).as_matrix()
    return torch.tensor(R.reshape(*shape, 3, 3))


def test_relative_to_global_matches_hand_composition_and_loop():
    R_rel = random_rotmats((2, 24), seed=13)
    G = relative_to_global(R_rel, SMPL_PARENTS)
    # Left wrist (20): chain 0-3-6-9-13-16-18-20; left foot (10): 0-1-4-7-10.
    for joint, chain in ((20, [0, 3, 6, 9, 13, 16, 18, 20]), (10, [0, 1, 4, 7, 10]), (0, [0])):
        expected = torch.eye(3, dtype=torch.float64).expand(2, 3, 3)
        for j in chain:
            expected = expected @ R_rel[:, j]
        torch.testing.assert_close(G[:, joint], expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(G, relative_to_global_loop(R_rel, SMPL_PARENTS),
                               atol=1e-14, rtol=0)


def test_global_to_relative_inverse_and_loop():
    R_g = random_rotmats((3, 24), seed=14)
    R_rel = global_to_relative(R_g, SMPL_PARENTS)
    torch.testing.assert_close(R_rel, global_to_relative_loop(R_g, SMPL_PARENTS),
                               atol=1e-14, rtol=0)
    torch.testing.assert_close(R_rel[:, 0], R_g[:, 0])
    torch.testing.assert_close(R_rel[:, 5], R_g[:, 2].transpose(-1, -2) @ R_g[:, 5])
    torch.testing.assert_close(relative_to_global(R_rel, SMPL_PARENTS), R_g, atol=1e-12, rtol=0)
    R_rel2 = random_rotmats((3, 24), seed=15)
    torch.testing.assert_close(global_to_relative(relative_to_global(R_rel2, SMPL_PARENTS),
                                                  SMPL_PARENTS), R_rel2, atol=1e-12, rtol=0)


def test_tree_with_unordered_parents_and_invalid_tree():
    parents = [-1, 3, 0, 0, 1]  # joint 1's parent (3) has a higher index
    R_rel = random_rotmats((2, 5), seed=16)
    G = relative_to_global(R_rel, parents)
    torch.testing.assert_close(G[:, 4], R_rel[:, 0] @ R_rel[:, 3] @ R_rel[:, 1] @ R_rel[:, 4])
    torch.testing.assert_close(G, relative_to_global_loop(R_rel, parents))
    torch.testing.assert_close(global_to_relative(G, parents), R_rel, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match='kinematic tree'):
        relative_to_global(R_rel, [-1, 2, 1, 0, 0])  # cycle 1 <-> 2
    with pytest.raises(ValueError, match='entries'):
        relative_to_global(R_rel, SMPL_PARENTS)


def test_relative_to_global_gradient_flows():
    R_rel = random_rotmats((2, 24), seed=17).requires_grad_()
    relative_to_global(R_rel, SMPL_PARENTS)[:, 23].sum().backward()
    grad_norm = R_rel.grad.flatten(2).norm(dim=-1)
    on_chain = [0, 3, 6, 9, 14, 17, 19, 21, 23]
    assert (grad_norm[:, on_chain] > 0).all()
    assert (grad_norm[:, [j for j in range(24) if j not in on_chain]] == 0).all()


# ---------------------------------------------------------- kinematic tree (NumPy and torch)

def per_joint_forward_kinematics(local_rot, joints_rest, parents):
    """Reference: one joint at a time in index order (parents come first in SMPL's table)."""
    global_rot = np.empty_like(local_rot)
    global_pos = np.empty_like(joints_rest)
    global_rot[0], global_pos[0] = local_rot[0], joints_rest[0]
    for joint in range(1, len(parents)):
        parent = parents[joint]
        global_rot[joint] = global_rot[parent] @ local_rot[joint]
        offset = joints_rest[joint] - joints_rest[parent]
        global_pos[joint] = global_rot[parent] @ offset + global_pos[parent]
    return global_rot, global_pos


def test_tree_levels_of_smpl():
    levels = kinematics.tree_levels(SMPL_PARENTS)
    assert len(levels) == 8  # SMPL's deepest joints (hands) are 8 bones from the pelvis
    assert levels[0] == ([1, 2, 3], [0, 0, 0])
    assert levels[3] == ([10, 11, 12, 13, 14], [7, 8, 9, 9, 9])
    assert levels[-1] == ([22, 23], [20, 21])
    listed = sorted(j for joints, _ in levels for j in joints)
    assert listed == list(range(1, 24))  # root excluded, every other joint once
    for joints, parents in levels:
        assert parents == [SMPL_PARENTS[j] for j in joints]


@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_numpy_forward_kinematics_bit_identical_to_per_joint_loop(dtype):
    rng = np.random.default_rng(3)
    for _ in range(20):
        local_rot = Rotation.random(24, random_state=rng.integers(1 << 30)).as_matrix().astype(dtype)
        joints_rest = rng.standard_normal((24, 3)).astype(dtype)
        expected_rot, expected_pos = per_joint_forward_kinematics(local_rot, joints_rest, SMPL_PARENTS)
        global_rot, global_pos = kinematics.forward_kinematics(local_rot, joints_rest, SMPL_PARENTS)
        assert global_rot.dtype == dtype and global_pos.dtype == dtype
        np.testing.assert_array_equal(global_rot, expected_rot)
        np.testing.assert_array_equal(global_pos, expected_pos)
        skin = kinematics.skinning_transforms(global_rot, global_pos, joints_rest)
        expected_trans = expected_pos - np.einsum('kij,kj->ki', expected_rot, joints_rest)
        np.testing.assert_array_equal(skin, np.concatenate([expected_rot.reshape(-1, 9), expected_trans], 1))


def test_torch_forward_kinematics_gradients_match_per_joint_loop():
    """Values and gradients of the depth-batched torch path against a per-joint torch loop."""
    local_rot = torch.tensor(Rotation.random(3 * 24, random_state=21).as_matrix().reshape(3, 24, 3, 3),
                             requires_grad=True)
    joints_rest = torch.randn(3, 24, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2),
                              requires_grad=True)
    weights = torch.randn(3, 24, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(3))

    def per_joint_loop(rot, rest):
        g_rot, g_pos = [rot[:, 0]], [rest[:, 0]]
        for joint in range(1, 24):
            parent = SMPL_PARENTS[joint]
            g_rot.append(g_rot[parent] @ rot[:, joint])
            offset = rest[:, joint] - rest[:, parent]
            g_pos.append((g_rot[parent] @ offset[..., None])[..., 0] + g_pos[parent])
        return torch.stack(g_rot, 1), torch.stack(g_pos, 1)

    results = []
    for fk in (per_joint_loop, lambda r, j: kinematics.forward_kinematics(r, j, SMPL_PARENTS)):
        global_rot, global_pos = fk(local_rot, joints_rest)
        loss = (torch.cat([global_rot.flatten(-2), global_pos], -1) * weights).sum()
        results.append((global_rot, global_pos, *torch.autograd.grad(loss, (local_rot, joints_rest))))
    for expected, actual in zip(*results):
        torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)


def test_torch_and_numpy_forward_kinematics_agree_and_move_points_rigidly():
    rng = np.random.default_rng(4)
    local_rot = Rotation.random(2 * 24, random_state=5).as_matrix().reshape(2, 24, 3, 3)
    joints_rest = rng.standard_normal((2, 24, 3))
    rot_np, pos_np = kinematics.forward_kinematics(local_rot, joints_rest, SMPL_PARENTS)
    rot_t, pos_t = kinematics.forward_kinematics(torch.tensor(local_rot), torch.tensor(joints_rest),
                                                 SMPL_PARENTS)
    # same formulas; torch's and NumPy's 3x3 products may round differently
    np.testing.assert_allclose(rot_t.numpy(), rot_np, rtol=0, atol=1e-14)
    np.testing.assert_allclose(pos_t.numpy(), pos_np, rtol=0, atol=1e-13)
    # each bone keeps its length, and the skinning map sends every rest joint to its posed place
    for joint in range(1, 24):
        parent = SMPL_PARENTS[joint]
        np.testing.assert_allclose(np.linalg.norm(pos_np[:, joint] - pos_np[:, parent], axis=-1),
                                   np.linalg.norm(joints_rest[:, joint] - joints_rest[:, parent], axis=-1))
    skin = kinematics.skinning_transforms(rot_np, pos_np, joints_rest)
    moved = np.einsum('bkij,bkj->bki', skin[..., :9].reshape(2, 24, 3, 3), joints_rest) + skin[..., 9:]
    np.testing.assert_allclose(moved, pos_np, atol=1e-12)


def test_forward_kinematics_unordered_tree_and_gradients():
    parents = [-1, 3, 0, 0, 1]  # joint 1's parent (3) has a higher index
    local_rot = random_rotmats((2, 5), seed=18).requires_grad_()
    joints_rest = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    global_rot, global_pos = kinematics.forward_kinematics(local_rot, joints_rest, parents)
    offset = joints_rest[:, 4] - joints_rest[:, 1]
    expected_pos_4 = global_pos[:, 1] + (global_rot[:, 1] @ offset[..., None])[..., 0]
    torch.testing.assert_close(global_pos[:, 4], expected_pos_4)
    torch.testing.assert_close(global_rot, relative_to_global_loop(local_rot, parents))
    assert torch.autograd.gradcheck(
        lambda r, j: kinematics.forward_kinematics(r, j, parents)[1], (local_rot, joints_rest))
    np_rot, np_pos = kinematics.forward_kinematics(local_rot.detach().numpy(), joints_rest.detach().numpy(),
                                                   parents)
    np.testing.assert_allclose(np_pos, global_pos.detach().numpy(), rtol=0, atol=1e-13)
    np.testing.assert_allclose(kinematics.relative_rotations(np_rot, parents),
                               local_rot.detach().numpy(), rtol=0, atol=1e-12)


# ---------------------------------------------------------- similarity alignment

def similarity_reference(A, B):
    """Kabsch rotation from scipy, then the least-squares scale and translation."""
    a0, b0 = A - A.mean(0), B - B.mean(0)
    rot, _ = Rotation.align_vectors(b0, a0)
    R = rot.as_matrix()
    c = np.sum((a0 @ R.T) * b0) / np.sum(a0 ** 2)
    return c, R, B.mean(0) - c * R @ A.mean(0)


def test_rigid_align_recovers_known_similarity():
    rng = np.random.default_rng(18)
    A = rng.normal(size=(30, 3))
    R = Rotation.random(random_state=19).as_matrix()
    B = 1.7 * A @ R.T + np.array([0.3, -2.0, 5.0])
    c, R_est, t = rigid_transform_3D(A, B)
    assert np.isclose(c, 1.7, rtol=1e-12)
    np.testing.assert_allclose(R_est, R, atol=1e-12)
    np.testing.assert_allclose(t, [0.3, -2.0, 5.0], atol=1e-12)
    np.testing.assert_allclose(rigid_align(A, B), B, atol=1e-12)
    # PA error is invariant to any similarity applied to the prediction
    A2 = 0.4 * A @ Rotation.random(random_state=20).as_matrix().T - 3.0
    np.testing.assert_allclose(rigid_align(A2, B), B, atol=1e-12)


def test_rigid_align_reflection_gives_proper_rotation():
    rng = np.random.default_rng(21)
    A = rng.normal(size=(25, 3)) * [3.0, 2.0, 0.5]
    mirror = np.diag([1.0, 1.0, -1.0]) @ Rotation.random(random_state=22).as_matrix()
    B = 2.0 * A @ mirror.T + 1.0 + 0.01 * rng.normal(size=A.shape)
    c, R, t = rigid_transform_3D(A, B)
    assert np.isclose(np.linalg.det(R), 1.0)
    c_ref, R_ref, t_ref = similarity_reference(A, B)
    assert np.isclose(c, c_ref, rtol=1e-10)
    np.testing.assert_allclose(R, R_ref, atol=1e-10)
    np.testing.assert_allclose(t, t_ref, atol=1e-10)


def test_rigid_align_batch_matches_single():
    rng = np.random.default_rng(23)
    A = rng.normal(size=(6, 14, 3))
    B = rng.normal(size=(6, 14, 3))
    B[0] = 0.8 * A[0] @ Rotation.random(random_state=24).as_matrix().T + 2.0
    B[1] = A[1] * [1.0, -1.0, 1.0]  # a reflection
    out = rigid_align_batch(A, B)
    for i in range(6):
        np.testing.assert_allclose(out[i], rigid_align(A[i], B[i]), atol=1e-12)
    np.testing.assert_allclose(out[0], B[0], atol=1e-12)
    np.testing.assert_allclose(rigid_align_batch(A.astype(np.float32), B.astype(np.float32)),
                               out, atol=1e-4)


# ---------------------------------------------------------------- projection, extrinsics

def test_cam2pixel_hand_computed_and_inverse():
    X = np.array([[1.0, 2.0, 4.0], [-0.5, 0.25, 2.0]])
    px = cam2pixel(X, (100.0, 200.0), (50.0, 60.0))
    np.testing.assert_allclose(px, [[75.0, 160.0, 4.0], [25.0, 85.0, 2.0]])
    rng = np.random.default_rng(25)
    pts = rng.normal(size=(40, 3)) + [0, 0, 6.0]
    f, c = (1500.0, 1480.0), (512.0, 500.0)
    np.testing.assert_allclose(pixel2cam(cam2pixel(pts, f, c), f, c), pts, atol=1e-12)


def test_world2cam_cam2world():
    R = Rotation.from_euler('z', 90, degrees=True).as_matrix()
    t = np.array([10.0, 0.0, 0.0])
    np.testing.assert_allclose(world2cam(np.array([[1.0, 0.0, 0.0]]), R, t), [[10.0, 1.0, 0.0]],
                               atol=1e-12)
    rng = np.random.default_rng(26)
    pts = rng.normal(size=(20, 3))
    R = Rotation.random(random_state=27).as_matrix()
    t = rng.normal(size=3) * 1000
    np.testing.assert_allclose(cam2world(world2cam(pts, R, t), R, t), pts, atol=1e-9)
    np.testing.assert_allclose(world2cam(pts, R, t), pts @ R.T + t, atol=1e-9)


# ---------------------------------------------------------------- joint sets

def test_transfer_joints_by_name():
    src_name = ('Pelvis', 'Nose', 'L_Hip', 'R_Hip')
    dst_name = ('R_Hip', 'Neck', 'Pelvis', 'L_Hip')
    src = np.arange(12, dtype=np.float64).reshape(4, 3) + 1
    out = transfer_joints(src, src_name, dst_name)
    assert out.dtype == np.float32 and out.shape == (4, 3)
    np.testing.assert_array_equal(out, [src[3], [0, 0, 0], src[0], src[2]])  # Nose dropped
    valid = transfer_joints(np.ones((4, 1)), src_name, dst_name)
    np.testing.assert_array_equal(valid[:, 0], [1, 0, 1, 1])
    back = transfer_joints(out, dst_name, src_name)
    np.testing.assert_array_equal(back, [src[0], [0, 0, 0], src[2], src[3]])
    reg = transfer_joints(np.eye(4), src_name, dst_name)  # regressor-like rows
    assert reg.shape == (4, 4) and reg[0, 3] == 1 and not reg[1].any()


def test_denorm_joints_hand_made_affine():
    joints = np.array([[8.0, 16.0, 32.0], [0.0, 64.0, 1.0]], dtype=np.float32)
    keep = joints.copy()
    trans = np.array([[2.0, 0.0, 10.0], [0.0, 3.0, -5.0]])
    out = denorm_joints(joints, trans, (256, 256), (64, 64, 64))
    np.testing.assert_allclose(out, [[2 * 32 + 10, 3 * 64 - 5, 32], [10, 3 * 256 - 5, 1]])
    np.testing.assert_array_equal(joints, keep)
    out2 = denorm_joints(joints, trans, input_img_shape=(128, 128), output_hm_shape=(64, 64, 64))
    np.testing.assert_allclose(out2[0, :2], [2 * 16 + 10, 3 * 32 - 5])


# ---------------------------------------------------------------- adjacency, rotation_z

def test_adjacency_three_nodes():
    adj = build_adj(3, [(0, 1)], [(1, 2)])
    np.testing.assert_array_equal(adj, [[0, 1, 0], [1, 0, 1], [0, 1, 0]])
    norm = normalize_adj(adj)  # degrees of A + I: 2, 3, 2
    r6 = 1 / np.sqrt(6)
    expected = [[1 / 2, r6, 0], [r6, 1 / 3, r6], [0, r6, 1 / 2]]
    np.testing.assert_allclose(norm, expected, rtol=1e-15, atol=0)
    assert norm.dtype == np.float64


def test_adjacency_graph15_degrees():
    skeleton = ((0, 1), (1, 3), (3, 5), (0, 2), (2, 4), (4, 6), (0, 7), (7, 8), (7, 9),
                (9, 11), (11, 13), (7, 10), (10, 12), (12, 14))
    flip = ((1, 2), (3, 4), (5, 6), (9, 10), (11, 12), (13, 14))
    norm = normalize_adj(build_adj(15, skeleton, flip))
    degrees = np.array([4, 4, 4, 4, 4, 3, 3, 5, 2, 4, 4, 4, 4, 3, 3])
    np.testing.assert_allclose(np.diag(norm), 1 / degrees, rtol=1e-15)
    assert np.isclose(norm[0, 7], 1 / np.sqrt(20))
    assert np.isfinite(norm).all() and np.array_equal(norm, norm.T)


def test_rotation_z():
    np.testing.assert_array_equal(rotation_z(0), np.eye(3))
    for deg in (30.0, -75.0, 90.0):
        ref = Rotation.from_euler('z', -deg, degrees=True).as_matrix()
        np.testing.assert_allclose(rotation_z(deg), ref, atol=1e-7)
    assert rotation_z(90).dtype == np.float32
    np.testing.assert_allclose(rotation_z(90) @ [1, 0, 0], [0, -1, 0], atol=1e-7)
