"""tool/quickstart.py: data reuse, the result table, and a smoke run on the shared synthetic tree."""
import math
import shutil
from pathlib import Path

import pytest
import yaml

from tool import quickstart

PW3D_LIKE_SUMMARY = {'mpjpe': 300.0, 'pa_mpjpe': 120.5, 'mpvpe': 280.25, 'num_samples': 10,
                     'per_sequence': {'seq': {'mpjpe': 300.0}}}


def test_generation_is_reused_only_when_finished(tmp_path):
    calls = []

    def make(folder):
        calls.append(folder)
        (folder / 'file.txt').write_text('x')

    folder = tmp_path / 'tree'
    assert quickstart._generate_once(folder, make, regenerate=False)
    assert not quickstart._generate_once(folder, make, regenerate=False)  # finished: reused
    assert len(calls) == 1
    (folder / quickstart.COMPLETE_MARKER).unlink()                           # as if interrupted
    (folder / 'stale.txt').write_text('old')
    assert quickstart._generate_once(folder, make, regenerate=False)
    assert not (folder / 'stale.txt').exists() and len(calls) == 2
    assert quickstart._generate_once(folder, make, regenerate=True) and len(calls) == 3


def test_table_reads_the_summarize_keys():
    trained = {'mpjpe': 150.0, 'pa_mpjpe': 80.0, 'mpvpe': 140.0}
    table = quickstart.format_table(PW3D_LIKE_SUMMARY, trained).splitlines()
    assert table[1].split() == ['MPJPE', '(mm)', '300.00', '150.00']
    assert table[2].split() == ['PA-MPJPE', '(mm)', '120.50', '80.00']
    assert table[3].split() == ['MPVPE', '(mm)', '280.25', '140.00']
    result = quickstart.QuickstartResult('', '', '', '', '', PW3D_LIKE_SUMMARY, trained)
    assert quickstart.learning_ratio(result) == 0.5
    assert math.isnan(quickstart.metric({'other': 1.0}, ('mpjpe',)))


@pytest.mark.slow
def test_quickstart_smoke_run(tmp_path, synthetic_smpl_dir, synthetic_data_root, capsys):
    """One iteration at batch 2 and two test samples, on a copy of the test run's synthetic tree."""
    for name, source in (('smpl', synthetic_smpl_dir), ('data', synthetic_data_root)):
        shutil.copytree(source, tmp_path / name)
        (tmp_path / name / quickstart.COMPLETE_MARKER).write_text('copied by the test\n')
    schedule = yaml.safe_load(Path(quickstart.DEFAULT_CONFIG).read_text())
    schedule.update(train_batch_size=2, num_thread=0)
    small = tmp_path / 'small.yaml'
    small.write_text(yaml.safe_dump(schedule))

    status = quickstart.main(['--work_dir', str(tmp_path), '--cfg', str(small), '--end_epoch', '1',
                              '--max_iters', '1', '--max_test_samples', '2', '--no_check'])
    assert status == 0
    printed = capsys.readouterr().out
    assert 'Reusing the synthetic data tree' in printed
    rows = [line.split() for line in printed.splitlines() if line.split()[1:2] == ['(mm)']]
    assert [r[0] for r in rows] == ['MPJPE', 'PA-MPJPE', 'MPVPE']
    assert all(math.isfinite(float(v)) and float(v) > 0 for r in rows for v in r[2:4])

    exp = next((tmp_path / 'runs').iterdir())
    assert sorted(p.name for p in (exp / 'checkpoint').iterdir()) == ['snapshot_0.pth.tar']
    assert (exp / 'untrained' / 'checkpoint' / 'snapshot_0.pth.tar').is_file()
    for folder in (exp, exp / 'untrained'):
        assert (folder / 'result' / 'eval_PW3D_snapshot_0.json').is_file()
    assert f"Checkpoint:    {exp / 'checkpoint' / 'snapshot_0.pth.tar'}" in printed
    assert f"Training log:  {exp / 'log' / 'train_logs.txt'}" in printed
    demo = tmp_path / 'demo'
    pictures = sorted(path.name for path in demo.glob('*.jpg'))
    assert any(name.endswith('_render.jpg') for name in pictures) and any('2dpose' in name for name in pictures)
    assert f"Demo overlay:  {demo}" in printed
