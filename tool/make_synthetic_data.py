"""Write a small synthetic data tree in the real on-disk formats
(docs/METHOD.md, "Data on disk").

    python tool/make_synthetic_data.py --root DIR --smpl DIR [--seed N] [--datasets PW3D,MSCOCO]

``--smpl`` is a folder made by ``tool/make_synthetic_smpl.py`` (the three SMPL pkl files plus
``J_regressor_extra.npy``, ``J_regressor_h36m_correct.npy``, ``J_regressor_coco_hip_smpl.npy``).
Point ``cfg.data_dir`` at ``--root`` and ``cfg.smpl_model_dir`` at ``--smpl`` to use the tree.
"""
import sys
from pathlib import Path

if __package__ in (None, ''):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import importlib  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402

import numpy as np  # noqa: E402

ALL_DATASETS = ('Human36M', 'MuCo', 'MSCOCO', 'MPII', 'PW3D')

# (file in the body-model folder, destination relative to the data root)
REGRESSOR_PLACES = (
    ('J_regressor_extra.npy', 'J_regressor_extra.npy'),
    ('J_regressor_h36m_correct.npy', 'Human36M/J_regressor_h36m_correct.npy'),
    ('J_regressor_coco_hip_smpl.npy', 'MSCOCO/J_regressor_coco_hip_smpl.npy'),
)


def copy_regressors(root, smpl_dir):
    """Copy the three regressor ``.npy`` files from ``smpl_dir`` to their places under ``root``."""
    root, smpl_dir = Path(root), Path(smpl_dir)
    for name, dest in REGRESSOR_PLACES:
        src = smpl_dir / name
        if not src.is_file():
            raise FileNotFoundError(
                f"'{name}' not found in '{smpl_dir}'. The synthetic data tree copies it from the body-model "
                "folder; make that folder with `python tool/make_synthetic_smpl.py --out DIR`.")
        (root / dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, root / dest)


def dataset_rng(seed, name):
    """Generator of one dataset's writer: independent per dataset, so subsets give the same files."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


def make_synthetic_data(root, smpl_dir, seed=0, datasets=ALL_DATASETS, verbose=False):
    """Write the synthetic tree of ``datasets`` under ``root`` (created if needed); returns ``Path(root)``.

    root: data root (becomes ``cfg.data_dir``); smpl_dir: synthetic body-model folder;
    seed: every random draw follows from it (same seed -> byte-identical files).
    """
    from common.options import BodyModelPaths
    from common.utils.smpl import SMPL
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    unknown = [name for name in datasets if name not in ALL_DATASETS]
    if unknown:
        raise ValueError(f"unknown dataset(s) {unknown}; choose from {list(ALL_DATASETS)}")
    copy_regressors(root, smpl_dir)
    smpl = SMPL(BodyModelPaths(smpl_model_dir=str(smpl_dir), regressor_dir=str(root)))
    for name in datasets:
        start = time.perf_counter()
        writer = importlib.import_module(f'tool.synthetic.{name.lower()}')
        writer.write(root, smpl, dataset_rng(seed, name))
        if verbose:
            print(f'{name}: written in {time.perf_counter() - start:.1f} s')
    return root


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--root', required=True, help='output data root (use as cfg.data_dir)')
    parser.add_argument('--smpl', required=True, help='synthetic body-model folder (tool/make_synthetic_smpl.py)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--datasets', default=','.join(ALL_DATASETS),
                        help=f'comma-separated subset of {",".join(ALL_DATASETS)}')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    datasets = tuple(name.strip() for name in args.datasets.split(',') if name.strip())
    root = make_synthetic_data(args.root, args.smpl, seed=args.seed, datasets=datasets, verbose=True)
    print(f'synthetic data tree written to {root}')


if __name__ == '__main__':
    main()
