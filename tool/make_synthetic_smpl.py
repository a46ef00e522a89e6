"""Write a synthetic stand-in for the SMPL body model and its regressor files.

    python tool/make_synthetic_smpl.py --out DIR [--seed N]

The generator is ``tool/synthetic/body_model.py``; see its docstring for what the mannequin is.
"""
import sys
from pathlib import Path

if __name__ == '__main__':  # entry script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402

from common.utils.cli import add_debug_flag, exit_on_expected_errors  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', required=True, help='output folder (use it as cfg.smpl_model_dir and cfg.data_dir)')
    parser.add_argument('--seed', type=int, default=0, help='random seed (default 0)')
    return add_debug_flag(parser).parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from tool.synthetic.body_model import make_synthetic_smpl  # SciPy: after --help
    out = make_synthetic_smpl(args.out, seed=args.seed)
    print(f'Synthetic SMPL model written to {out}')



def run_cli(argv=None):
    """:func:`main` for the command line: expected errors (a missing or unusable input, a full
    disk) end with ``ERROR: <message>`` and exit status 1 (``--debug``: the traceback)."""
    return exit_on_expected_errors(main, argv, ())


if __name__ == '__main__':
    run_cli()
