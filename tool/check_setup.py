"""Check the configured data tree once: list every file a run would stop on, and where it comes from.

    python tool/check_setup.py [--cfg FILE] [--train | --test] [--continue] [--model CHECKPOINT]
                               [--data_dir DIR] [--smpl_dir DIR] [--images N]

Inspects what training (``trainset_3d`` + ``trainset_2d``) and testing (``testset``; with
``crowd: True`` the 3DPW-Crowd files) with the configuration would read: the SMPL files and
regressors, every annotation file of every selected set (parsed, top-level layout checked), each
image folder and a few decoded images per annotation file, the ``--continue`` backbone warm start
and, with ``--model``, a checkpoint.  The paths come from the loaders' own declarations
(``data_files`` of each dataset class), so this checks exactly what a run opens.  Nothing is
written.  Exit status 1 when a required file is missing or malformed (the selected sets cannot
run), 0 otherwise; a missing optional file (the warm start without ``--continue``) only warns.
"""
import sys
from pathlib import Path

if __package__ in (None, ''):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402

from common.errors import ConfigError  # noqa: E402
from common.utils.cli import add_debug_flag, apply_cfg_file, exit_on_expected_errors  # noqa: E402
from common.utils.required_files import RequiredFile, Requirements, inspect_files  # noqa: E402
from main.config import cfg  # noqa: E402

CHECKPOINT_SOURCE = ("your own run (<exp>/checkpoint/snapshot_N.pth.tar) or the released SGRE model "
                     "(https://1drv.ms/f/s!AhpKYLhXKpH7g8t-xRI2d3_U6rPWeg?e=KNF5QQ, README of "
                     "https://github.com/kennethwdk/SGRE)")
LABELS = {'missing': 'MISSING', 'malformed': 'MALFORMED', 'images': 'IMAGES'}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--cfg', default='', help='YAML file overriding config options (as for train.py/test.py)')
    selection = parser.add_mutually_exclusive_group()
    selection.add_argument('--train', action='store_true', help='check only what training reads')
    selection.add_argument('--test', action='store_true', help='check only what testing reads')
    parser.add_argument('--continue', dest='warm_start', action='store_true',
                        help='training starts with --continue: the backbone warm start is required')
    parser.add_argument('--model', default='', help='also check this checkpoint (test snapshot or demo --model)')
    parser.add_argument('--data_dir', default='', help='data root to check (default: cfg.data_dir)')
    parser.add_argument('--smpl_dir', default='', help='SMPL model folder to check (default: cfg.smpl_model_dir)')
    parser.add_argument('--images', type=int, default=3, help='images decoded per annotation file (default 3)')
    return add_debug_flag(parser).parse_args(argv)


def declared_files(name, options, split):
    """The dataset's declared files; a set that has no such split is a configuration error."""
    from data.registry import dataset_files
    try:
        return dataset_files(name, options, split).values()
    except ValueError as err:
        raise ConfigError(f"{name} ({split}): {err}") from None


def collect(train, test, warm_start, model):
    """``Requirements`` of the selection under the current ``cfg``."""
    from common.utils.checkpoint import read_network_state, warm_start_file
    from common.utils.smpl import body_model_files
    options = cfg.data_options()
    needs = Requirements()
    needs.add_all(body_model_files(cfg.body_model_paths()).values(), 'body model')
    if train:
        for name in list(cfg.trainset_3d) + list(cfg.trainset_2d):
            needs.add_all(declared_files(name, options, 'train'), f'{name} (train)')
        needs.add(warm_start_file(cfg.root_dir, required=warm_start), 'train --continue')
        if cfg.imagenet_weights:
            needs.add(RequiredFile(str(cfg.imagenet_weights), 'ImageNet ResNet weights (cfg.imagenet_weights)',
                                   'a torchvision-format ResNet state dict you saved locally'), 'train')
        if cfg.use_occlusion:
            from common.utils.occlusion import VOC_URL
            needs.add(RequiredFile(str(cfg.voc_dir), 'Pascal VOC 2012 root (cfg.voc_dir, use_occlusion)', VOC_URL,
                                   is_dir=True), 'train')
    if test:
        from data.registry import evaluation_names
        for name in evaluation_names(cfg.testset, cfg.crowd):
            needs.add_all(declared_files(name, options, 'test'), f'{name} (test)')
    if model:
        needs.add(RequiredFile(str(model), 'SGRE checkpoint (--model)', CHECKPOINT_SOURCE,
                               validate=read_network_state), 'test')
    return needs


def describe(finding, readers):
    """The lines reporting one finding."""
    entry = finding.file
    label = LABELS[finding.problem] + ('' if finding.is_error else ' (optional)')
    lines = [f"{label:<20} {entry.path}"]
    if finding.detail:
        lines.append(f"{'':<21}{finding.detail}")
    lines.append(f"{'':<21}what: {entry.what}; read by: {', '.join(readers)}")
    lines.append(f"{'':<21}from: {entry.source}")
    return lines


def selection_text(train, test):
    parts = []
    if train:
        parts.append(f"training on {', '.join(list(cfg.trainset_3d) + list(cfg.trainset_2d)) or 'nothing'}")
    if test:
        from data.registry import evaluation_names
        parts.append(f"testing on {', '.join(evaluation_names(cfg.testset, cfg.crowd))}")
    return '; '.join(parts)


def main(argv=None):
    """Inspect the selection; print the report; return the exit status (0 ready, 1 not)."""
    args = parse_args(argv)
    apply_cfg_file(args.cfg)
    if args.data_dir:
        cfg.data_dir = args.data_dir
    if args.smpl_dir:
        cfg.smpl_model_dir = args.smpl_dir
    train, test = (args.train or not args.test), (args.test or not args.train)
    needs = collect(train, test, args.warm_start, args.model)
    print(f"Checking the files for {selection_text(train, test)}")
    print(f"  data_dir       = {cfg.data_dir}\n  smpl_model_dir = {cfg.smpl_model_dir}\n")
    findings = inspect_files(needs.files.values(), image_samples=max(args.images, 0))
    for finding in findings:
        print('\n'.join(describe(finding, needs.readers[finding.file.path])))
    errors = [f for f in findings if f.is_error]
    warnings = len(findings) - len(errors)
    summary = f"Checked {len(needs.files)} files and folders: {len(errors)} required missing or malformed"
    print(('\n' if findings else '') + summary + (f", {warnings} optional missing." if warnings else '.'))
    if errors:
        print(f"ERROR: the selected sets cannot run: fix the {len(errors)} required file(s) listed above.")
        return 1
    print('Ready: every required file is present and well-formed.')
    return 0


def run_cli(argv=None):
    """:func:`main` for the command line: its exit status; a bad option ends with one ``ERROR:`` line."""
    sys.exit(exit_on_expected_errors(main, argv))


if __name__ == '__main__':
    run_cli()
