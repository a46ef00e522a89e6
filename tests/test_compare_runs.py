"""tool/compare_runs.py on experiments whose metrics.csv files are written by the test."""
import pytest

from common.utils import run_csv
from tool import compare_runs


def evaluate(log_dir, exp, epoch, testset, mpjpe, pa_mpjpe=50.0):
    """Append one evaluation of ``<exp>/checkpoint/snapshot_<epoch>`` to ``<log_dir>/metrics.csv``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = exp / 'checkpoint' / f'snapshot_{epoch}.pth.tar'
    run_csv.append_metrics(log_dir / 'metrics.csv', run_csv.metric_rows(
        epoch, testset, {'mpjpe': mpjpe, 'pa_mpjpe': pa_mpjpe, 'num_samples': 3}, checkpoint))


def table_rows(text, testset):
    """``{(experiment, epoch): [cells]}`` of the block of ``testset`` in the printed text."""
    block = text.split(f'== {testset} ==\n')[1].split('\n\n')[0].splitlines()[2:]
    return {(cells[0], int(cells[1])): cells[2:] for cells in (line.split() for line in block)}


def test_epochs_sets_and_best_epoch_of_several_experiments(tmp_path, capsys):
    a, b = tmp_path / 'runs' / 'exp_A', tmp_path / 'runs' / 'exp_B'
    for epoch, mpjpe in ((0, 100.0), (1, 90.5), (2, 95.0)):
        evaluate(a / 'log', a, epoch, 'PW3D', mpjpe)
    evaluate(a / 'log', a, 1, 'PW3D-OC', 120.0)
    evaluate(b / 'log', b, 4, 'PW3D', 88.0)
    evaluate(b / 'log', b, 4, 'PW3D', 87.25)        # evaluated again: the latest result counts
    text = compare_runs.main([str(a), str(b), '--output_root', str(tmp_path / 'nowhere')])
    assert capsys.readouterr().out.strip() == text.strip()
    assert table_rows(text, 'PW3D') == {
        ('exp_A', 0): ['100.00', '50.00'], ('exp_A', 1): ['90.50', '50.00', '*'], ('exp_A', 2): ['95.00', '50.00'],
        ('exp_B', 4): ['87.25', '50.00', '*']}
    assert table_rows(text, 'PW3D-OC') == {('exp_A', 1): ['120.00', '50.00', '*']}
    header = text.split('== PW3D ==\n')[1].splitlines()[0].split()
    assert header == ['experiment', 'epoch', 'mpjpe', '(mm)', 'pa_mpjpe', '(mm)', 'best']


def test_best_by_another_metric(tmp_path):
    exp = tmp_path / 'exp_A'
    evaluate(exp / 'log', exp, 0, 'PW3D', 80.0, pa_mpjpe=60.0)
    evaluate(exp / 'log', exp, 1, 'PW3D', 90.0, pa_mpjpe=40.0)
    text = compare_runs.main([str(exp), '--best', 'pa_mpjpe', '--output_root', str(tmp_path / 'x')])
    assert table_rows(text, 'PW3D')[('exp_A', 1)][-1] == '*'
    assert 'lowest pa_mpjpe' in text


def test_evaluations_in_fallback_and_out_dir_folders_belong_to_their_experiment(tmp_path):
    root = tmp_path / 'output'
    exp = tmp_path / 'released' / 'exp_R'                        # read-only: nothing in its log/
    (exp / 'checkpoint').mkdir(parents=True)
    evaluate(root / 'eval_exp_R' / 'log', exp, 5, 'PW3D', 78.4)   # test.py's fallback folder
    evaluate(root / 'eval_exp_R' / 'log', exp, 6, 'PW3D', 79.0)        # a later evaluation there
    evaluate(tmp_path / 'mine' / 'log', exp, 7, 'PW3D-crowd', 93.3)     # --out_dir mine
    other = tmp_path / 'elsewhere' / 'exp_Z'
    evaluate(tmp_path / 'mine' / 'log', other, 1, 'PW3D', 99.0)         # another experiment's snapshot
    text = compare_runs.main([str(exp), '--output_root', str(root), '--eval_dir', str(tmp_path / 'mine')])
    assert table_rows(text, 'PW3D') == {('exp_R', 5): ['78.40', '50.00', '*'], ('exp_R', 6): ['79.00', '50.00'],
                                        ('exp_Z', 1): ['99.00', '50.00', '*']}
    assert table_rows(text, 'PW3D-crowd') == {('exp_R', 7): ['93.30', '50.00', '*']}


def test_no_evaluations_is_one_error_line_naming_where_it_looked(tmp_path, capsys):
    exp = tmp_path / 'exp_empty'
    exp.mkdir()
    with pytest.raises(SystemExit) as info:
        compare_runs.exit_on_expected_errors(compare_runs.main, [str(exp), '--output_root', str(tmp_path)])
    message = str(info.value.code)
    assert message.startswith('ERROR: No evaluations found') and '\n' not in message
    assert str(exp / 'log' / 'metrics.csv') in message


def test_an_experiment_without_evaluations_is_named_beside_the_others(tmp_path):
    exp, empty = tmp_path / 'exp_A', tmp_path / 'exp_E'
    evaluate(exp / 'log', exp, 0, 'PW3D', 80.0)
    empty.mkdir()
    text = compare_runs.main([str(exp), str(empty), '--output_root', str(tmp_path / 'x')])
    assert 'exp_E: no evaluations found' in text
