"""Watching training: train_losses.csv, metrics.csv, training.png and the TensorBoard scalars
(common/utils/run_csv.py, common/utils/training_figure.py, common/training_monitor.py)."""
import csv
import sys
import types
from pathlib import Path

import cv2
import pytest

from common.logger import ColorLogger
from common.training_monitor import TrainingMonitor
from common.utils import run_csv
from common.utils.training_figure import PANEL_HEIGHT, fractional_epochs, write_training_figure


def raw_rows(path):
    with open(path, newline='') as f:
        return list(csv.reader(f))


@pytest.fixture
def logger(tmp_path):
    log = ColorLogger(str(tmp_path / 'log'), 'train_logs.txt', console=False)
    yield log
    log.close()


@pytest.fixture
def no_tensorboard(monkeypatch):
    """``from torch.utils.tensorboard import ...`` fails as without the package."""
    monkeypatch.setitem(sys.modules, 'torch.utils.tensorboard', None)


def test_loss_csv_has_one_header_and_a_row_per_iteration_flushed_per_epoch(tmp_path):
    path = tmp_path / 'train_losses.csv'
    writer = run_csv.LossCsv(path)
    writer.add(0, 0, 0, 1e-3, {'joint': 0.5, 'mesh': 0.25})
    assert not path.exists()                      # buffered until the epoch ends
    writer.add(0, 1, 1, 1e-3, {'joint': 0.125, 'mesh': 2.0})
    writer.flush()
    writer.add(1, 0, 2, 1e-4, {'joint': 3.0, 'mesh': 1.5})
    writer.flush()
    rows = raw_rows(path)
    assert rows[0] == ['epoch', 'iteration', 'step', 'lr', 'joint', 'mesh', 'total']
    assert [[float(v) for v in row] for row in rows[1:]] == [
        [0, 0, 0, 1e-3, 0.5, 0.25, 0.75], [0, 1, 1, 1e-3, 0.125, 2.0, 2.125], [1, 0, 2, 1e-4, 3.0, 1.5, 4.5]]


def test_readers_skip_a_line_cut_short_by_a_crash(tmp_path):
    path = tmp_path / 'train_losses.csv'
    path.write_text('epoch,iteration,step,lr,a,total\n0,0,0,0.001,1.0,1.0\n0,1,1,0.0')
    assert run_csv.read_loss_csv(path)[1] == [['0', '0', '0', '0.001', '1.0', '1.0']]
    metrics = tmp_path / 'metrics.csv'
    metrics.write_text('epoch,testset,metric,value_mm,checkpoint\n3,PW3D,mpjpe,80.5,/x/snapshot_3.pth.tar\n4,PW3D,mp')
    assert run_csv.read_metrics(metrics) == [run_csv.MetricRow(3, 'PW3D', 'mpjpe', 80.5, '/x/snapshot_3.pth.tar')]


def test_metrics_are_appended_with_one_header(tmp_path):
    path = tmp_path / 'metrics.csv'
    summary = {'mpjpe': 91.25, 'pa_mpjpe': 55.5, 'mpvpe': 110.0, 'num_samples': 7, 'per_sequence': {'a': {}}}
    run_csv.append_metrics(path, run_csv.metric_rows(3, 'PW3D', summary, '/e/checkpoint/snapshot_3.pth.tar'))
    run_csv.append_metrics(path, run_csv.metric_rows(3, 'PW3D-OC', {'mpjpe': 120.0}, '/e/snapshot_3.pth.tar'))
    assert raw_rows(path) == [
        ['epoch', 'testset', 'metric', 'value_mm', 'checkpoint'],
        ['3', 'PW3D', 'mpjpe', '91.25', '/e/checkpoint/snapshot_3.pth.tar'],
        ['3', 'PW3D', 'pa_mpjpe', '55.5', '/e/checkpoint/snapshot_3.pth.tar'],
        ['3', 'PW3D', 'mpvpe', '110.0', '/e/checkpoint/snapshot_3.pth.tar'],
        ['3', 'PW3D-OC', 'mpjpe', '120.0', '/e/snapshot_3.pth.tar']]


def test_fractional_epochs_spread_each_epoch_over_one_unit():
    assert list(fractional_epochs([0, 0, 0, 0, 1, 1], [0, 1, 2, 3, 0, 1])) == [0, 0.25, 0.5, 0.75, 1, 1.5]


def test_monitor_writes_csv_and_figure_each_epoch_and_says_once_that_tensorboard_is_missing(
        tmp_path, logger, no_tensorboard):
    log_dir = tmp_path / 'log'
    monitor = TrainingMonitor(log_dir, logger)
    for step in range(4):
        monitor.record(step // 2, step % 2, step, 1e-3, {'a': 1.0 / (step + 1), 'b': 0.5})
        if step % 2:
            monitor.end_epoch()
            assert len(raw_rows(log_dir / 'train_losses.csv')) == step + 2   # header + rows so far
    monitor.close()
    image = cv2.imread(str(log_dir / 'training.png'))
    assert image.shape[0] == 2 * PANEL_HEIGHT                                # total + terms, no evaluations
    # evaluations appear as a third panel
    run_csv.append_metrics(log_dir / 'metrics.csv', run_csv.metric_rows(0, 'PW3D', {'mpjpe': 90.0}, 'x'))
    write_training_figure(log_dir)
    assert cv2.imread(str(log_dir / 'training.png')).shape[0] == 3 * PANEL_HEIGHT
    text = (log_dir / 'train_logs.txt').read_text()
    assert text.count('tensorboard package is not installed') == 1
    assert not (log_dir / 'tensorboard').exists()


def test_monitor_writes_tensorboard_scalars_when_the_package_is_there(tmp_path, logger, monkeypatch):
    calls = []

    class FakeWriter:
        def __init__(self, folder):
            calls.append(('open', folder))

        def add_scalar(self, tag, value, step):
            calls.append((tag, value, step))

        def flush(self):
            calls.append(('flush',))

        def close(self):
            calls.append(('close',))

    fake = types.ModuleType('torch.utils.tensorboard')
    fake.SummaryWriter = FakeWriter
    monkeypatch.setitem(sys.modules, 'torch.utils.tensorboard', fake)
    monitor = TrainingMonitor(tmp_path / 'log', logger)
    monitor.record(0, 0, 7, 0.01, {'a': 1.5, 'b': 0.25})
    monitor.end_epoch()
    monitor.close()
    assert calls == [('open', str(tmp_path / 'log' / 'tensorboard')), ('loss/a', 1.5, 7), ('loss/b', 0.25, 7),
                     ('loss/total', 1.75, 7), ('lr', 0.01, 7), ('flush',), ('close',)]
    assert 'not installed' not in (tmp_path / 'log' / 'train_logs.txt').read_text()


def test_a_resumed_run_starts_its_csv_with_the_earlier_epochs(tmp_path, logger, no_tensorboard):
    earlier = tmp_path / 'earlier' / 'log'
    earlier.mkdir(parents=True)
    (earlier / 'train_losses.csv').write_text(
        'epoch,iteration,step,lr,a,total\n0,0,0,0.001,4.0,4.0\n0,1,1,0.001,3.0,3.0\n'
        '1,0,2,0.001,2.0,2.0\n1,1,3,0.001,1.0,1.0\n')
    monitor = TrainingMonitor(tmp_path / 'log', logger)
    monitor.carry_over(earlier, 1)        # resumed after epoch 0: epoch 1 is trained again
    monitor.record(1, 0, 2, 0.001, {'a': 2.5})
    monitor.end_epoch()
    monitor.close()
    assert raw_rows(tmp_path / 'log' / 'train_losses.csv') == [
        ['epoch', 'iteration', 'step', 'lr', 'a', 'total'],
        ['0', '0', '0', '0.001', '4.0', '4.0'], ['0', '1', '1', '0.001', '3.0', '3.0'],
        ['1', '0', '2', '0.001', '2.5', '2.5']]


def test_a_figure_that_cannot_be_drawn_never_stops_training(tmp_path, logger, no_tensorboard, monkeypatch):
    import common.training_monitor as module

    def broken(log_dir):
        raise ValueError('no room')
    monkeypatch.setattr(module, 'write_training_figure', broken)
    monitor = TrainingMonitor(tmp_path / 'log', logger)
    for epoch in range(2):
        monitor.record(epoch, 0, epoch, 0.1, {'a': 1.0})
        monitor.end_epoch()
    monitor.close()
    assert len(raw_rows(tmp_path / 'log' / 'train_losses.csv')) == 3
    assert (tmp_path / 'log' / 'train_logs.txt').read_text().count('Could not draw') == 1


def logged_losses(log_path):
    """``[{term: value}]`` of the per-iteration lines of a train_logs.txt (4 decimals)."""
    import re
    lines = [line for line in log_path.read_text().splitlines() if ' itr ' in line and 'loss_' in line]
    return [{name: float(value) for name, value in re.findall(r'loss_(\w+): (-?[\d.]+(?:e-?\d+)?)', line)}
            for line in lines]


@pytest.mark.slow
def test_a_training_run_writes_its_losses_and_figure(trained_snapshot):
    log_dir = trained_snapshot / 'log'
    rows = raw_rows(log_dir / 'train_losses.csv')
    logged = logged_losses(log_dir / 'train_logs.txt')
    assert rows[0][:4] == ['epoch', 'iteration', 'step', 'lr'] and rows[0][-1] == 'total'
    assert rows[0][4:-1] == list(logged[0])                           # the terms, in logging order
    assert [row[:4] for row in rows[1:]] == [['0', '0', '0', '0.001'], ['0', '1', '1', '0.001']]
    for row, values in zip(rows[1:], logged):
        assert [float(v) for v in row[4:-1]] == pytest.approx(list(values.values()), abs=6e-5)
        assert float(row[-1]) == pytest.approx(sum(float(v) for v in row[4:-1]), rel=1e-6)
    assert cv2.imread(str(log_dir / 'training.png')) is not None


@pytest.mark.slow
def test_a_resumed_run_continues_the_curves(trained_snapshot, tiny_schedule_yaml, tmp_path):
    import shutil

    import yaml
    from main.train import main
    from tests.helpers import run_in_process
    earlier = tmp_path / 'exp_first'
    shutil.copytree(trained_snapshot, earlier)
    options = yaml.safe_load(open(tiny_schedule_yaml))
    options.update(end_epoch=2, output_root=str(tmp_path / 'runs'))
    schedule = tmp_path / 'two.yaml'
    schedule.write_text(yaml.safe_dump(options))
    resumed = run_in_process(main, ['--gpu', '0', '--continue', '--exp_dir', str(earlier), '--cfg', str(schedule)])
    before = raw_rows(earlier / 'log' / 'train_losses.csv')
    after = raw_rows(Path(resumed) / 'log' / 'train_losses.csv')
    assert after[:len(before)] == before                              # epoch 0 of the first run
    assert [row[:3] for row in after[len(before):]] == [['1', '0', '2'], ['1', '1', '3']]
