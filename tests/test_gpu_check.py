"""``tool/gpu_check.sh`` (CUDA-only) and ``tool/gpu_throughput.py`` (any device).

Without a GPU the shell script must stop at once with one clear line.  Its step bookkeeping (a
failing step makes the exit status 1, the others still run, one summary at the end) is checked
with a stand-in interpreter (``PYTHON``) that answers the script's CUDA queries as a one-GPU
machine would and fails or passes the test step on request; the real commands run only on a GPU
machine.
"""
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from tests.helpers import run_command

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / 'tool' / 'gpu_check.sh'

# A stand-in ``python`` for gpu_check.sh: a one-GPU machine whose pytest run exits PYTEST_RC.
FAKE_PYTHON = """#!/usr/bin/env bash
case "$*" in
    *cuda.is_available*) exit 0 ;;
    *get_device_name*) echo "Fake GPU x 1 | torch 0.0" ;;
    *device_count*) echo 1 ;;
    "-m pytest"*) echo "pytest stand-in"; exit {pytest_rc} ;;
    tool/gpu_throughput.py*)
        while [ $# -gt 0 ]; do [ "$1" = --out ] && out=$2; shift; done
        cat > "$out" <<'EOF'
{report}
EOF
        echo "throughput stand-in" ;;
    -\\ *) exec {python} "$@" ;;
    *) echo "unexpected call: $*" >&2; exit 99 ;;
esac
"""

REPORT = {'device': 'cuda:0 (Fake GPU)', 'torch': '0.0', 'batch': 128, 'runs': 10, 'warmup': 3,
          'train': {'fp32': {'status': 'ok', 'median_ms': 500.0, 'min_ms': 490.0, 'max_ms': 510.0,
                             'samples_per_s': 256.0, 'peak_memory_mb': 20480.0, 'skipped_steps': 2},
                    'bf16': {'status': 'skipped', 'reason': 'no bfloat16'}},
          'test': {'fp32': {'status': 'ok', 'median_ms': 100.0, 'min_ms': 99.0, 'max_ms': 101.0,
                            'samples_per_s': 1280.0, 'peak_memory_mb': 4096.0}}}


def test_without_cuda_the_check_stops_with_one_line(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='', PYTHON=sys.executable)
    out = run_command(['bash', str(SCRIPT), str(tmp_path / 'out')], timeout=300, env=env, cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        'ERROR: no CUDA device (torch.cuda.is_available() is False): tool/gpu_check.sh checks a GPU machine.']
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('pytest_rc', [0, 1])
def test_a_failing_step_fails_the_check_after_the_summary(tmp_path, pytest_rc):
    fake = tmp_path / 'python'
    fake.write_text(FAKE_PYTHON.format(pytest_rc=pytest_rc, report=json.dumps(REPORT), python=sys.executable))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    out_dir = tmp_path / 'out'
    out = run_command(['bash', str(SCRIPT), str(out_dir)], timeout=120, env=dict(os.environ, PYTHON=str(fake)))
    assert out.returncode == pytest_rc, out.stdout + out.stderr
    summary = out.stdout[out.stdout.index('=== summary (Fake GPU x 1 | torch 0.0)'):].splitlines()
    steps = {line[:14].strip(): line[15:] for line in summary[1:3]}
    assert steps['gpu tests'].startswith('FAIL (exit 1)' if pytest_rc else 'PASS')
    assert steps['throughput'].startswith('PASS')
    assert list(steps) == ['gpu tests', 'throughput']
    assert 'train  fp32        256.0     20480              2' in summary
    assert 'train  bf16    skipped: no bfloat16' in summary
    assert 'test   fp32       1280.0      4096              -' in summary
    assert (out_dir / 'gpu_tests.log').read_text() == 'pytest stand-in\n'
    assert json.loads((out_dir / 'throughput.json').read_text()) == REPORT


@pytest.mark.slow
def test_throughput_script_on_the_cpu(tmp_path):
    """Batch 2, one timed call: the report's structure; autocast rows are skipped on the CPU."""
    out_file = tmp_path / 'throughput.json'
    command = [sys.executable, str(ROOT / 'tool' / 'gpu_throughput.py'), '--device', 'cpu', '--batch', '2',
               '--runs', '1', '--warmup', '0', '--dtypes', 'fp32,fp16', '--out', str(out_file)]
    out = run_command(command, timeout=900, cwd=tmp_path, env=dict(os.environ, OMP_NUM_THREADS='2'))
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    report = json.loads(out_file.read_text())
    assert set(report) == {'device', 'torch', 'batch', 'runs', 'warmup', 'train', 'test'}
    assert report['device'].startswith('cpu') and report['batch'] == 2 and report['runs'] == 1
    for step in ('train', 'test'):
        assert list(report[step]) == ['fp32', 'fp16']
        row = report[step]['fp32']
        assert row['status'] == 'ok' and row['peak_memory_mb'] is None
        assert 0 < row['min_ms'] <= row['median_ms'] <= row['max_ms']
        assert row['samples_per_s'] == pytest.approx(2 / (row['median_ms'] / 1000.0))
        assert report[step]['fp16'] == {
            'status': 'skipped', 'reason': 'autocast is measured on CUDA only (the trainer runs float32 on the CPU)'}
    assert report['train']['fp32']['skipped_steps'] == 0 and 'skipped_steps' not in report['test']['fp32']
    assert 'train  fp32' in out.stdout and 'test   fp32' in out.stdout
    assert not list(tmp_path.glob('output'))   # nothing written beside --out


def test_throughput_options():
    from tool.gpu_throughput import dtype_list, gpu_ids_for, parse_args
    assert parse_args([]).dtypes == ['fp32', 'fp16', 'bf16'] and parse_args([]).batch == 128
    assert dtype_list('bf16, fp32') == ['bf16', 'fp32']
    with pytest.raises(Exception, match='comma list'):
        dtype_list('fp8')
    assert gpu_ids_for(None) is None and gpu_ids_for('cuda') == '0' and gpu_ids_for('cuda:3') == '3'
    with pytest.raises(Exception, match="--device gpu"):
        gpu_ids_for('gpu')
