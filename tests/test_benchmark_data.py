"""tool/benchmark.py --mode data (tool/bench/data_loading.py): its rows, its JSON and the worker count."""
import json

import pytest

from tool.bench.data_loading import workers_needed


def test_workers_needed_is_the_ceiling_of_the_rate_ratio():
    assert workers_needed(400.0, 100.0) == 4
    assert workers_needed(401.0, 100.0) == 5
    assert workers_needed(50.0, 100.0) == 1


@pytest.mark.slow
def test_data_mode_writes_every_row(cfg_state, synthetic_smpl_dir, synthetic_data_root, tmp_path, capsys):
    from tool.benchmark import main
    out = tmp_path / 'data.json'
    main(['--mode', 'data', '--sizes', 'small', '--runs', '1', '--warmup', '0', '--batch', '4', '--workers', '2',
          '--stream-batches', '1', '--smpl', str(synthetic_smpl_dir), '--data', str(synthetic_data_root),
          '--gpu-samples-per-s', '1000', '--out', str(out)])
    report = json.loads(out.read_text())
    rows = report['results']
    expected = {'small/crop whole-image', 'small/crop region', 'small/Human36M train', 'small/MuCo train',
                'small/MSCOCO train', 'small/MPII train', 'small/PW3D test', 'small/Human36M test',
                'small/MSCOCO val', 'small/stream 1 worker', 'small/stream 2 workers'}
    assert set(rows) == expected
    assert all(row['median_ms'] > 0 for row in rows.values())
    assert rows['small/stream 2 workers']['workers'] == 2 and rows['small/stream 1 worker']['batch'] == 4
    # Stream rows: ms per sample and samples/s are the same measurement.
    for name in ('small/stream 1 worker', 'small/stream 2 workers'):
        assert rows[name]['samples_per_s'] == pytest.approx(1000 / rows[name]['median_ms'])
    assert report['workers'] == 2 and report['stream_batch'] == 4
    assert 'small/stream 2 workers' in capsys.readouterr().out
