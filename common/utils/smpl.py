"""The SMPL wrapper of SGRE (docs/METHOD.md, "Body model"): three gendered layers, the
30-joint set and the 15-joint graph set.

``get_smpl(paths)`` gives the datasets one shared CPU instance per ``BodyModelPaths``; the
network builds its own layer with ``smpl.make_layer('neutral')`` (it is moved to the GPU and
overwritten by checkpoints). Files are read from ``paths.smpl_model_dir`` (pkl files) and
``paths.regressor_dir`` (``J_regressor_extra.npy``, the data root), each parsed once per process.
"""
import os
from functools import partial
from pathlib import Path

import numpy as np

from common.options import BodyModelPaths
from common.utils.required_files import RequiredFile
from common.utils.transforms import build_adj, normalize_adj
from common.utils.smpl_layer import (  # noqa: F401  (load_smpl_model is part of this module's API)
    GENDERS, NUM_VERTICES, SMPL_MODEL_FILES, SYNTHETIC_HINT, SMPLFileError, SMPLFormatError, SMPLLayer,
    SMPLUnsafeFileError, load_smpl_model, smpl_model_path)

__all__ = ['SMPL', 'get_smpl', 'load_smpl_model', 'load_regressor', 'smpl_model_path', 'build_joint_regressor',
           'body_model_files', 'regressor_file',
           'SMPLFileError', 'SMPLFormatError', 'SMPLUnsafeFileError', 'GENDERS', 'SMPL_MODEL_FILES']

JOINTS_NAME = (
    'Pelvis', 'L_Hip', 'R_Hip', 'Torso', 'L_Knee', 'R_Knee', 'Spine', 'L_Ankle', 'R_Ankle', 'Chest',
    'L_Toe', 'R_Toe', 'Neck', 'L_Thorax', 'R_Thorax', 'Head', 'L_Shoulder', 'R_Shoulder', 'L_Elbow',
    'R_Elbow', 'L_Wrist', 'R_Wrist', 'L_Hand', 'R_Hand', 'Nose', 'L_Eye', 'R_Eye', 'L_Ear', 'R_Ear',
    'Head_top')
FLIP_PAIRS = ((1, 2), (4, 5), (7, 8), (10, 11), (13, 14), (16, 17), (18, 19), (20, 21), (22, 23),
              (25, 26), (27, 28))
SKELETON = ((0, 1), (1, 4), (4, 7), (7, 10), (0, 2), (2, 5), (5, 8), (8, 11), (0, 3), (3, 6), (6, 9),
            (9, 14), (14, 17), (17, 19), (19, 21), (21, 23), (9, 13), (13, 16), (16, 18), (18, 20),
            (20, 22), (9, 12), (12, 24), (24, 15), (24, 25), (24, 26), (25, 27), (26, 28), (24, 29))
FACE_KPS_VERTEX = (331, 2802, 6262, 3489, 3990)  # Nose, L_Eye, R_Eye, L_Ear, R_Ear
HEAD_TOP_EXTRA_ROW = 3  # row of J_regressor_extra.npy (SPIN's LSP head top)

GRAPH_JOINTS_NAME = ('Pelvis', 'L_Hip', 'R_Hip', 'L_Knee', 'R_Knee', 'L_Ankle', 'R_Ankle', 'Neck',
                     'Head_top', 'L_Shoulder', 'R_Shoulder', 'L_Elbow', 'R_Elbow', 'L_Wrist', 'R_Wrist')
GRAPH_FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (9, 10), (11, 12), (13, 14))
GRAPH_SKELETON = ((0, 1), (1, 3), (3, 5), (0, 2), (2, 4), (4, 6), (0, 7), (7, 8), (7, 9), (9, 11),
                  (11, 13), (7, 10), (10, 12), (12, 14))

EXTRA_REGRESSOR_FILE = 'J_regressor_extra.npy'
# Where the regressor files come from: the 3DCrowdNet release's data instructions
# (github.com/hongsukchoi/3DCrowdNet_RELEASE, README and assets/directory.md).
REGRESSOR_FOLDER_URL = 'https://drive.google.com/drive/folders/187Azod6z13-dS7W5wHerCTgniHYet-yh'
REGRESSOR_SOURCES = {
    EXTRA_REGRESSOR_FILE: ('cfg.data_dir', "SPIN's extra-joint regressor, as linked from the 3DCrowdNet README "
                           "(https://drive.google.com/file/d/1B9e65ahe6TRGv7xE45sScREAAznw9H4t; also SPIN's "
                           "fetch_data.sh, https://github.com/nkolot/SPIN)"),
    'J_regressor_h36m_correct.npy': ('cfg.data_dir/Human36M', 'the I2L-MeshNet / 3DCrowdNet data release '
                                     f'(J_regressor_*.npy folder, {REGRESSOR_FOLDER_URL})'),
    'J_regressor_coco_hip_smpl.npy': ('cfg.data_dir/MSCOCO', 'the I2L-MeshNet / 3DCrowdNet data release '
                                      f'(J_regressor_*.npy folder, {REGRESSOR_FOLDER_URL})'),
}


def missing_regressor_message(path):
    """Error text for a missing regressor ``.npy``: the file, its folder and where users get it."""
    path = Path(path)
    place, source = REGRESSOR_SOURCES.get(path.name, ('its dataset folder', 'the dataset release (see README)'))
    return (f"Joint regressor file '{path.name}' not found in '{path.parent}' ({place}).\n"
            f"It comes from {source}; the README's data section shows where it goes.\n" + SYNTHETIC_HINT)


SMPL_SOURCES = {
    'neutral': 'the SMPLify website, https://smplify.is.tue.mpg.de (free registration; the gender-neutral '
               'model of SMPLify, renamed to this name)',
    'male': 'the SMPL website, https://smpl.is.tue.mpg.de (free registration; SMPL v1.0.0 for Python, '
            'renamed to this name)',
    'female': 'the SMPL website, https://smpl.is.tue.mpg.de (free registration; SMPL v1.0.0 for Python, '
              'renamed to this name)',
}


def regressor_file(path, min_rows, what):
    """``RequiredFile`` of a joint regressor ``.npy`` (validated by ``load_regressor``)."""
    place, source = REGRESSOR_SOURCES.get(Path(path).name, ('its dataset folder', 'the dataset release'))
    return RequiredFile(str(path), f'{what} ({place})', source,
                        validate=partial(load_regressor, min_rows=min_rows))


def body_model_files(paths):
    """``{role: RequiredFile}`` of what ``SMPL(paths)`` reads: the three SMPL pkl files
    (roles 'neutral', 'male', 'female') and 'J_regressor_extra'."""
    files = {gender: RequiredFile(str(smpl_model_path(gender, paths.smpl_model_dir)),
                                  f'SMPL {gender} body model (cfg.smpl_model_dir)', SMPL_SOURCES[gender],
                                  validate=load_smpl_model)
             for gender in GENDERS}
    files['J_regressor_extra'] = regressor_file(Path(paths.regressor_dir) / EXTRA_REGRESSOR_FILE,
                                                HEAD_TOP_EXTRA_ROW + 1, 'extra joint regressor (head top)')
    return files


_REGRESSOR_CACHE = {}


def load_regressor(path, min_rows=1):
    """A joint regressor ``.npy`` (R, 6890) as a read-only float64 array, read once per process."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise SMPLFileError(missing_regressor_message(path))
    stat = os.stat(path)
    signature = (stat.st_mtime_ns, stat.st_size)
    cached = _REGRESSOR_CACHE.get(str(path))
    if cached is None or cached[0] != signature:
        array = np.load(path, allow_pickle=False).astype(np.float64)
        array.setflags(write=False)
        cached = (signature, array)
        _REGRESSOR_CACHE[str(path)] = cached
    array = cached[1]
    if array.ndim != 2 or array.shape[1] != NUM_VERTICES or array.shape[0] < min_rows:
        raise SMPLFormatError(
            f"Regressor file '{path}' has shape {array.shape}; expected (R, {NUM_VERTICES}) with R >= {min_rows}.")
    return array


def build_joint_regressor(smpl_j_regressor, extra_regressor):
    """The (30, 6890) float32 regressor: 24 SMPL rows, five one-hot face-vertex rows, head top."""
    face_rows = np.zeros((len(FACE_KPS_VERTEX), NUM_VERTICES))
    face_rows[np.arange(len(FACE_KPS_VERTEX)), FACE_KPS_VERTEX] = 1.0
    head_top = extra_regressor[HEAD_TOP_EXTRA_ROW:HEAD_TOP_EXTRA_ROW + 1]
    return np.concatenate([smpl_j_regressor, face_rows, head_top], axis=0).astype(np.float32)


def graph_adjacency(joint_num, skeleton, flip_pairs):
    """Normalised graph adjacency D^-1/2 (A + I) D^-1/2 (joint_num, joint_num) float64 over
    the bones and the flip pairs."""
    return normalize_adj(build_adj(joint_num, skeleton, flip_pairs))


class SMPL:
    """SGRE's SMPL wrapper (plain object, not an ``nn.Module``).

    paths: ``BodyModelPaths``; ``model_dir`` and ``data_dir`` keep its two folders as strings.
    """

    def __init__(self, paths):
        if not isinstance(paths, BodyModelPaths):
            raise TypeError(f'SMPL needs a common.options.BodyModelPaths, got {type(paths).__name__}')
        self.paths = paths
        self.model_dir = str(paths.smpl_model_dir)
        self.data_dir = str(paths.regressor_dir)
        self.layer = {gender: self.make_layer(gender) for gender in GENDERS}
        neutral = load_smpl_model(smpl_model_path('neutral', self.model_dir))

        self.vertex_num = NUM_VERTICES
        self.face = np.array(neutral['f'], dtype=np.int64)
        self.shape_param_dim = 10
        self.vposer_code_dim = 32
        self.face_kps_vertex = FACE_KPS_VERTEX
        self.parents = list(self.layer['neutral'].kintree_parents)

        extra = load_regressor(body_model_files(paths)['J_regressor_extra'].path, min_rows=HEAD_TOP_EXTRA_ROW + 1)
        self.joint_regressor = build_joint_regressor(neutral['J_regressor'], extra)
        self.orig_joint_num = 24
        self.joint_num = len(JOINTS_NAME)
        self.joints_name = JOINTS_NAME
        self.flip_pairs = FLIP_PAIRS
        self.skeleton = SKELETON
        self.root_joint_idx = JOINTS_NAME.index('Pelvis')

        self.graph_joint_num = len(GRAPH_JOINTS_NAME)
        self.graph_joints_name = GRAPH_JOINTS_NAME
        self.graph_flip_pairs = GRAPH_FLIP_PAIRS
        self.graph_skeleton = GRAPH_SKELETON
        self.graph_joint_idx = [JOINTS_NAME.index(name) for name in GRAPH_JOINTS_NAME]
        self.graph_adj = graph_adjacency(self.graph_joint_num, GRAPH_SKELETON, GRAPH_FLIP_PAIRS)

    def make_layer(self, gender='neutral'):
        """A fresh ``SMPLLayer`` of ``gender`` (own buffers; the pkl is parsed only once per process)."""
        return SMPLLayer(gender, model_dir=self.model_dir)

    def reduce_joint_set(self, joint):
        """(B, 30, C) -> (B, 15, C): the graph joints in ``graph_joints_name`` order (array or tensor)."""
        return joint[:, self.graph_joint_idx]


_SMPL_CACHE = {}


def get_smpl(paths):
    """The shared CPU ``SMPL`` instance of ``paths`` (a ``BodyModelPaths``); treat it as read-only.

    Cached per pair of resolved folders, so equal paths spelled differently share one instance.
    """
    if not isinstance(paths, BodyModelPaths):
        raise TypeError(f'get_smpl needs a common.options.BodyModelPaths, got {type(paths).__name__}')
    key = BodyModelPaths(smpl_model_dir=str(Path(paths.smpl_model_dir).expanduser().resolve()),
                         regressor_dir=str(Path(paths.regressor_dir).expanduser().resolve()))
    if key not in _SMPL_CACHE:
        _SMPL_CACHE[key] = SMPL(key)
    return _SMPL_CACHE[key]
