"""Write the whole synthetic data tree: every dataset's writer plus the regressor files
(command line: ``tool/make_synthetic_data.py``; docs/METHOD.md, "Data on disk")."""
import importlib
import shutil
import time
import zlib
from pathlib import Path

import numpy as np

ALL_DATASETS = ('Human36M', 'MuCo', 'MSCOCO', 'MPII', 'PW3D')

# (file in the body-model folder, destination relative to the data root)
REGRESSOR_PLACES = (
    ('J_regressor_extra.npy', 'J_regressor_extra.npy'),
    ('J_regressor_h36m_correct.npy', 'Human36M/J_regressor_h36m_correct.npy'),
    ('J_regressor_coco_hip_smpl.npy', 'MSCOCO/J_regressor_coco_hip_smpl.npy'),
)


def copy_regressors(root, smpl_dir):
    """Copy the three regressor ``.npy`` files from ``smpl_dir`` to their places under ``root``
    (``make_synthetic_data`` has checked that they exist)."""
    root, smpl_dir = Path(root), Path(smpl_dir)
    for name, dest in REGRESSOR_PLACES:
        (root / dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(smpl_dir / name, root / dest)


def dataset_rng(seed, name):
    """Generator of one dataset's writer: independent per dataset, so subsets give the same files."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


def make_synthetic_data(root, smpl_dir, seed=0, datasets=ALL_DATASETS, verbose=False, full_size=False):
    """Write the synthetic tree of ``datasets`` under ``root`` (created if needed); returns ``Path(root)``.

    root: data root (becomes ``cfg.data_dir``); smpl_dir: synthetic body-model folder;
    seed: every random draw follows from it (same seed -> byte-identical files);
    full_size: images at each dataset's real resolution (3DPW 1080x1920 and 1920x1080,
    Human3.6M 1000x1002, MuCo 2048x2048, COCO 640x480-like, MPII 1280x720) with cameras,
    boxes and joints to match; off: the small images the tests use (same people and layout,
    different random draws, since the image noise draws depend on the size).
    """
    from common.options import BodyModelPaths
    from common.utils.smpl import SMPL
    root = Path(root)
    unknown = [name for name in datasets if name not in ALL_DATASETS]
    if unknown:
        raise ValueError(f"unknown dataset(s) {unknown}; choose from {list(ALL_DATASETS)}")
    missing = [name for name, _ in REGRESSOR_PLACES if not (Path(smpl_dir) / name).is_file()]
    if missing:  # checked before anything is created under ``root``
        raise FileNotFoundError(
            f"{missing} not found in '{smpl_dir}'. The synthetic data tree copies them from the "
            "body-model folder; make that folder with `python tool/make_synthetic_smpl.py --out DIR`.")
    root.mkdir(parents=True, exist_ok=True)
    copy_regressors(root, smpl_dir)
    smpl = SMPL(BodyModelPaths(smpl_model_dir=str(smpl_dir), regressor_dir=str(root)))
    for name in datasets:
        start = time.perf_counter()
        writer = importlib.import_module(f'tool.synthetic.{name.lower()}')
        writer.write(root, smpl, dataset_rng(seed, name), full_size=full_size)
        if verbose:
            print(f'{name}: written in {time.perf_counter() - start:.1f} s')
    return root
