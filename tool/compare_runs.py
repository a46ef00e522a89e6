"""Compare the evaluations of one or more experiments:
``python tool/compare_runs.py EXP [EXP ...] [--eval_dir DIR ...] [--output_root DIR] [--best METRIC]``.

Reads the ``metrics.csv`` files that ``main/test.py`` appends to (``common.utils.run_csv``)
and prints, per evaluation set, a table of every experiment's evaluated epochs x metrics
(mm), the best epoch of each experiment marked ``*`` (lowest ``--best`` metric, default
``mpjpe``).  An experiment's evaluations are looked for in

* ``EXP/log/metrics.csv`` (``test.py`` writing into the experiment folder),
* ``<output_root>/eval_<name>/log/metrics.csv`` (the folder ``test.py`` falls back to when
  ``EXP`` is read-only), for ``output_root`` the
  folder holding ``EXP`` and the configured ``output_root`` (or ``--output_root``),
* every ``--eval_dir`` (the ``--out_dir`` of ``test.py``; its ``log/metrics.csv``), whose
  rows belong to the experiment of the snapshot they evaluated.

An epoch evaluated twice on one set shows its latest result.  Exit status 1 with one
``ERROR:`` line when no experiment has any evaluation.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import argparse  # noqa: E402

from common.errors import UserError  # noqa: E402
from common.utils import run_csv  # noqa: E402
from common.utils.cli import add_debug_flag, exit_on_expected_errors  # noqa: E402
from common.utils.table import format_table  # noqa: E402


class NoEvaluationsError(UserError):
    """None of the given experiments has a metrics.csv with rows."""


def build_parser():
    parser = argparse.ArgumentParser(description='Table of evaluation metrics per epoch and evaluation set.')
    parser.add_argument('experiments', nargs='+', metavar='EXP', help='experiment folders (output/exp_...)')
    parser.add_argument('--eval_dir', action='append', default=[],
                        help='an extra evaluation folder (the --out_dir of test.py); repeatable')
    parser.add_argument('--output_root', default=None,
                        help='where test.py put eval_<name>/ folders (default: the configured output_root)')
    parser.add_argument('--best', default='mpjpe', help='metric whose lowest value marks the best epoch')
    return add_debug_flag(parser)


def experiment_of(checkpoint):
    """The experiment folder of a snapshot path ``<exp>/checkpoint/snapshot_N.pth.tar``."""
    return os.path.realpath(os.path.dirname(os.path.dirname(checkpoint)))


def metric_files(exp, output_roots):
    """The ``metrics.csv`` files that may hold evaluations of experiment ``exp``, in reading order."""
    name = os.path.basename(os.path.normpath(exp))
    paths = [os.path.join(exp, 'log', run_csv.METRICS_FILE)]
    for root in output_roots:
        paths.append(os.path.join(root, f'eval_{name}', 'log', run_csv.METRICS_FILE))
    return list(dict.fromkeys(os.path.realpath(p) for p in paths))


def eval_dir_file(folder):
    """The ``metrics.csv`` of an evaluation folder (``<folder>/log/``, or the folder itself)."""
    nested = os.path.join(folder, 'log', run_csv.METRICS_FILE)
    return nested if os.path.isfile(nested) else os.path.join(folder, run_csv.METRICS_FILE)


def collect(experiments, eval_dirs, output_roots):
    """``{experiment label: {(testset, epoch): {metric: value_mm}}}``; the label is the folder
    name (the path when two names clash).  Rows of ``eval_dirs`` go to the given experiment
    whose snapshot they evaluated, else to an entry of their own."""
    real = {os.path.realpath(exp): exp for exp in experiments}
    names = [os.path.basename(os.path.normpath(exp)) for exp in experiments]
    label = {os.path.realpath(exp): (name if names.count(name) == 1 else exp)
             for exp, name in zip(experiments, names)}
    tables = {label[r]: {} for r in real}
    for exp_real, exp in real.items():
        for path in metric_files(exp, output_roots(exp)):
            run_csv.latest_metrics(run_csv.read_metrics(path), tables[label[exp_real]])
    for folder in eval_dirs:
        for row in run_csv.read_metrics(eval_dir_file(folder)):
            owner = experiment_of(row.checkpoint)
            name = label.get(owner, os.path.basename(owner))
            run_csv.latest_metrics([row], tables.setdefault(name, {}))
    return tables


def best_epochs(tables, metric):
    """``{(experiment, testset): epoch}`` with the lowest ``metric`` (sets lacking it: none)."""
    best = {}
    for exp, table in tables.items():
        for (testset, epoch), values in table.items():
            if metric not in values:
                continue
            key = (exp, testset)
            if key not in best or values[metric] < table[(testset, best[key])][metric]:
                best[key] = epoch
    return best


def comparison_text(tables, best_metric='mpjpe'):
    """The printed report: one table per evaluation set (rows: experiment, epoch; columns:
    metrics in mm, and ``best`` marking each experiment's best epoch by ``best_metric``)."""
    best = best_epochs(tables, best_metric)
    testsets = sorted({testset for table in tables.values() for testset, _ in table})
    blocks = []
    for testset in testsets:
        metrics = []
        for table in tables.values():
            for (name, _), values in table.items():
                metrics.extend(m for m in values if name == testset and m not in metrics)
        rows = []
        for exp, table in tables.items():
            for epoch in sorted(e for name, e in table if name == testset):
                values = table[(testset, epoch)]
                marker = '*' if best.get((exp, testset)) == epoch else ''
                rows.append([exp, epoch] + [values.get(m) for m in metrics] + [marker])
        header = ['experiment', 'epoch'] + [f'{m} (mm)' for m in metrics] + ['best']
        blocks.append(f'== {testset} ==\n' + format_table(header, rows))
    notes = [f'* = lowest {best_metric} of the experiment on that set']
    notes += [f'{exp}: no evaluations found' for exp, table in tables.items() if not table]
    return '\n\n'.join(blocks + ['\n'.join(notes)])


def main(argv=None):
    """Print the comparison; returns its text."""
    args = build_parser().parse_args(argv)
    if args.output_root is None:
        from main.config import cfg
        configured = [cfg.output_root]
    else:
        configured = [args.output_root]

    def output_roots(exp):
        return [os.path.dirname(os.path.abspath(os.path.normpath(exp)))] + configured

    tables = collect(args.experiments, args.eval_dir, output_roots)
    if not any(tables.values()):
        looked = [p for exp in args.experiments for p in metric_files(exp, output_roots(exp))]
        looked += [eval_dir_file(folder) for folder in args.eval_dir]
        raise NoEvaluationsError('No evaluations found; looked for ' + ', '.join(looked)
                                 + ' (main/test.py writes them).')
    text = comparison_text(tables, args.best)
    print(text)
    return text


if __name__ == '__main__':
    exit_on_expected_errors(main, None)
