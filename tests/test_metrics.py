"""Evaluation errors (common/utils/metrics.py) against hand-computed values and an
independent Procrustes reference built on scipy.linalg.orthogonal_procrustes."""
import numpy as np
import pytest
from scipy.linalg import orthogonal_procrustes
from scipy.spatial.transform import Rotation

from common.utils.metrics import joint_error, mean_point_distance, regress_joints, vertex_error


def similarity(points, scale, rotvec, shift):
    """scale * R(rotvec) @ p + shift for every point of (N, 3)."""
    return scale * points @ Rotation.from_rotvec(rotvec).as_matrix().T + shift


def reference_pa_error(pred, gt):
    """Mean distance after the least-squares similarity map of pred onto gt (one sample)."""
    pred_c, gt_c = pred - pred.mean(0), gt - gt.mean(0)
    rotation, singular_sum = orthogonal_procrustes(pred_c, gt_c)   # pred_c @ rotation ~ gt_c
    scale = singular_sum / (pred_c ** 2).sum()
    aligned = scale * pred_c @ rotation + gt.mean(0)
    return np.linalg.norm(aligned - gt, axis=1).mean()


def test_hand_computed_mpjpe_values():
    gt = np.array([[[0.0, 0, 0], [100, 0, 0], [0, 100, 0]]])
    pred = gt + [10.0, -20.0, 5.0]                   # a pure translation
    assert joint_error(pred, gt, 'root', root=0)[0] == pytest.approx(0.0)
    assert joint_error(pred, gt, 'none')[0] == pytest.approx(np.sqrt(100 + 400 + 25))
    moved = gt.copy()
    moved[0, 2] += [30.0, 40.0, 0.0]                 # one joint 50 mm off
    assert joint_error(moved, gt, 'root', root=0)[0] == pytest.approx(50.0 / 3)
    # Root-relative first, then only the subset is averaged.
    assert joint_error(moved, gt, 'root', root=0, subset=[1, 2])[0] == pytest.approx(25.0)
    # Moving the root moves every root-relative joint: 3 x 0 for the root, 2 x 50 for the others.
    shifted_root = gt.copy()
    shifted_root[0, 0] += [30.0, 40.0, 0.0]
    assert joint_error(shifted_root, gt, 'root', root=0)[0] == pytest.approx(100.0 / 3)
    assert joint_error(shifted_root, gt, 'root', root=0, subset=[1, 2])[0] == pytest.approx(50.0)


def test_batched_results_equal_per_sample_results():
    rng = np.random.default_rng(0)
    gt = rng.normal(0, 300, (5, 14, 3))
    pred = gt + rng.normal(0, 40, gt.shape)
    for alignment in ('none', 'root', 'procrustes'):
        batched = joint_error(pred, gt, alignment, root=3)
        single = [joint_error(pred[i:i + 1], gt[i:i + 1], alignment, root=3)[0] for i in range(5)]
        np.testing.assert_allclose(batched, single, rtol=1e-12)
        assert batched.shape == (5,) and batched.dtype == np.float64


def test_pa_mpjpe_matches_the_scipy_reference_and_ignores_similarity_transforms():
    rng = np.random.default_rng(1)
    gt = rng.normal(0, 250, (4, 17, 3))
    noisy = gt + rng.normal(0, 30, gt.shape)
    pa = joint_error(noisy, gt, 'procrustes', root=0)
    np.testing.assert_allclose(pa, [reference_pa_error(noisy[i], gt[i]) for i in range(4)], rtol=1e-9)
    assert (pa < joint_error(noisy, gt, 'root', root=0)).all()
    transformed = np.stack([similarity(noisy[i], 0.37 + i, rng.normal(0, 1.5, 3), rng.normal(0, 2000, 3))
                            for i in range(4)])
    np.testing.assert_allclose(joint_error(transformed, gt, 'procrustes', root=0), pa, rtol=1e-7)
    # A similarity copy of the ground truth has no error at all.
    exact = np.stack([similarity(gt[i], 2.5, [0.3, -1.0, 2.0], [5.0, 6.0, 7.0]) for i in range(4)])
    np.testing.assert_allclose(joint_error(exact, gt, 'procrustes', root=0), 0.0, atol=1e-8)
    # Not invariant to a non-uniform scale.
    squashed = gt * [1.0, 1.0, 0.5]
    assert (joint_error(squashed, gt, 'procrustes', root=0) > 1.0).all()


def test_procrustes_uses_only_the_subset():
    rng = np.random.default_rng(2)
    gt = rng.normal(0, 200, (1, 6, 3))
    pred = similarity(gt[0], 1.3, [0.2, 0.1, -0.4], [1.0, 2.0, 3.0])[None]
    pred[0, 5] += 500.0                              # an outlier outside the subset
    assert joint_error(pred, gt, 'procrustes', root=0, subset=[0, 1, 2, 3, 4])[0] == pytest.approx(0, abs=1e-8)
    assert joint_error(pred, gt, 'procrustes', root=0)[0] > 10


def test_mpvpe_root_alignment_with_regressor_weights():
    rng = np.random.default_rng(3)
    gt = rng.normal(0, 0.3, (2, 50, 3))
    weights = np.zeros(50)
    weights[[4, 9]] = 0.5                             # the root point is the midpoint of vertices 4 and 9
    pred = gt + [0.1, 0.2, -0.3]
    np.testing.assert_allclose(vertex_error(pred, gt, 'root', root_weights=weights), 0.0, atol=1e-12)
    np.testing.assert_allclose(vertex_error(pred, gt, 'none'), np.sqrt(0.01 + 0.04 + 0.09))
    bent = gt.copy()
    bent[:, 4] += [0.0, 0.0, 0.2]                     # moves the root by 0.1 and vertex 4 by 0.2
    expected = (49 * 0.1 + 0.1) / 50
    np.testing.assert_allclose(vertex_error(bent, gt, 'root', root_weights=weights), expected, rtol=1e-9)
    scaled = np.stack([similarity(gt[i], 1.7, [0.5, 0.5, 0.5], [1.0, 0.0, 0.0]) for i in range(2)])
    np.testing.assert_allclose(vertex_error(scaled, gt, 'procrustes', root_weights=weights), 0.0, atol=1e-9)
    with pytest.raises(ValueError, match='root_weights'):
        vertex_error(pred, gt, 'root')


def test_units_and_helpers():
    gt = np.array([[[0.0, 0.0, 0.0], [0.1, 0.0, 0.0]]])
    pred = gt + [[0.0, 0.0, 0.0], [0.0, 0.003, 0.004]]
    # Unit in = unit out: metres give metres, the same poses in mm give mm.
    assert joint_error(pred, gt, 'root')[0] == pytest.approx(0.0025)
    assert joint_error(pred * 1000, gt * 1000, 'root')[0] == pytest.approx(2.5)
    assert mean_point_distance(pred, gt)[0] == pytest.approx(0.0025)
    regressor = np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    meshes = np.arange(18, dtype=np.float64).reshape(2, 3, 3)
    np.testing.assert_allclose(regress_joints(regressor, meshes)[1], [[10.5, 11.5, 12.5], [15, 16, 17]])
    with pytest.raises(ValueError, match='alignment'):
        joint_error(pred, gt, 'rigid')
