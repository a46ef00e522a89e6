"""Write a small synthetic data tree in the real on-disk formats
(docs/METHOD.md, "Data on disk").

    python tool/make_synthetic_data.py --root DIR --smpl DIR [--seed N] [--datasets PW3D,MSCOCO] [--full-size]

``--smpl`` is a folder made by ``tool/make_synthetic_smpl.py`` (the three SMPL pkl files plus
``J_regressor_extra.npy``, ``J_regressor_h36m_correct.npy``, ``J_regressor_coco_hip_smpl.npy``).
Point ``cfg.data_dir`` at ``--root`` and ``cfg.smpl_model_dir`` at ``--smpl`` to use the tree.
``--full-size`` writes the images at each dataset's real resolution (for data-speed measurements;
about 16x the pixels, a few minutes to render).
"""
import sys
from pathlib import Path

if __package__ in (None, ''):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402

from common.utils.cli import add_debug_flag, exit_on_expected_errors  # noqa: E402
from tool.synthetic.tree import ALL_DATASETS, make_synthetic_data  # noqa: E402

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--root', required=True, help='output data root (use as cfg.data_dir)')
    parser.add_argument('--smpl', required=True, help='synthetic body-model folder (tool/make_synthetic_smpl.py)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--datasets', default=','.join(ALL_DATASETS),
                        help=f'comma-separated subset of {",".join(ALL_DATASETS)}')
    parser.add_argument('--full-size', action='store_true',
                        help="images at each dataset's real resolution (3DPW 1080x1920 / 1920x1080, "
                             'Human3.6M 1000x1002, MuCo 2048x2048, COCO 640x480-like, MPII 1280x720)')
    return add_debug_flag(parser).parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    datasets = tuple(name.strip() for name in args.datasets.split(',') if name.strip())
    root = make_synthetic_data(args.root, args.smpl, seed=args.seed, datasets=datasets, verbose=True,
                               full_size=args.full_size)
    print(f'synthetic data tree written to {root}')



def run_cli(argv=None):
    """:func:`main` for the command line: expected errors (a missing or unusable input, a full
    disk) end with ``ERROR: <message>`` and exit status 1 (``--debug``: the traceback)."""
    return exit_on_expected_errors(main, argv, ())


if __name__ == '__main__':
    run_cli()
