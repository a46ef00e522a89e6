"""The SMPL body model: a chumpy-free reader of the official pickles and a batched torch layer.

The reader (``load_smpl_model``) parses ``basicModel_*_lbs_10_207_0_v1.0.0.pkl`` without
chumpy or a Python-2 runtime and caches the arrays per file.  ``SMPLLayer`` reproduces the
forward pass of smplpytorch's ``SMPL_Layer`` (docs/METHOD.md, "Body model") with the same
buffer names, so the released SGRE checkpoints load into it.
"""
import importlib
import os
import pickle
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import scipy.sparse
import torch
from torch import nn
from torch.nn import functional as F

from common.errors import DataError
from common.utils.kinematics import forward_kinematics, skinning_transforms

GENDERS = ('neutral', 'male', 'female')
SMPL_MODEL_FILES = {
    'neutral': 'basicModel_neutral_lbs_10_207_0_v1.0.0.pkl',
    'male': 'basicModel_m_lbs_10_207_0_v1.0.0.pkl',
    'female': 'basicModel_f_lbs_10_207_0_v1.0.0.pkl',
}
NUM_VERTICES = 6890
NUM_JOINTS = 24
NUM_BETAS = 10
# Field -> expected shape of the arrays the layer reads.
SMPL_FIELD_SHAPES = {
    'v_template': (NUM_VERTICES, 3),
    'shapedirs': (NUM_VERTICES, 3, NUM_BETAS),
    'posedirs': (NUM_VERTICES, 3, 9 * (NUM_JOINTS - 1)),
    'J_regressor': (NUM_JOINTS, NUM_VERTICES),
    'weights': (NUM_VERTICES, NUM_JOINTS),
    'kintree_table': (2, NUM_JOINTS),
    'f': (13776, 3),
}
SYNTHETIC_HINT = ('For tests and a quick start without the real files, '
                  '`python tool/make_synthetic_smpl.py --out DIR` writes a synthetic stand-in '
                  'body model (use DIR as the body-model folder and the data root: cfg.smpl_model_dir '
                  'and cfg.data_dir).')


class SMPLFileError(FileNotFoundError):
    """A body-model or regressor file is missing; the message says where it belongs and where to get it."""


class SMPLFormatError(DataError):
    """A body-model file has a missing field or a field of the wrong shape."""


class SMPLUnsafeFileError(SMPLFormatError, pickle.UnpicklingError):
    """A body-model pickle names a global (function or class) that no SMPL file contains, such as
    ``os.system``: loading stops before anything from the file is called."""


def smpl_model_path(gender, model_dir):
    """Path of the official pkl of ``gender`` inside the body-model folder ``model_dir``."""
    if gender not in SMPL_MODEL_FILES:
        raise ValueError(f"Unknown SMPL gender '{gender}'; expected one of {GENDERS}.")
    return Path(model_dir) / SMPL_MODEL_FILES[gender]


def missing_model_message(path):
    """Error text for a missing SMPL pkl: the file, its folder and where users get it."""
    path = Path(path)
    return (
        f"SMPL model file '{path.name}' not found in '{path.parent}' (cfg.smpl_model_dir).\n"
        "The SMPL files come from the SMPL website, https://smpl.is.tue.mpg.de (free registration): "
        "download version 1.0.0 for Python and rename the files as the original README says: "
        "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl is the gender-neutral model from SMPLify "
        "(https://smplify.is.tue.mpg.de), basicModel_m_lbs_10_207_0_v1.0.0.pkl and "
        "basicModel_f_lbs_10_207_0_v1.0.0.pkl are the male and female models of SMPL. "
        "Put all three into cfg.smpl_model_dir.\n" + SYNTHETIC_HINT)


# ----------------------------------------------------------------------------- pickle reading
class _PickledObjectState:
    """Stand-in for a pickled chumpy or scipy.sparse object: it only records the pickled state."""

    source_name = '?'
    state = {}  # replaced (never mutated) by __setstate__; unpickling does not call __init__

    def __setstate__(self, state):
        # (dict, slot-dict) pairs come from classes with __slots__; chumpy keeps everything in the dict.
        if isinstance(state, tuple) and len(state) == 2:
            state = {**(state[0] or {}), **(state[1] or {})}
        self.state = dict(state)


_STAND_IN_CLASSES = {}


def _stand_in_class(source_name):
    """One stand-in subclass per pickled class name, so the resolver knows what it stood for."""
    if source_name not in _STAND_IN_CLASSES:
        _STAND_IN_CLASSES[source_name] = type(
            'StandIn_' + source_name.replace('.', '_'), (_PickledObjectState,), {'source_name': source_name})
    return _STAND_IN_CLASSES[source_name]


def _numpy_module(name):
    """NumPy's ``numpy._core.<name>`` (NumPy 2) or ``numpy.core.<name>`` (NumPy 1)."""
    try:
        return importlib.import_module(f'numpy._core.{name}')
    except ImportError:
        return importlib.import_module(f'numpy.core.{name}')


def _latin1_bytes(text, encoding):
    """``_codecs.encode`` as Python 3 pickles bytes at protocol < 3: ``(str, 'latin1') -> bytes``;
    any other use is refused, so the codec machinery cannot be driven by a file."""
    if not isinstance(text, str) or encoding not in ('latin1', 'latin-1'):
        raise pickle.UnpicklingError(f"_codecs.encode is only allowed as (str, 'latin1'), got {encoding!r}")
    return text.encode('latin1')


def _allowed_plain_globals():
    """(module, name) -> object for every non-stand-in global an SMPL pickle may name.

    NumPy arrays, dtypes and scalars under both spellings of NumPy's core package (Python-2
    files say ``numpy.core``, NumPy 2 writes ``numpy._core``), ``_frombuffer`` of protocol-5
    array pickles, the ``set`` of chumpy's pickled state (``__builtin__`` in Python-2 files) and
    the latin-1 bytes idiom of Python 3 at protocol 2.  Nothing here can run code or touch files.
    """
    multiarray, numeric = _numpy_module('multiarray'), _numpy_module('numeric')
    table = {('numpy', 'ndarray'): np.ndarray, ('numpy', 'dtype'): np.dtype,
             ('_codecs', 'encode'): _latin1_bytes}
    for core in ('numpy.core', 'numpy._core'):
        table[(f'{core}.multiarray', '_reconstruct')] = multiarray._reconstruct
        table[(f'{core}.multiarray', 'scalar')] = multiarray.scalar
        table[(f'{core}.numeric', '_frombuffer')] = numeric._frombuffer
    for builtins_module in ('__builtin__', 'builtins'):
        table[(builtins_module, 'set')] = set
        table[(builtins_module, 'frozenset')] = frozenset
    return table


_SPARSE_CLASS_NAME = re.compile(r'[a-z]+_(matrix|array)')


def _is_package_path(module, package):
    """True for ``package`` itself and its submodules (``package.x.y``), by name only."""
    return module == package or (module.startswith(package + '.')
                                 and all(part.isidentifier() for part in module.split('.')))


class _ChumpyFreeUnpickler(pickle.Unpickler):
    """Unpickler for the Python-2 SMPL files that never imports chumpy (nor scipy's private modules).

    Only the globals the official files are made of resolve: chumpy classes and scipy.sparse
    matrix classes become inert stand-ins that record their pickled state, and a short table of
    NumPy functions rebuilds arrays.  Any other global (``os.system``, ``builtins.eval``,
    ``copyreg._reconstructor``, ...) raises ``SMPLUnsafeFileError`` before it is called.
    """

    def __init__(self, handle, source, **kwargs):
        super().__init__(handle, **kwargs)
        self.source = source
        self.allowed = _allowed_plain_globals()

    def find_class(self, module, name):
        if name.isidentifier():
            if _is_package_path(module, 'chumpy'):
                return _stand_in_class(f'{module}.{name}')
            if _is_package_path(module, 'scipy.sparse') and _SPARSE_CLASS_NAME.fullmatch(name):
                return _stand_in_class(f'scipy.sparse.{name}')
        if (module, name) in self.allowed:
            return self.allowed[(module, name)]
        raise SMPLUnsafeFileError(
            f"SMPL model file '{self.source}' refers to '{module}.{name}', which is not part of an SMPL "
            f"body model (allowed: NumPy arrays, SciPy sparse matrices, chumpy objects); refusing to load it.")


def _chumpy_value(obj, field):
    """The NumPy value of a chumpy expression stand-in (``Ch`` and the common reordering ops)."""
    kind = obj.source_name.rsplit('.', 1)[-1]
    st = obj.state

    def arg(key):
        return _resolve(st[key], field)

    if 'x' in st and kind in ('Ch', 'array'):
        return np.asarray(arg('x'))
    if kind == 'transpose':
        return np.transpose(arg('a'), st.get('axes'))
    if kind == 'Reshape':
        return np.reshape(arg('a'), st['newshape'])
    if kind == 'Select':
        return np.asarray(arg('a')).ravel()[np.asarray(st['idxs'])].reshape(st['preferred_shape'])
    if kind == 'Concatenate':
        return np.concatenate([arg(name) for name in st['dterms']], axis=st['axis'])
    binary_ops = {'add': np.add, 'subtract': np.subtract, 'multiply': np.multiply, 'divide': np.divide}
    if kind in binary_ops:
        return binary_ops[kind](arg('a'), arg('b'))
    if 'x' in st and len([k for k in st if not k.startswith('_')]) == 1:
        return np.asarray(arg('x'))
    raise SMPLFormatError(
        f"field '{field}' holds a chumpy object of type {obj.source_name} that cannot be converted "
        "without chumpy; re-save the file with plain NumPy arrays.")


def _sparse_value(obj, field):
    """A scipy.sparse matrix rebuilt from its pickled state (any scipy version)."""
    st = obj.state
    fmt = obj.source_name.rsplit('.', 1)[-1].split('_')[0]
    shape = tuple(st.get('_shape', st.get('shape')))
    if fmt in ('csc', 'csr', 'bsr'):
        cls = {'csc': scipy.sparse.csc_matrix, 'csr': scipy.sparse.csr_matrix, 'bsr': scipy.sparse.bsr_matrix}[fmt]
        return cls((st['data'], st['indices'], st['indptr']), shape=shape)
    if fmt == 'coo':
        row, col = (st['row'], st['col']) if 'row' in st else st['coords']
        return scipy.sparse.coo_matrix((st['data'], (row, col)), shape=shape)
    raise SMPLFormatError(f"field '{field}' holds an unsupported sparse matrix type {obj.source_name}.")


def _resolve(value, field):
    """Replace stand-ins (recursively) by NumPy arrays / scipy matrices."""
    if isinstance(value, _PickledObjectState):
        if value.source_name.startswith('scipy.sparse'):
            return _sparse_value(value, field)
        return _chumpy_value(value, field)
    if isinstance(value, (list, tuple)):
        return type(value)(_resolve(v, field) for v in value)
    return value


def _to_dense(value):
    return value.toarray() if scipy.sparse.issparse(value) else np.asarray(value)


def _parse_smpl_pickle(path):
    """Read one official SMPL pkl into ``{field: value}`` with NumPy arrays for the layer's fields."""
    with open(path, 'rb') as handle:
        try:
            raw = _ChumpyFreeUnpickler(handle, source=path, encoding='latin1').load()
        except SMPLFormatError:
            raise
        except Exception as err:  # corrupt / truncated / not a pickle
            raise SMPLFormatError(f"SMPL model file '{path}' could not be read as a pickle: {err!r}") from err
    if not isinstance(raw, dict):
        raise SMPLFormatError(f"SMPL model file '{path}' holds a {type(raw).__name__}, expected a dict.")
    model = {}
    for key, value in raw.items():
        try:
            model[key] = _resolve(value, key)
        except SMPLFormatError as err:
            raise SMPLFormatError(f"SMPL model file '{path}': {err}") from None
    for field, shape in SMPL_FIELD_SHAPES.items():
        if field not in model:
            raise SMPLFormatError(f"SMPL model file '{path}' has no field '{field}' (expected shape {shape}).")
        array = _to_dense(model[field])
        if array.shape != shape:
            raise SMPLFormatError(
                f"SMPL model file '{path}': field '{field}' has shape {array.shape}, expected {shape}.")
        if field in ('kintree_table', 'f'):
            array = array.astype(np.int64)
        else:
            array = array.astype(np.float64)
        array.setflags(write=False)  # shared by every caller through the cache
        model[field] = array
    return model


_MODEL_CACHE = {}


def load_smpl_model(path):
    """Arrays of an official SMPL pkl, parsed once per process (chumpy is never imported).

    Returns a new dict (the arrays are shared and read-only) with float64 ``v_template``
    (6890,3), ``shapedirs`` (6890,3,10), ``posedirs`` (6890,3,207), dense ``J_regressor``
    (24,6890), ``weights`` (6890,24), int64 ``kintree_table`` (2,24) and ``f`` (13776,3), plus
    any other entry of the file as stored.
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise SMPLFileError(missing_model_message(path))
    stat = os.stat(path)
    signature = (stat.st_mtime_ns, stat.st_size)  # re-read a file that was rewritten in place
    cached = _MODEL_CACHE.get(str(path))
    if cached is None or cached[0] != signature:
        cached = (signature, _parse_smpl_pickle(path))
        _MODEL_CACHE[str(path)] = cached
    return dict(cached[1])


# ----------------------------------------------------------------------------- the layer
def left_multiply(matrix, batch):
    """``matrix @ batch[b]`` for every b, as one matrix product.

    matrix (K, N); batch (B, N, C).  Returns (B, K, C), a permuted view of a (K, B, C) result.
    One (K, N) @ (N, B*C) product replaces B products of C columns each, which BLAS runs poorly
    for narrow C such as vertex coordinates (3) and skinning rows (12); the sums are the same
    up to float rounding.
    """
    size, rows, columns = batch.shape
    flat = batch.permute(1, 0, 2).reshape(rows, size * columns)
    return torch.mm(matrix, flat).view(-1, size, columns).permute(1, 0, 2)


def _quaternion_products_to_rotmat():
    """(16, 9) coefficients taking the outer product q q^T of a unit quaternion (w, x, y, z),
    flattened row-major, to its rotation matrix, flattened row-major:
    R = (w^2 - |v|^2) I + 2 v v^T + 2 w [v]_x with v = (x, y, z). Each product a*b of distinct
    components gets coefficient 1 at both (a, b) and (b, a), i.e. 2ab in total."""
    w, x, y, z = range(4)
    entries = (  # (sign, first, second) per term, R00 .. R22
        ((1, w, w), (1, x, x), (-1, y, y), (-1, z, z)), ((2, x, y), (-2, w, z)), ((2, w, y), (2, x, z)),
        ((2, w, z), (2, x, y)), ((1, w, w), (-1, x, x), (1, y, y), (-1, z, z)), ((2, y, z), (-2, w, x)),
        ((2, x, z), (-2, w, y)), ((2, w, x), (2, y, z)), ((1, w, w), (-1, x, x), (-1, y, y), (1, z, z)),
    )
    table = np.zeros((16, 9))
    for column, terms in enumerate(entries):
        for sign, a, b in terms:
            if a == b:
                table[4 * a + a, column] += sign
            else:
                table[4 * a + b, column] += sign / 2
                table[4 * b + a, column] += sign / 2
    return table


_QUATERNION_PRODUCTS_TO_ROTMAT = _quaternion_products_to_rotmat()


@lru_cache(maxsize=16)
def _quaternion_table(dtype, device):
    return torch.tensor(_QUATERNION_PRODUCTS_TO_ROTMAT, dtype=dtype, device=device)


def quat_axis_angle_to_rotmat(axis_angle):
    """Axis-angle (..., 3) -> rotation matrices (..., 3, 3) by smplpytorch's quaternion route.

    The angle is the norm of ``axis_angle + 1e-8`` (per component), so zero vectors give exactly
    the identity without a NaN. The matrix is a fixed linear map of the quaternion's pairwise
    products (``_quaternion_products_to_rotmat``), applied as element-wise products and a sum so
    that autocast leaves it in the input's precision.
    """
    angle = torch.linalg.vector_norm(axis_angle + 1e-8, dim=-1, keepdim=True)
    half = angle * 0.5
    quat = torch.cat([torch.cos(half), torch.sin(half) * (axis_angle / angle)], dim=-1)
    quat = quat / torch.linalg.vector_norm(quat, dim=-1, keepdim=True)
    products = (quat[..., :, None] * quat[..., None, :]).flatten(-2)  # (..., 16)
    table = _quaternion_table(quat.dtype, quat.device)
    rotmat = (products[..., None] * table).sum(dim=-2)  # (..., 9)
    return rotmat.unflatten(-1, (3, 3))


class SMPLLayer(nn.Module):
    """SMPL with smplpytorch's ``SMPL_Layer`` semantics: ``(pose, betas, trans) -> (verts, joints)``.

    Buffers (state_dict names of the released checkpoints): ``th_betas`` (1,10), ``th_shapedirs``
    (6890,3,10), ``th_posedirs`` (6890,3,207), ``th_v_template`` (1,6890,3), ``th_J_regressor``
    (24,6890), ``th_weights`` (6890,24), all float32, and ``th_faces`` (13776,3) int64.
    ``kintree_parents`` is the first row of ``kintree_table`` (root entry 4294967295, unused).
    """

    def __init__(self, gender, model_dir):
        super().__init__()
        self.gender = gender
        self.model_path = smpl_model_path(gender, model_dir)
        model = load_smpl_model(self.model_path)

        def f32(array):
            return torch.tensor(np.asarray(array), dtype=torch.float32)

        self.register_buffer('th_betas', torch.zeros(1, NUM_BETAS))
        self.register_buffer('th_shapedirs', f32(model['shapedirs']))
        self.register_buffer('th_posedirs', f32(model['posedirs']))
        self.register_buffer('th_v_template', f32(model['v_template']).unsqueeze(0))
        self.register_buffer('th_J_regressor', f32(model['J_regressor']))
        self.register_buffer('th_weights', f32(model['weights']))
        self.register_buffer('th_faces', torch.tensor(model['f'], dtype=torch.int64))
        self.kintree_parents = [int(p) for p in model['kintree_table'][0]]
        self.num_joints = NUM_JOINTS
        self.center_idx = None

    def forward(self, pose_axisang, betas=None, trans=None):
        """pose_axisang (B,72) axis-angle, betas (B,10), trans (B,3) metres.

        Returns vertices (B,6890,3) and joints (B,24,3) in metres, in the dtype of ``pose_axisang``.
        ``betas``/``trans`` of None mean zeros.
        """
        batch = pose_axisang.shape[0]
        dtype, device = pose_axisang.dtype, pose_axisang.device
        if betas is None:
            betas = self.th_betas.expand(batch, -1)
        if trans is None:
            trans = pose_axisang.new_zeros(batch, 3)
        shapedirs, posedirs = self.th_shapedirs.to(dtype), self.th_posedirs.to(dtype)
        v_template, j_regressor = self.th_v_template.to(dtype), self.th_J_regressor.to(dtype)
        weights = self.th_weights.to(dtype)
        betas, trans = betas.to(dtype), trans.to(dtype)

        rotmats = quat_axis_angle_to_rotmat(pose_axisang.reshape(batch, NUM_JOINTS, 3))
        eye = torch.eye(3, dtype=dtype, device=device)
        pose_feature = (rotmats[:, 1:] - eye).reshape(batch, 9 * (NUM_JOINTS - 1))

        num_verts = v_template.shape[1]
        # Blend shapes as (B, k) @ (k, V*3) products on the stored (V, 3, k) layout (no copies).
        v_shaped = v_template + F.linear(betas, shapedirs.reshape(num_verts * 3, -1)).reshape(batch, num_verts, 3)
        joints_rest = left_multiply(j_regressor, v_shaped)
        v_posed = v_shaped + F.linear(pose_feature, posedirs.reshape(num_verts * 3, -1)).reshape(batch, num_verts, 3)

        global_rot, global_pos = self._forward_kinematics(rotmats, joints_rest)
        # Skinning transforms map rest-pose points: x -> R_g x + (t_g - R_g J_rest).
        skin = skinning_transforms(global_rot, global_pos, joints_rest)
        per_vertex = left_multiply(weights, skin)  # (B,6890,12): blended [R | t] per vertex
        verts = torch.einsum('bvij,bvj->bvi', per_vertex[..., :9].reshape(batch, -1, 3, 3), v_posed)
        verts = verts + per_vertex[..., 9:]
        # smplpytorch adds trans only when it is non-zero; adding zeros gives the same numbers.
        trans = trans.unsqueeze(1)
        return verts + trans, global_pos + trans

    def _forward_kinematics(self, rotmats, joints_rest):
        """Global rotations (B,24,3,3) and joint positions (B,24,3), composed per tree depth."""
        return forward_kinematics(rotmats, joints_rest, self.kintree_parents)
