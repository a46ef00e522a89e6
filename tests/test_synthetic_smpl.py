"""The synthetic body model: file format, geometry, mirror symmetry, determinism."""
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
import torch

from common.utils.smpl_layer import SMPLLayer
from tool.make_synthetic_smpl import main as cli_main
from tool.synthetic.body_model import MIRROR_INDEX_FILE, build_synthetic_model

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL_FILES = {'neutral': 'basicModel_neutral_lbs_10_207_0_v1.0.0.pkl',
               'male': 'basicModel_m_lbs_10_207_0_v1.0.0.pkl',
               'female': 'basicModel_f_lbs_10_207_0_v1.0.0.pkl'}
SMPL_PARENTS = [4294967295, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
# SMPL-24 flip pairs (left/right joints within the 24 pose joints).
FLIP24 = list(range(24))
for a, b in ((1, 2), (4, 5), (7, 8), (10, 11), (13, 14), (16, 17), (18, 19), (20, 21), (22, 23)):
    FLIP24[a], FLIP24[b] = b, a
H36M = ('Pelvis', 'R_Hip', 'R_Knee', 'R_Ankle', 'L_Hip', 'L_Knee', 'L_Ankle', 'Torso', 'Neck', 'Nose', 'Head_top',
        'L_Shoulder', 'L_Elbow', 'L_Wrist', 'R_Shoulder', 'R_Elbow', 'R_Wrist')
COCO = ('Nose', 'L_Eye', 'R_Eye', 'L_Ear', 'R_Ear', 'L_Shoulder', 'R_Shoulder', 'L_Elbow', 'R_Elbow', 'L_Wrist',
        'R_Wrist', 'L_Hip', 'R_Hip', 'L_Knee', 'R_Knee', 'L_Ankle', 'R_Ankle')
MIRROR = np.array([-1.0, 1.0, 1.0])


def _read(folder, gender='neutral'):
    with open(Path(folder) / MODEL_FILES[gender], 'rb') as handle:
        return pickle.load(handle)


def _name_flip(names):
    swap = {'L_': 'R_', 'R_': 'L_'}
    return [names.index(swap.get(n[:2], n[:2]) + n[2:]) for n in names]


@pytest.fixture(scope='module')
def neutral(synthetic_smpl_dir):
    return _read(synthetic_smpl_dir)


@pytest.fixture(scope='module')
def mirror(synthetic_smpl_dir):
    return np.load(Path(synthetic_smpl_dir) / MIRROR_INDEX_FILE)


@pytest.mark.parametrize('gender', list(MODEL_FILES))
def test_fields_shapes_and_types(synthetic_smpl_dir, gender):
    model = _read(synthetic_smpl_dir, gender)
    assert model['bs_type'] == 'lrotmin' and model['bs_style'] == 'lbs'
    shapes = {'v_template': (6890, 3), 'shapedirs': (6890, 3, 10), 'posedirs': (6890, 3, 207),
              'J_regressor': (24, 6890), 'weights': (6890, 24), 'kintree_table': (2, 24), 'f': (13776, 3),
              'J': (24, 3)}
    assert {k: model[k].shape for k in shapes} == shapes
    for key in ('v_template', 'shapedirs', 'posedirs', 'weights', 'J'):
        assert type(model[key]) is np.ndarray and model[key].dtype == np.float64, key
    assert scipy.sparse.issparse(model['J_regressor']) and model['J_regressor'].format == 'csc'
    assert model['f'].dtype == np.uint32 and model['f'].min() == 0 and model['f'].max() == 6889
    assert model['kintree_table'][0].tolist() == SMPL_PARENTS
    assert model['kintree_table'][1].tolist() == list(range(24))
    j_reg = model['J_regressor'].toarray()
    assert (j_reg >= 0).all() and (model['weights'] >= 0).all()
    np.testing.assert_allclose(j_reg.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(model['weights'].sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(model['J'], j_reg @ model['v_template'], atol=1e-12)


def test_regressor_files(synthetic_smpl_dir, neutral):
    verts = neutral['v_template']
    joints = neutral['J_regressor'] @ verts
    for name, rows in (('J_regressor_extra.npy', 9), ('J_regressor_h36m_correct.npy', 17),
                       ('J_regressor_coco_hip_smpl.npy', 17)):
        reg = np.load(Path(synthetic_smpl_dir) / name)
        assert reg.shape == (rows, 6890) and (reg >= 0).all(), name
        np.testing.assert_allclose(reg.sum(axis=1), 1.0, atol=1e-12)
    h36m = np.load(Path(synthetic_smpl_dir) / 'J_regressor_h36m_correct.npy') @ verts
    coco = np.load(Path(synthetic_smpl_dir) / 'J_regressor_coco_hip_smpl.npy') @ verts
    extra = np.load(Path(synthetic_smpl_dir) / 'J_regressor_extra.npy') @ verts
    near = {  # landmark -> SMPL joint it must lie close to (metres)
        'Pelvis': 0, 'L_Knee': 4, 'R_Knee': 5, 'L_Ankle': 7, 'R_Ankle': 8, 'L_Shoulder': 16, 'R_Shoulder': 17,
        'L_Elbow': 18, 'R_Elbow': 19, 'L_Wrist': 20, 'R_Wrist': 21, 'L_Hip': 1, 'R_Hip': 2,
    }
    for name, joint in near.items():
        assert np.linalg.norm(h36m[H36M.index(name)] - joints[joint]) < 0.06, name
        if name in COCO:
            assert np.linalg.norm(coco[COCO.index(name)] - joints[joint]) < 0.06, name
    top = verts[:, 1].max()
    assert extra[3, 1] > top - 0.03 and abs(extra[3, 0]) < 1e-9  # head top on the crown
    np.testing.assert_allclose(h36m[H36M.index('Head_top')], extra[3], atol=1e-9)
    for i, vertex in enumerate((331, 2802, 6262, 3489, 3990)):  # COCO face points at the SMPL face vertices
        assert np.linalg.norm(coco[i] - verts[vertex]) < 0.015
    assert h36m[H36M.index('Nose'), 2] > joints[15, 2] + 0.05
    for left, right in (('L_Hip', 'R_Hip'), ('L_Shoulder', 'R_Shoulder')):
        assert h36m[H36M.index(left), 0] > 0 > h36m[H36M.index(right), 0]
    # Neck and thorax-like points between the shoulders' height and the head.
    assert joints[9, 1] < h36m[H36M.index('Neck'), 1] < joints[15, 1]
    assert extra[1, 0] > 0 > extra[0, 0]  # SPIN rows 0/1: right hip, left hip


def test_body_proportions(neutral):
    verts = neutral['v_template']
    joints = neutral['J_regressor'] @ verts
    height = verts[:, 1].max() - verts[:, 1].min()
    assert 1.6 < height < 1.85
    assert np.linalg.norm(joints[0]) < 0.3  # pelvis near the origin, as SMPL
    assert joints[15, 1] > joints[12, 1] > joints[9, 1] > joints[0, 1] > joints[4, 1] > joints[7, 1]  # y up
    for left in (1, 4, 7, 10, 13, 16, 18, 20, 22):  # the person's left at +x
        assert joints[left, 0] > 0.02
    assert verts[:, 0].max() > 0.8 and verts[:, 0].min() < -0.8  # T-pose arm span
    assert joints[10, 2] > joints[7, 2] + 0.05  # toes point forward (+z)


def test_face_keypoints_on_the_head(neutral):
    verts = neutral['v_template']
    joints = neutral['J_regressor'] @ verts
    nose, l_eye, r_eye, l_ear, r_ear = verts[[331, 2802, 6262, 3489, 3990]]
    head = verts[verts[:, 1] > joints[15, 1]]
    for point in (nose, l_eye, r_eye, l_ear, r_ear):
        assert joints[15, 1] < point[1] < verts[:, 1].max()
    assert nose[0] == 0.0 and nose[2] == pytest.approx(head[:, 2].max())  # tip of the face, on the midline
    assert l_eye[1] > nose[1] and l_eye[2] > l_ear[2] and nose[2] > l_eye[2]
    assert 0 < l_eye[0] < l_ear[0] and r_ear[0] < r_eye[0] < 0
    assert l_ear[0] == pytest.approx(head[:, 0].max(), abs=0.01)


def test_mesh_is_closed_and_outward(neutral):
    faces = neutral['f'].astype(np.int64)
    verts = neutral['v_template']
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    keys = directed[:, 0] * 6890 + directed[:, 1]
    reverse = directed[:, 1] * 6890 + directed[:, 0]
    assert len(np.unique(keys)) == len(keys)  # no edge used twice in one direction: consistent orientation
    assert np.isin(reverse, keys).all()  # every edge has its opposite: closed surface
    assert len(np.unique(faces)) == 6890
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    volume = np.einsum('ij,ij->', a, np.cross(b, c)) / 6
    assert 0.04 < volume < 0.12  # m^3, outward normals give a positive volume
    assert (np.linalg.norm(np.cross(b - a, c - a), axis=1) > 1e-6).all()


def test_mirror_symmetry(synthetic_smpl_dir, neutral, mirror):
    assert mirror.shape == (6890,) and np.array_equal(mirror[mirror], np.arange(6890))
    assert (mirror[[331, 2802, 3489]] == [331, 6262, 3990]).all()
    np.testing.assert_array_equal(neutral['v_template'][mirror] * MIRROR, neutral['v_template'])
    np.testing.assert_array_equal(neutral['shapedirs'][mirror] * MIRROR[:, None], neutral['shapedirs'])
    np.testing.assert_array_equal(neutral['weights'][mirror][:, FLIP24], neutral['weights'])
    j_reg = neutral['J_regressor'].toarray()
    np.testing.assert_array_equal(j_reg[FLIP24][:, mirror], j_reg)
    for name, names in (('J_regressor_h36m_correct.npy', H36M), ('J_regressor_coco_hip_smpl.npy', COCO)):
        reg = np.load(Path(synthetic_smpl_dir) / name)
        np.testing.assert_allclose(reg[_name_flip(list(names))][:, mirror], reg, atol=1e-15)


@pytest.mark.parametrize('gender', ['neutral', 'female'])
def test_flipped_pose_gives_mirrored_mesh(synthetic_smpl_dir, mirror, gender):
    """The training flip of a pose (swap L/R rows, negate y and z of every axis-angle) mirrors the posed mesh."""
    layer = SMPLLayer(gender, model_dir=synthetic_smpl_dir)
    gen = torch.Generator().manual_seed(3)
    pose = torch.randn(3, 24, 3, generator=gen) * 0.6
    betas = torch.randn(3, 10, generator=gen)
    trans = torch.randn(3, 3, generator=gen)
    flipped = pose[:, FLIP24] * torch.tensor([1.0, -1.0, -1.0])
    sign = torch.tensor(MIRROR, dtype=torch.float32)
    verts, joints = layer(pose.reshape(3, 72), betas, trans)
    verts_f, joints_f = layer(flipped.reshape(3, 72), betas, trans * sign)
    torch.testing.assert_close(verts_f[:, mirror] * sign, verts, rtol=0, atol=2e-5)
    torch.testing.assert_close(joints_f[:, FLIP24] * sign, joints, rtol=0, atol=2e-5)
    # The pose correctives are part of it: they move vertices by a visible amount.
    assert (layer.th_posedirs.abs().amax() > 1e-4) and (layer.th_posedirs.abs().amax() < 0.05)


def test_genders_differ_slightly(synthetic_smpl_dir, neutral):
    male, female = _read(synthetic_smpl_dir, 'male'), _read(synthetic_smpl_dir, 'female')
    height = {name: np.ptp(m['v_template'][:, 1]) for name, m in (('n', neutral), ('m', male), ('f', female))}
    assert height['f'] < height['n'] < height['m'] < 1.1 * height['n']
    np.testing.assert_array_equal(male['f'], neutral['f'])


def test_deterministic_from_seed(synthetic_smpl_dir, neutral):
    same, _ = build_synthetic_model('neutral', seed=0)
    for key in ('v_template', 'shapedirs', 'posedirs', 'weights', 'f', 'J'):
        np.testing.assert_array_equal(same[key], neutral[key])
    other, _ = build_synthetic_model('neutral', seed=1)
    assert not np.array_equal(other['posedirs'], neutral['posedirs'])
    assert not np.array_equal(other['shapedirs'], neutral['shapedirs'])


def test_cli_writes_identical_files(synthetic_smpl_dir, tmp_path, capsys):
    cli_main(['--out', str(tmp_path / 'model'), '--seed', '0'])
    assert str(tmp_path / 'model') in capsys.readouterr().out
    for path in Path(synthetic_smpl_dir).iterdir():
        assert (tmp_path / 'model' / path.name).read_bytes() == path.read_bytes(), path.name


@pytest.mark.slow
def test_cli_script_runs_from_repository_root():
    """The script runs from the repository root as documented."""
    result = subprocess.run([sys.executable, 'tool/make_synthetic_smpl.py', '--help'], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and '--out' in result.stdout and '--seed' in result.stdout
