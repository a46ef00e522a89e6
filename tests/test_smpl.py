"""The SMPL layer and wrapper against independent references (smplpytorch, chumpy, hand-computed
adjacency and regressor rows)."""
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse
import torch

from common.options import BodyModelPaths
from common.utils import smpl_layer as smpl_layer_module
from common.utils.smpl import SMPL, SMPLFileError, SMPLFormatError, get_smpl, load_smpl_model
from common.utils.smpl_layer import SMPLLayer, SMPL_MODEL_FILES

REPO_ROOT = Path(__file__).resolve().parents[1]
GENDERS = ('neutral', 'male', 'female')
FIELDS = ('v_template', 'shapedirs', 'posedirs', 'J_regressor', 'weights', 'kintree_table', 'f')


def _random_inputs(batch=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    pose = torch.randn(batch, 72, generator=gen) * 0.5
    betas = torch.randn(batch, 10, generator=gen)
    trans = torch.randn(batch, 3, generator=gen)
    return pose, betas, trans


# ----------------------------------------------------------------------------- layer vs smplpytorch
@pytest.mark.parametrize('gender', GENDERS)
def test_layer_matches_smplpytorch(synthetic_smpl_dir, gender):
    ref_module = pytest.importorskip('smplpytorch.pytorch.smpl_layer')
    ref = ref_module.SMPL_Layer(center_idx=None, gender=gender, model_root=str(synthetic_smpl_dir))
    layer = SMPLLayer(gender, model_dir=synthetic_smpl_dir)
    pose, betas, trans = _random_inputs(seed=GENDERS.index(gender))
    # Rows: random everything; then the zero-betas / zero-trans / zero-pose shortcuts of smplpytorch.
    cases = [(pose, betas, trans), (pose, torch.zeros_like(betas), torch.zeros_like(trans)),
             (torch.zeros_like(pose), betas, trans)]
    for p, b, t in cases:
        ref_verts, ref_joints = ref(p, b, t)
        verts, joints = layer(p, b, t)
        assert verts.shape == (4, 6890, 3) and joints.shape == (4, 24, 3)
        torch.testing.assert_close(verts, ref_verts, rtol=0, atol=1e-5)
        torch.testing.assert_close(joints, ref_joints, rtol=0, atol=1e-5)
    assert layer.kintree_parents == ref.kintree_parents
    ref_buffers = dict(ref.named_buffers())
    for name, value in layer.named_buffers():
        assert value.dtype == ref_buffers[name].dtype, name
        torch.testing.assert_close(value, ref_buffers[name], rtol=0, atol=0)


def test_quaternion_route_matches_scipy_rotation():
    """smplpytorch's route (angle |v + 1e-8|, axis v / |v + 1e-8|, normalised quaternion) against
    scipy's matrix of the same quaternion, and exactly the identity for zero vectors."""
    from scipy.spatial.transform import Rotation
    rotvec = np.random.default_rng(11).normal(size=(2, 50, 3)) * 1.5
    rotmat = smpl_layer_module.quat_axis_angle_to_rotmat(torch.tensor(rotvec))
    assert rotmat.shape == (2, 50, 3, 3) and rotmat.dtype == torch.float64
    angle = np.linalg.norm(rotvec + 1e-8, axis=-1, keepdims=True)
    xyzw = np.concatenate([np.sin(angle / 2) * rotvec / angle, np.cos(angle / 2)], -1)
    expected = Rotation.from_quat(xyzw.reshape(-1, 4)).as_matrix()  # normalises the quaternion
    np.testing.assert_allclose(rotmat.numpy().reshape(-1, 3, 3), expected, rtol=0, atol=1e-12)
    identity = smpl_layer_module.quat_axis_angle_to_rotmat(torch.zeros(4, 3))
    assert torch.equal(identity, torch.eye(3).expand(4, 3, 3))


def test_layer_dtype_gradients_and_defaults(synthetic_smpl_dir):
    layer = SMPLLayer('neutral', model_dir=synthetic_smpl_dir)
    pose, betas, trans = _random_inputs(batch=2)
    verts32, _ = layer(pose, betas, trans)
    verts64, joints64 = layer(pose.double(), betas.double(), trans.double())
    assert verts64.dtype == torch.float64 and joints64.dtype == torch.float64
    torch.testing.assert_close(verts64.float(), verts32, rtol=0, atol=1e-5)
    # None means zeros for betas and trans.
    torch.testing.assert_close(layer(pose)[0], layer(pose, torch.zeros(2, 10), torch.zeros(2, 3))[0])
    # The +1e-8 of the quaternion route keeps the gradient finite at the zero pose.
    zero_pose = torch.zeros(2, 72, requires_grad=True)
    layer(zero_pose, betas, trans)[0].sum().backward()
    assert torch.isfinite(zero_pose.grad).all() and zero_pose.grad.abs().sum() > 0


def test_rest_pose_is_template_plus_shape(synthetic_smpl_dir):
    """Zero pose: vertices = template + shape blend + trans, joints = regressor of the shaped mesh."""
    model = load_smpl_model(Path(synthetic_smpl_dir) / SMPL_MODEL_FILES['neutral'])
    layer = SMPLLayer('neutral', model_dir=synthetic_smpl_dir)
    betas = np.linspace(-2, 2, 10)
    trans = np.array([0.1, -0.2, 3.0])
    verts, joints = layer(torch.zeros(1, 72), torch.tensor(betas[None], dtype=torch.float32),
                          torch.tensor(trans[None], dtype=torch.float32))
    shaped = model['v_template'] + model['shapedirs'] @ betas
    np.testing.assert_allclose(verts[0].numpy(), shaped + trans, atol=2e-6)
    np.testing.assert_allclose(joints[0].numpy(), model['J_regressor'] @ shaped + trans, atol=2e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_layer_on_cuda_matches_cpu(synthetic_smpl_dir):
    layer = SMPLLayer('neutral', model_dir=synthetic_smpl_dir)
    pose, betas, trans = _random_inputs()
    cpu = layer(pose, betas, trans)
    gpu = layer.to('cuda')(pose.cuda(), betas.cuda(), trans.cuda())
    for a, b in zip(cpu, gpu):
        torch.testing.assert_close(b.cpu(), a, rtol=0, atol=1e-5)


def test_state_dict_matches_checkpoint_spec(synthetic_smpl_dir):
    expected = {}
    for line in (REPO_ROOT / 'tests' / 'data' / 'state_dict_keys.txt').read_text().splitlines():
        key, shape = line.split()
        if key.startswith('module.human_model_layer.'):
            expected[key[len('module.human_model_layer.'):]] = tuple(int(d) for d in shape.split('x'))
    assert len(expected) == 7
    state = SMPLLayer('neutral', model_dir=synthetic_smpl_dir).state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert {k for k, v in state.items() if v.dtype != torch.float32} == {'th_faces'}
    assert state['th_faces'].dtype == torch.int64
    assert not any(p.requires_grad for p in state.values())


# ----------------------------------------------------------------------------- chumpy-free loading
class _Py2StylePickler(pickle._Pickler):
    """Writes bytes as Python-2 ``str`` (BINSTRING), as the official Python-2 SMPL files do."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        self.write(pickle.BINSTRING + len(obj).to_bytes(4, 'little') + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def _write_chumpy_pickle(path, model):
    """A pkl whose fields are real chumpy objects (Ch, Reshape, transpose, multiply) with Python-2 names."""
    ch = pytest.importorskip('chumpy')
    data = {
        'v_template': ch.array(np.array(model['v_template'])) * 1.0,
        'shapedirs': ch.array(np.array(model['shapedirs'])),
        'posedirs': ch.array(np.array(model['posedirs']).reshape(6890, -1)).reshape((6890, 3, 207)),
        'J_regressor': scipy.sparse.csc_matrix(model['J_regressor']),
        'weights': ch.array(np.ascontiguousarray(model['weights'].T)).T,
        'kintree_table': np.array(model['kintree_table']),
        'f': np.array(model['f'], dtype=np.uint32),
        'bs_type': 'lrotmin', 'bs_style': 'lbs',
    }
    buffer = __import__('io').BytesIO()
    _Py2StylePickler(buffer, protocol=2).dump(data)
    raw = buffer.getvalue()
    for new, old in ((b'numpy._core.multiarray\n', b'numpy.core.multiarray\n'),
                     (b'scipy.sparse._csc\n', b'scipy.sparse.csc\n')):
        raw = raw.replace(b'c' + new, b'c' + old)
    assert b'cchumpy.ch\nCh\n' in raw and b'cnumpy.core.multiarray\n' in raw
    path.write_bytes(raw)


@pytest.mark.slow  # a fresh interpreter proves chumpy is never imported
def test_chumpy_pickle_loads_without_chumpy(synthetic_smpl_dir, tmp_path):
    model = load_smpl_model(Path(synthetic_smpl_dir) / SMPL_MODEL_FILES['neutral'])
    model_dir = tmp_path / 'models'
    model_dir.mkdir()
    _write_chumpy_pickle(model_dir / SMPL_MODEL_FILES['neutral'], model)
    np.savez(tmp_path / 'expected.npz', **{k: model[k] for k in FIELDS})
    script = textwrap.dedent(f"""
        import sys
        class BlockChumpy:
            def find_spec(self, name, path=None, target=None):
                if name == 'chumpy' or name.startswith('chumpy.'):
                    raise ImportError('chumpy is not installed here')
        sys.meta_path.insert(0, BlockChumpy())
        try:
            import chumpy
            sys.exit('chumpy import was not blocked')
        except ImportError:
            pass
        import numpy as np
        from common.utils.smpl import load_smpl_model
        from common.utils.smpl_layer import SMPLLayer
        path = {str(model_dir / SMPL_MODEL_FILES['neutral'])!r}
        model = load_smpl_model(path)
        expected = np.load({str(tmp_path / 'expected.npz')!r})
        for key in expected.files:
            assert model[key].shape == expected[key].shape, key
            assert np.array_equal(model[key], expected[key]), key
        layer = SMPLLayer('neutral', model_dir={str(model_dir)!r})
        assert not any(m.startswith('chumpy') for m in sys.modules)
        print('OK')
    """)
    result = subprocess.run([sys.executable, '-c', script], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith('OK')


def test_missing_model_file_message(tmp_path):
    with pytest.raises(SMPLFileError) as info:
        SMPLLayer('female', model_dir=tmp_path)
    message = str(info.value)
    assert 'basicModel_f_lbs_10_207_0_v1.0.0.pkl' in message
    assert str(tmp_path.resolve()) in message and 'cfg.smpl_model_dir' in message
    assert 'https://smpl.is.tue.mpg.de' in message and 'regist' in message
    assert 'python tool/make_synthetic_smpl.py --out' in message
    assert isinstance(info.value, FileNotFoundError)


def test_missing_extra_regressor_message(synthetic_smpl_dir, tmp_path):
    with pytest.raises(SMPLFileError) as info:
        SMPL(BodyModelPaths(str(synthetic_smpl_dir), str(tmp_path)))
    message = str(info.value)
    assert 'J_regressor_extra.npy' in message and str(tmp_path.resolve()) in message
    assert 'cfg.data_dir' in message and 'SPIN' in message
    assert 'python tool/make_synthetic_smpl.py --out' in message


def test_wrong_field_shape_names_file_and_field(synthetic_smpl_dir, tmp_path):
    with open(Path(synthetic_smpl_dir) / SMPL_MODEL_FILES['male'], 'rb') as handle:
        data = pickle.load(handle)
    data['shapedirs'] = data['shapedirs'][:, :, :5]
    path = tmp_path / SMPL_MODEL_FILES['male']
    path.write_bytes(pickle.dumps(data, protocol=2))
    with pytest.raises(SMPLFormatError, match=r"(?s)basicModel_m_lbs.*'shapedirs'.*\(6890, 3, 5\)"):
        load_smpl_model(path)
    del data['shapedirs']
    path.write_bytes(pickle.dumps(data, protocol=2))
    with pytest.raises(SMPLFormatError, match="no field 'shapedirs'"):
        load_smpl_model(path)
    path.write_bytes(b'not a pickle')
    with pytest.raises(SMPLFormatError, match='could not be read'):
        load_smpl_model(path)


def test_model_file_is_parsed_once(synthetic_smpl_dir, monkeypatch):
    calls = []
    original = smpl_layer_module._parse_smpl_pickle

    def counting(path):
        calls.append(path)
        return original(path)

    monkeypatch.setattr(smpl_layer_module, '_parse_smpl_pickle', counting)
    monkeypatch.setattr(smpl_layer_module, '_MODEL_CACHE', {})
    first = SMPLLayer('female', model_dir=synthetic_smpl_dir)
    second = SMPLLayer('female', model_dir=str(synthetic_smpl_dir) + '/.')
    assert len(calls) == 1
    # Separate modules with separate storage: changing one leaves the other as loaded.
    first.th_v_template.add_(1.0)
    assert not torch.equal(first.th_v_template, second.th_v_template)
    with pytest.raises(ValueError):  # the cached arrays are shared read-only
        load_smpl_model(calls[0])['v_template'][0, 0] = 1.0


# ----------------------------------------------------------------------------- the wrapper
JOINTS_NAME = ('Pelvis', 'L_Hip', 'R_Hip', 'Torso', 'L_Knee', 'R_Knee', 'Spine', 'L_Ankle', 'R_Ankle', 'Chest',
               'L_Toe', 'R_Toe', 'Neck', 'L_Thorax', 'R_Thorax', 'Head', 'L_Shoulder', 'R_Shoulder', 'L_Elbow',
               'R_Elbow', 'L_Wrist', 'R_Wrist', 'L_Hand', 'R_Hand', 'Nose', 'L_Eye', 'R_Eye', 'L_Ear', 'R_Ear',
               'Head_top')
GRAPH_NAMES = ('Pelvis', 'L_Hip', 'R_Hip', 'L_Knee', 'R_Knee', 'L_Ankle', 'R_Ankle', 'Neck', 'Head_top',
               'L_Shoulder', 'R_Shoulder', 'L_Elbow', 'R_Elbow', 'L_Wrist', 'R_Wrist')


def _with_extra_regressor(tmp_path, synthetic_smpl_dir):
    """A data_dir whose J_regressor_extra.npy rows are all different (row r is r-th one-hot + noise)."""
    rng = np.random.default_rng(5)
    extra = rng.random((9, 6890))
    extra /= extra.sum(axis=1, keepdims=True)
    np.save(tmp_path / 'J_regressor_extra.npy', extra)
    return extra


def test_joint_regressor_rows(synthetic_smpl_dir, tmp_path):
    extra = _with_extra_regressor(tmp_path, synthetic_smpl_dir)
    smpl = SMPL(BodyModelPaths(str(synthetic_smpl_dir), str(tmp_path)))
    reg = smpl.joint_regressor
    assert reg.shape == (30, 6890) and reg.dtype == np.float32
    with open(Path(synthetic_smpl_dir) / SMPL_MODEL_FILES['neutral'], 'rb') as handle:
        official = pickle.load(handle)['J_regressor']
    np.testing.assert_array_equal(reg[:24], official.toarray().astype(np.float32))
    for row, vertex in zip(range(24, 29), (331, 2802, 6262, 3489, 3990)):
        expected = np.zeros(6890, dtype=np.float32)
        expected[vertex] = 1.0
        np.testing.assert_array_equal(reg[row], expected)
    np.testing.assert_array_equal(reg[29], extra[3].astype(np.float32))


def test_wrapper_constants(synthetic_smpl_dir):
    smpl = SMPL(BodyModelPaths(synthetic_smpl_dir, synthetic_smpl_dir))
    assert smpl.joints_name == JOINTS_NAME and smpl.joint_num == 30 and smpl.orig_joint_num == 24
    assert smpl.vertex_num == 6890 and smpl.shape_param_dim == 10 and smpl.root_joint_idx == 0
    assert tuple(smpl.face_kps_vertex) == (331, 2802, 6262, 3489, 3990)
    assert smpl.face.shape == (13776, 3) and smpl.face.dtype == np.int64
    assert set(smpl.layer) == set(GENDERS) and all(isinstance(v, SMPLLayer) for v in smpl.layer.values())
    assert [smpl.layer[g].gender for g in GENDERS] == list(GENDERS)
    assert smpl.parents[1:] == [0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
    for a, b in smpl.flip_pairs:  # every flip pair is a left/right name pair
        assert {smpl.joints_name[a][:2], smpl.joints_name[b][:2]} == {'L_', 'R_'}
        assert smpl.joints_name[a][2:] == smpl.joints_name[b][2:]
    assert len(smpl.flip_pairs) == 11 and len(smpl.skeleton) == 29
    assert smpl.graph_joint_num == 15 and smpl.graph_joints_name == GRAPH_NAMES
    for a, b in smpl.graph_flip_pairs:
        assert smpl.graph_joints_name[a][2:] == smpl.graph_joints_name[b][2:]


def test_graph_adjacency_matches_hand_computation(synthetic_smpl_dir):
    smpl = SMPL(BodyModelPaths(synthetic_smpl_dir, synthetic_smpl_dir))
    adj = smpl.graph_adj
    assert adj.shape == (15, 15) and adj.dtype == np.float64 and np.isfinite(adj).all()
    # Straight re-derivation: D^-1/2 (A + I) D^-1/2 over the 14 bones and 6 flip pairs.
    edges = [(0, 1), (1, 3), (3, 5), (0, 2), (2, 4), (4, 6), (0, 7), (7, 8), (7, 9), (9, 11), (11, 13),
             (7, 10), (10, 12), (12, 14), (1, 2), (3, 4), (5, 6), (9, 10), (11, 12), (13, 14)]
    a_hat = np.eye(15)
    for i, j in edges:
        a_hat[i, j] = a_hat[j, i] = 1.0
    degree = a_hat.sum(axis=0)
    np.testing.assert_array_equal(degree, [4, 4, 4, 4, 4, 3, 3, 5, 2, 4, 4, 4, 4, 3, 3])
    expected = a_hat / np.sqrt(np.outer(degree, degree))
    np.testing.assert_allclose(adj, expected, rtol=1e-15, atol=0)
    assert adj[0, 0] == 0.25
    assert adj[0, 7] == pytest.approx(1 / np.sqrt(20), rel=1e-15)


def test_graph_adjacency_small_case():
    from common.utils.smpl import graph_adjacency
    # Path 0-1 plus flip pair (1,2): degrees with self loops 2, 3, 2.
    adj = graph_adjacency(3, [(0, 1)], [(1, 2)])
    r6 = 1 / np.sqrt(6)
    np.testing.assert_allclose(adj, [[0.5, r6, 0.0], [r6, 1 / 3, r6], [0.0, r6, 0.5]], rtol=1e-15, atol=0)


def test_reduce_joint_set(synthetic_smpl_dir):
    smpl = SMPL(BodyModelPaths(synthetic_smpl_dir, synthetic_smpl_dir))
    joints = np.arange(2 * 30 * 3, dtype=np.float32).reshape(2, 30, 3)
    index = [JOINTS_NAME.index(name) for name in GRAPH_NAMES]
    assert index == [0, 1, 2, 4, 5, 7, 8, 12, 29, 16, 17, 18, 19, 20, 21]
    np.testing.assert_array_equal(smpl.reduce_joint_set(joints), joints[:, index])
    reduced = smpl.reduce_joint_set(torch.from_numpy(joints))
    assert reduced.shape == (2, 15, 3)
    torch.testing.assert_close(reduced, torch.from_numpy(joints[:, index]))


def test_get_smpl_is_cached_per_folders(synthetic_smpl_dir, tmp_path):
    paths = BodyModelPaths(str(synthetic_smpl_dir), str(synthetic_smpl_dir))
    first = get_smpl(paths)
    assert get_smpl(paths) is first
    # the same folders spelled differently share the instance
    assert get_smpl(BodyModelPaths(str(synthetic_smpl_dir) + '/.', str(synthetic_smpl_dir))) is first
    assert all(buffer.device.type == 'cpu' for buffer in first.layer['neutral'].buffers())
    _with_extra_regressor(tmp_path, synthetic_smpl_dir)
    other_paths = BodyModelPaths(str(synthetic_smpl_dir), str(tmp_path))
    other = get_smpl(other_paths)
    assert other is not first and get_smpl(other_paths) is other
    assert not np.array_equal(other.joint_regressor[29], first.joint_regressor[29])
    assert get_smpl(paths) is first
    with pytest.raises(TypeError, match='BodyModelPaths'):
        get_smpl(str(synthetic_smpl_dir))


def test_make_layer_gives_independent_modules(synthetic_smpl_dir):
    shared = get_smpl(BodyModelPaths(synthetic_smpl_dir, synthetic_smpl_dir))
    layer = shared.make_layer('neutral')
    assert isinstance(layer, SMPLLayer) and layer is not shared.layer['neutral']
    assert shared.make_layer('male').gender == 'male'
    before = shared.layer['neutral'].th_v_template.clone()
    layer.load_state_dict({k: torch.zeros_like(v) for k, v in layer.state_dict().items()})
    torch.testing.assert_close(shared.layer['neutral'].th_v_template, before)
    with pytest.raises(ValueError, match='gender'):
        shared.make_layer('child')
