"""Unit tests of the training-sample steps (data/sample_steps.py, data/smpl_targets.py,
data/annotations.py).

References are straight-line re-derivations of docs/METHOD.md, "Training samples", written
here, scipy's Rotation for axis-angle algebra, and the PyPI smplpytorch layer for meshes.
"""
import pickle

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from torch.utils.data import default_collate

from common.options import GeometryOptions
from common.utils.joints import COCO17, JointSet, add_pelvis
from common.utils.preprocessing import in_bounds_mask, normalise_depth
from data import annotations, sample_steps, smpl_targets
from data.dataset import body_model
from data.sample_steps import CropState, Neighbours, SynthesisSpec
from data.smpl_targets import SmplFit
from main.config import cfg

GEOMETRY = GeometryOptions(input_img_shape=(256, 256), output_hm_shape=(64, 64, 64), bbox_3d_size=2.0,
                           camera_3d_size=2.5, focal=(5000.0, 5000.0), sigma=2.5)

MIRROR = np.diag([-1.0, 1.0, 1.0])
POSE_PAIRS = ((1, 2), (4, 5), (7, 8), (10, 11), (13, 14), (16, 17), (18, 19), (20, 21), (22, 23))
H36M_NAMES = ('Pelvis', 'R_Hip', 'R_Knee', 'R_Ankle', 'L_Hip', 'L_Knee', 'L_Ankle', 'Torso', 'Neck', 'Nose',
              'Head_top', 'L_Shoulder', 'L_Elbow', 'L_Wrist', 'R_Shoulder', 'R_Elbow', 'R_Wrist')


def crop_state(img2bb, do_flip=False, img_width=320, rot=0.0):
    """A training ``CropState`` (bb2img is not read by the steps under test)."""
    return CropState(np.asarray(img2bb, np.float32), np.zeros((2, 3), np.float32), rot, do_flip, img_width)


@pytest.fixture
def smpl(smpl_cfg):
    return body_model(smpl_cfg.data_options())


def partner(j):
    for a, b in POSE_PAIRS:
        if j == a:
            return b
        if j == b:
            return a
    return j


# ------------------------------------------------------------------ depth and geometry
def test_depth_normalisation_worked_values():
    # 1 m in front of the root -> 0, root -> 32, 0.999 m behind -> just under 64 (bbox_3d_size 2 m).
    z_mm = normalise_depth(np.array([-1000.0, 0.0, 999.0, 1000.0]), 1000, GEOMETRY)
    np.testing.assert_allclose(z_mm, [0.0, 32.0, 63.968, 64.0], atol=1e-4)
    z_m = normalise_depth(np.array([-1.0, 0.0, 0.999]), 1, GEOMETRY)
    np.testing.assert_allclose(z_m, [0.0, 32.0, 63.968], atol=1e-4)
    joints = np.array([[10, 10, v] for v in z_mm], dtype=np.float32)
    assert in_bounds_mask(joints, GEOMETRY.output_hm_shape, check_depth=True)[:, 0].tolist() == [1, 1, 1, 0]


def test_add_pelvis_is_hip_midpoint_with_product_validity():
    joints = np.zeros((17, 3), np.float32)
    joints[11] = [10, 20, 2]   # L_Hip
    joints[12] = [30, 40, 1]   # R_Hip
    out = add_pelvis(joints, COCO17.names)
    assert out.shape == (18, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[17], [20, 30, 2])
    joints[12, 2] = 0
    assert add_pelvis(joints, COCO17.names)[17, 2] == 0
    # The midpoint keeps a float64 input's precision.
    precise = np.zeros((17, 3))
    precise[11], precise[12] = [0.1, 0.2, 0.3], [0.2, 0.4, 0.7]
    out = add_pelvis(precise, COCO17.names)
    assert out.dtype == np.float64 and out[17].tolist() == [(0.1 + 0.2) / 2, (0.2 + 0.4) / 2, 0.3 * 0.7]


def test_neighbours_by_iou_threshold():
    # Box 1 overlaps box 0 with IoU 50/150 = 0.33; box 2 with IoU 5/195 ~ 0.026 (< 0.1).
    boxes = [np.array([0, 0, 10, 10.0]), np.array([5, 0, 10, 10.0]), np.array([9.5, 0, 10, 10.0])]
    assert annotations.find_neighbours(boxes, 0) == [1]
    assert annotations.find_neighbours(boxes, 1) == [0, 2]
    people = [{'tight_bbox': b} for b in boxes]
    joints = [np.full((18, 3), i, np.float32) for i in range(3)]
    annotations.attach_neighbours(people, joints)
    assert [p['num_overlap'] for p in people] == [1, 2, 1]
    np.testing.assert_array_equal(people[1]['near_joints'], np.stack([joints[0], joints[2]]))
    lonely = [{'tight_bbox': boxes[0]}]
    annotations.attach_neighbours(lonely, joints[:1])
    assert lonely[0]['num_overlap'] == 0 and lonely[0]['near_joints'].shape == (1, 18, 3)
    assert not lonely[0]['near_joints'].any()


def test_neighbours_sgre_quirk_and_fix():
    img2bb = np.array([[2.0, 0, 5], [0, 2.0, -3]], np.float32)
    near = np.zeros((1, 18, 3), np.float32)
    near[0, 5] = [10, 20, 1]    # L_Shoulder
    near[0, 6] = [30, 40, 0]    # R_Shoulder, not annotated
    width = 100
    flipped = crop_state(img2bb, do_flip=True, img_width=width)
    out = sample_steps.process_neighbours(near, 1, flipped)
    # SGRE: not mirrored, validity forced to 1.
    np.testing.assert_allclose(out[0, 5], [25, 37, 1])
    np.testing.assert_allclose(out[0, 6], [65, 77, 1])
    assert (out[..., 2] == 1).all()
    fixed = sample_steps.process_neighbours(near, 1, flipped, fix_flip=True)
    # Mirrored (u -> 99 - u) and L/R swapped, own validity kept.
    np.testing.assert_allclose(fixed[0, 6], [2 * (99 - 10) + 5, 37, 1])
    np.testing.assert_allclose(fixed[0, 5], [2 * (99 - 30) + 5, 77, 0])
    assert not sample_steps.process_neighbours(near, 0, crop_state(img2bb, img_width=width)).any()
    assert sample_steps.process_neighbours(near, 0, crop_state(img2bb, img_width=width)).shape == (1, 18, 3)


# --------------------------------------------------------------------- SMPL pose algebra
def test_flip_smpl_pose_mirrors_every_rotation():
    rng = np.random.default_rng(3)
    pose = rng.normal(0, 0.6, 72).astype(np.float32)
    flipped = smpl_targets.flip_smpl_pose(pose).reshape(24, 3)
    source = pose.reshape(24, 3)
    for j in range(24):
        expected = MIRROR @ Rotation.from_rotvec(source[partner(j)]).as_matrix() @ MIRROR
        np.testing.assert_allclose(Rotation.from_rotvec(flipped[j]).as_matrix(), expected, atol=1e-5)
    np.testing.assert_allclose(smpl_targets.flip_smpl_pose(smpl_targets.flip_smpl_pose(pose)), pose)
    np.testing.assert_allclose(pose, source.reshape(-1))   # input untouched


def test_rotate_root_pose_canonicalises_and_rotates():
    pose = np.zeros(72, np.float32)
    axis = np.array([1.0, 2.0, -0.5]) / np.linalg.norm([1.0, 2.0, -0.5])
    pose[:3] = axis * 4.0              # angle > pi: same rotation as axis * (4 - 2pi)
    pose[3:6] = [0.1, 0.2, 0.3]
    out = smpl_targets.rotate_root_pose(pose, 0.0)
    assert np.linalg.norm(out[:3]) <= np.pi + 1e-6
    np.testing.assert_allclose(Rotation.from_rotvec(out[:3]).as_matrix(),
                               Rotation.from_rotvec(pose[:3]).as_matrix(), atol=1e-5)
    np.testing.assert_array_equal(out[3:], pose[3:])
    out30 = smpl_targets.rotate_root_pose(pose, 30.0)
    expected = Rotation.from_euler('z', -30, degrees=True).as_matrix() @ Rotation.from_rotvec(pose[:3]).as_matrix()
    np.testing.assert_allclose(Rotation.from_rotvec(out30[:3]).as_matrix(), expected, atol=1e-5)


def test_flip_translation_moves_root_to_mirrored_column():
    root = np.array([0.3, -0.2, 4.0])
    focal, princpt, width = (500.0, 510.0), (150.0, 120.0), 320
    u = root[0] / root[2] * focal[0] + princpt[0]
    shifted = root[0] + smpl_targets.flip_translation_shift(root, focal, princpt, width)
    assert shifted / root[2] * focal[0] + princpt[0] == pytest.approx(width - 1 - u)


def test_fitting_error_translation_only_alignment():
    rng = np.random.default_rng(0)
    mesh = rng.normal(size=(50, 3)) * 100
    regressor = rng.random((4, 50))
    regressor /= regressor.sum(1, keepdims=True)
    joints = regressor @ mesh
    assert smpl_targets.fitting_error(joints + [5.0, -7.0, 30.0], joints) == pytest.approx(0, abs=1e-3)
    moved = joints.copy()
    moved[2, 0] += 40.0            # one joint 40 mm off; the mean shift spreads 10 mm to every joint
    expected = (3 * 10.0 + 30.0) / 4
    assert smpl_targets.fitting_error(moved, joints) == pytest.approx(expected, rel=1e-4)
    assert smpl_targets.fitting_error(moved, joints, joint_idx=[0, 1, 3]) == pytest.approx(0, abs=1e-3)


def test_sparse_regressor_keeps_only_nonzero_columns():
    regressor = np.zeros((3, 10))
    regressor[0, [2, 7]] = (0.25, 0.75)
    regressor[2, 4] = -1.0
    sparse = smpl_targets.SparseRegressor(regressor)
    assert sparse.vertex_ids.tolist() == [2, 4, 7] and len(sparse) == 3
    mesh = np.random.default_rng(1).normal(size=(10, 3))
    np.testing.assert_allclose(sparse.weights @ mesh[sparse.vertex_ids], regressor @ mesh, rtol=1e-15, atol=0)


# ------------------------------------------------------------------------ GT joints
def test_process_gt_joints_3d_flip_crop_depth():
    names = ('Pelvis', 'L_Hip', 'R_Hip', 'Head_top')
    joint_cam = np.array([[100, 200, 4000], [180, 210, 4100], [20, 190, 3900], [100, -600, 5200]], np.float32)
    f, c, width = np.array([1000.0, 1000.0]), np.array([160.0, 120.0]), 320
    joint_img = np.concatenate([joint_cam[:, :2] / joint_cam[:, 2:] * f + c, joint_cam[:, 2:]], 1)
    img2bb = np.array([[0.5, 0, 10], [0, 0.5, 20]], np.float32)
    joint_set = JointSet('four', names, flip_pairs=((1, 2),), root=0)
    out = sample_steps.process_gt_joints(joint_img, np.ones((4, 1)), joint_set,
                                         crop_state(img2bb, do_flip=True, img_width=width), GEOMETRY,
                                         joint_cam=joint_cam)
    order = [0, 2, 1, 3]                     # after flipping, row 1 holds R_Hip's data, etc.
    u = width - 1 - joint_img[order, 0]
    x_hm = (0.5 * u + 10) / 4
    y_hm = (0.5 * joint_img[order, 1] + 20) / 4
    z_hm = ((joint_cam[order, 2] - 4000) / 1000 + 1) / 2 * 64
    smpl_rows = [0, 1, 2, 29]
    np.testing.assert_allclose(out['joint_img'][smpl_rows], np.stack([x_hm, y_hm, z_hm], 1), atol=1e-4)
    cam = (joint_cam[order] - joint_cam[0]) * [-1, 1, 1] / 1000
    np.testing.assert_allclose(out['joint_cam'][smpl_rows], cam, atol=1e-6)
    # Head_top 1.2 m behind the root lies outside the +-1 m depth range.
    assert out['joint_trunc'][smpl_rows, 0].tolist() == [1, 1, 1, 0]
    assert out['joint_valid'][smpl_rows, 0].tolist() == [1, 1, 1, 1]
    others = np.setdiff1d(np.arange(30), smpl_rows)
    assert not out['joint_img'][others].any() and not out['joint_valid'][others].any()
    np.testing.assert_allclose(out['crop_joints'][:, 0], 0.5 * u + 10, atol=1e-4)


def test_synthesize_input_pose_replaces_only_shared_joints(monkeypatch):
    seen = {}

    def fake_synthesiser(joints, near_joints, tight_bbox, num_overlap, img2bb, rng):
        seen['joints'] = joints.copy()
        out = joints.copy()
        out[:17, 0] += 100
        return out

    monkeypatch.setattr(sample_steps, 'synthesize_pose', fake_synthesiser)
    crop = np.arange(17 * 3, dtype=np.float32).reshape(17, 3)
    shared = (1, 2, 3, 4, 5, 6, 9, 11, 12, 13, 14, 15, 16)
    gt = {'crop_joints': crop, 'joint_valid_src': np.zeros((17, 1))}
    spec = SynthesisSpec(H36M_NAMES, COCO17.names, shared, force_valid=True)
    out = sample_steps.synthesize_input_pose(gt, spec, Neighbours(np.zeros((1, 17, 3)), 0), [0, 0, 10, 10],
                                             crop_state(np.eye(2, 3)), None)
    # 3D sets: every H36M joint counts as valid; COCO eyes and ears have no source and stay invalid zeros.
    valid = seen['joints'][:, 2]
    assert valid[[0] + list(range(5, 17))].tolist() == [1] * 13 and not seen['joints'][1:5].any()
    expected = crop[:, :2].copy()
    expected[list(shared), 0] += 100
    np.testing.assert_allclose(out, expected)


# ------------------------------------------------------------------- SMPL-fit targets
def _reference_regressor(smpl_dir):
    with open(smpl_dir / 'basicModel_neutral_lbs_10_207_0_v1.0.0.pkl', 'rb') as f:
        model = pickle.load(f, encoding='latin1')
    j_reg = model['J_regressor']
    j_reg = np.asarray(j_reg.todense() if hasattr(j_reg, 'todense') else j_reg, dtype=np.float64)
    one_hot = np.zeros((5, 6890))
    one_hot[np.arange(5), [331, 2802, 6262, 3489, 3990]] = 1
    extra = np.load(smpl_dir / 'J_regressor_extra.npy')
    return np.concatenate([j_reg, one_hot, extra[3:4]], 0)


@pytest.fixture(scope='module')
def reference_smpl(synthetic_smpl_dir):
    from smplpytorch.pytorch.smpl_layer import SMPL_Layer
    layer = SMPL_Layer(gender='neutral', model_root=str(synthetic_smpl_dir))
    regressor = _reference_regressor(synthetic_smpl_dir)

    def forward(pose, shape, trans):
        with torch.no_grad():
            verts, _ = layer(torch.tensor(np.asarray(pose)[None], dtype=torch.float32),
                             torch.tensor(np.asarray(shape)[None], dtype=torch.float32),
                             torch.tensor(np.asarray(trans)[None], dtype=torch.float32))
        verts = verts[0].double().numpy()
        return verts, regressor @ verts
    return forward


def _reference_flip(pose):
    pose = np.asarray(pose, np.float64).reshape(24, 3)
    out = pose[[partner(j) for j in range(24)]].copy()
    out[:, 1:] *= -1
    return out.reshape(-1)


def _image_targets(joints, focal, princpt, img2bb, unit):
    u = joints[:, 0] / joints[:, 2] * focal[0] + princpt[0]
    v = joints[:, 1] / joints[:, 2] * focal[1] + princpt[1]
    crop = np.stack([u, v], 1) @ np.asarray(img2bb, np.float64)[:, :2].T + np.asarray(img2bb, np.float64)[:, 2]
    z = ((joints[:, 2] - joints[0, 2]) / unit + 1) / 2 * 64
    return np.concatenate([crop / 4, z[:, None]], 1)


def _random_fit(rng):
    pose = rng.normal(0, 0.25, 72)
    pose[:3] = Rotation.from_euler('xyz', [np.pi + 0.2, 0.4, 0.1]).as_rotvec()
    return {'pose': pose.astype(np.float32), 'shape': rng.uniform(-1, 1, 10).astype(np.float32),
            'trans': np.array([0.2, 0.1, 3.5], np.float32)}


@pytest.mark.parametrize('do_flip', [False, True])
@pytest.mark.parametrize('variant', ['NeuralAnnot', 'camera_mm'])
def test_camera_frame_fit_targets_match_reference(smpl, reference_smpl, variant, do_flip):
    rng = np.random.default_rng(7)
    fit = _random_fit(rng)
    cam = {'focal': np.array([600.0, 610.0], np.float32), 'princpt': np.array([170.0, 115.0], np.float32)}
    width = 320
    img2bb = np.array([[0.8, 0.0, -40.0], [0.0, 0.8, 10.0]], np.float32)
    out = smpl_targets.smpl_fit_targets(SmplFit(fit, cam, variant), crop_state(img2bb, do_flip, width), GEOMETRY,
                                        smpl)

    pose = _reference_flip(fit['pose']) if do_flip else fit['pose'].astype(np.float64)
    verts, joints = reference_smpl(pose, fit['shape'], fit['trans'])
    if do_flip:
        root = joints[0]
        shift = 2 * ((width - 1) / 2 - cam['princpt'][0]) / cam['focal'][0] * root[2] - 2 * root[0]
        verts[:, 0] += shift
        joints[:, 0] += shift
    unit = 1000.0 if variant == 'camera_mm' else 1.0
    np.testing.assert_allclose(out['mesh_cam'], verts * unit, atol=2e-5 * unit)
    np.testing.assert_allclose(out['joint_img'], _image_targets(joints, cam['focal'], cam['princpt'], img2bb, 1.0),
                               atol=2e-3)
    np.testing.assert_allclose(out['joint_cam'], joints - joints[0], atol=2e-5)
    np.testing.assert_allclose(out['pose'][3:], pose[3:], atol=1e-6)
    np.testing.assert_allclose(Rotation.from_rotvec(out['pose'][:3]).as_matrix(),
                               Rotation.from_rotvec(pose[:3]).as_matrix(), atol=1e-5)
    np.testing.assert_allclose(out['shape'], fit['shape'])
    inside = (out['joint_img'] >= 0).all(1) & (out['joint_img'] < 64).all(1)
    np.testing.assert_array_equal(out['joint_trunc'][:, 0], inside.astype(np.float32))
    if do_flip:
        # The flipped fit's pelvis projects onto the mirrored column.
        _, plain = reference_smpl(fit['pose'], fit['shape'], fit['trans'])
        u_plain = plain[0, 0] / plain[0, 2] * cam['focal'][0] + cam['princpt'][0]
        root = out['joint_cam_abs'][0] / unit
        assert root[0] / root[2] * cam['focal'][0] + cam['princpt'][0] == pytest.approx(width - 1 - u_plain, abs=1e-2)


@pytest.mark.parametrize('do_flip', [False, True])
def test_world_frame_fit_targets_match_reference(smpl, reference_smpl, do_flip):
    rng = np.random.default_rng(11)
    fit = _random_fit(rng)
    fit['pose'][:3] = [0.1, -0.3, 0.2]
    fit['trans'] = np.array([0.3, -0.2, 0.9], np.float32)
    rotation = Rotation.from_euler('xyz', [-1.4, 0.3, 0.2]).as_matrix()
    cam = {'R': rotation.astype(np.float32), 't': np.array([-200.0, 300.0, 4500.0], np.float32),
           'focal': np.array([1145.0, 1144.0], np.float32), 'princpt': np.array([512.0, 515.0], np.float32)}
    width, img2bb = 1000, np.array([[0.4, 0.0, -100.0], [0.0, 0.4, -80.0]], np.float32)
    out = smpl_targets.smpl_fit_targets(SmplFit(fit, cam, 'H36M'), crop_state(img2bb, do_flip, width), GEOMETRY,
                                        smpl)

    pose = fit['pose'].astype(np.float64).copy()
    pose[:3] = Rotation.from_matrix(rotation @ Rotation.from_rotvec(pose[:3]).as_matrix()).as_rotvec()
    if do_flip:
        pose = _reference_flip(pose)
    verts, joints = reference_smpl(pose, fit['shape'], np.zeros(3))
    offset = rotation @ fit['trans'] + cam['t'] / 1000 - joints[0] + rotation @ joints[0]
    verts, joints = verts + offset, joints + offset
    if do_flip:
        shift = 2 * ((width - 1) / 2 - cam['princpt'][0]) / cam['focal'][0] * joints[0, 2] - 2 * joints[0, 0]
        verts[:, 0] += shift
        joints[:, 0] += shift
    np.testing.assert_allclose(out['mesh_cam'], verts * 1000, atol=0.05)
    np.testing.assert_allclose(out['joint_img'], _image_targets(joints, cam['focal'], cam['princpt'], img2bb, 1.0),
                               atol=2e-3)
    np.testing.assert_allclose(out['joint_cam'], joints - joints[0], atol=5e-5)
    np.testing.assert_allclose(Rotation.from_rotvec(out['pose'][:3]).as_matrix(),
                               Rotation.from_rotvec(pose[:3]).as_matrix(), atol=1e-5)


def test_shape_sanitising_keeps_mesh_of_original_betas(smpl, reference_smpl):
    fit = _random_fit(np.random.default_rng(5))
    fit['shape'][3] = -3.2
    cam = {'focal': np.array([600.0, 600.0]), 'princpt': np.array([160.0, 120.0])}
    out = smpl_targets.smpl_fit_targets(SmplFit(fit, cam, 'NeuralAnnot'), crop_state(np.eye(2, 3)), GEOMETRY, smpl)
    assert not out['shape'].any()
    verts, _ = reference_smpl(fit['pose'], fit['shape'], fit['trans'])
    np.testing.assert_allclose(out['mesh_cam'], verts, atol=2e-5)


def test_assembled_sample_collates_to_float32_masks(smpl):
    gt = {'joint_img': np.zeros((30, 3), np.float32), 'joint_trunc': np.ones((30, 1), np.float32),
          'joint_valid': np.ones((30, 1), np.float32), 'joint_cam': np.zeros((30, 3), np.float32)}
    samples = [sample_steps.assemble_sample(np.zeros((3, 256, 256), np.float32), np.zeros((30, 2)), gt,
                                            smpl_targets.dummy_fit_targets(smpl), is_valid_fit=bool(i), is_3d=False)
               for i in range(2)]
    inputs, targets, meta = default_collate(samples)
    assert meta['is_valid_fit'].dtype == torch.float32 and meta['is_valid_fit'].shape == (2,)
    assert meta['is_valid_fit'].tolist() == [0.0, 1.0] and meta['is_3D'].tolist() == [0.0, 0.0]
    assert inputs['joints'].shape == (2, 30, 2) and inputs['joints'].dtype == torch.float32
    valid = meta['fit_param_valid'][0].reshape(24, 3)
    assert valid[[7, 8, 10, 11, 20, 21, 22, 23]].sum() == 0 and valid.sum() == 16 * 3
    assert set(targets) == {'orig_joint_img', 'fit_joint_img', 'orig_joint_cam', 'fit_joint_cam',
                            'pose_param', 'shape_param'}


@pytest.mark.parametrize('variant,do_flip', [('H36M', True), ('camera_mm', False)])
def test_support_only_fit_targets_equal_the_full_mesh_path(smpl, variant, do_flip):
    """Training skips the full mesh: skinning only the regressors' vertices gives the same
    targets, and the regressed fitting-error joints equal ``regressor @ mesh_cam``."""
    fit = _random_fit(np.random.default_rng(4))
    cam = {'focal': np.array([900.0, 905.0], np.float32), 'princpt': np.array([150.0, 140.0], np.float32),
           'R': Rotation.from_euler('xyz', [-1.3, 0.2, 0.1]).as_matrix().astype(np.float32),
           't': np.array([100.0, -50.0, 4000.0], np.float32)}
    img2bb = np.array([[0.7, 0.0, -30.0], [0.0, 0.7, 12.0]], np.float32)
    dense = np.random.default_rng(5).random((17, 6890)) * (np.random.default_rng(6).random(6890) < 0.05)
    regressor = smpl_targets.SparseRegressor(dense)
    fit, crop = SmplFit(fit, cam, variant), crop_state(img2bb, do_flip, 320, rot=20.0)
    full = smpl_targets.smpl_fit_targets(fit, crop, GEOMETRY, smpl, regressor=regressor, with_mesh=True)
    fast = smpl_targets.smpl_fit_targets(fit, crop, GEOMETRY, smpl, regressor=regressor, with_mesh=False)
    assert fast['mesh_cam'] is None and full['mesh_cam'].shape == (6890, 3)
    np.testing.assert_allclose(full['regressor_joints'], dense @ full['mesh_cam'].astype(np.float64), rtol=1e-12)
    np.testing.assert_allclose(fast['regressor_joints'], full['regressor_joints'], rtol=1e-12)
    for key in ('joint_img', 'joint_trunc', 'joint_cam', 'pose', 'shape', 'joint_cam_abs'):
        np.testing.assert_allclose(fast[key], full[key], rtol=1e-6, atol=1e-6, err_msg=key)
    assert smpl_targets.smpl_fit_targets(fit, crop, GEOMETRY, smpl)['regressor_joints'] is None


def test_neutral_evaluator_matches_the_shared_layer(smpl):
    fit = _random_fit(np.random.default_rng(2))
    with torch.no_grad():
        verts, _ = smpl.layer['neutral'](torch.tensor(fit['pose'][None]), torch.tensor(fit['shape'][None]),
                                         torch.tensor(fit['trans'][None]))
    verts = verts[0].double().numpy()
    joints = smpl.joint_regressor.astype(np.float64) @ verts
    mesh, full_joints = smpl_targets.smpl_mesh_and_joints(fit['pose'], fit['shape'], fit['trans'], smpl)
    _, support_joints = smpl_targets.smpl_mesh_and_joints(fit['pose'], fit['shape'], fit['trans'], smpl,
                                                          with_mesh=False)
    assert mesh.shape == (6890, 3) and support_joints.shape == (30, 3)
    np.testing.assert_allclose(mesh, verts, atol=1e-5)
    np.testing.assert_allclose(full_joints, joints, atol=1e-5)
    np.testing.assert_allclose(support_joints, joints, atol=1e-5)
