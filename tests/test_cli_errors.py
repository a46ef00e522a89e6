"""Entry scripts end expected errors with one line and exit status 1, create nothing on a bad
option, remove the folders of a failed start, and never take a run's folders from a --cfg file."""
import errno
import hashlib
import json
import sys
from pathlib import Path

import pytest
import yaml

from common.errors import ConfigError, DataError, UserError
from common.utils.cli import exit_on_expected_errors, remove_run_dirs_on_failure
from main.config import Config, ROOT_DIR, cfg
from tests.helpers import run_command, run_in_process

pytestmark = pytest.mark.usefixtures('cfg_state')


def bad_yaml(folder, text='crowd: "False"\n'):
    path = Path(folder) / 'bad.yaml'
    path.write_text(text)
    return path


def tree_digest(folder):
    """``{relative path: sha256}`` of every file under ``folder`` (to prove it untouched)."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob('*')) if p.is_file()}


# --------------------------------------------------------------- the mechanism
def raising(exc):
    def main(argv):
        raise exc
    return main


@pytest.mark.parametrize('exc, line', [
    (ConfigError("option 'lr' must be a number > 0, got 0"), "ERROR: option 'lr' must be a number > 0, got 0"),
    (DataError('a.json: record 3 has no bbox'), 'ERROR: a.json: record 3 has no bbox'),
    (FileNotFoundError('Image not found: x.jpg'), 'ERROR: Image not found: x.jpg'),
    (OSError(errno.ENOSPC, 'No space left on device', '/runs/x.pth'),
     "ERROR: [Errno 28] No space left on device: '/runs/x.pth'"),
    (PermissionError(errno.EACCES, 'Permission denied', '/ro/result'),
     "ERROR: [Errno 13] Permission denied: '/ro/result'"),
    (UserError('two\nlines'), 'ERROR: two lines'),
])
def test_expected_errors_end_with_one_line(exc, line):
    with pytest.raises(SystemExit) as info:
        exit_on_expected_errors(raising(exc), [])
    assert info.value.code == line       # sys.exit(text): text on stderr, exit status 1


def test_bugs_and_debug_keep_the_traceback():
    with pytest.raises(KeyError):
        exit_on_expected_errors(raising(KeyError('bbox')), [])
    with pytest.raises(OSError):           # an I/O error that is not the user's to fix
        exit_on_expected_errors(raising(OSError(errno.EIO, 'Input/output error')), [])
    with pytest.raises(ConfigError):
        exit_on_expected_errors(raising(ConfigError('bad')), ['--debug'])


def test_extra_expected_types_are_honoured():
    class CheckpointLike(RuntimeError):
        pass
    with pytest.raises(SystemExit, match='^ERROR: shapes differ$'):
        exit_on_expected_errors(raising(CheckpointLike('shapes differ')), [], (CheckpointLike,))


# ------------------------------------------------------- bad options create nothing
def test_train_bad_option_exits_with_the_option_and_creates_nothing(tmp_path):
    from main.train import run_cli
    runs = tmp_path / 'runs'
    config = bad_yaml(tmp_path, f'output_root: {runs}\ncrowd: "False"\n')
    with pytest.raises(SystemExit) as info:
        run_cli(['--gpu', '0', '--cfg', str(config)])
    assert info.value.code == f"ERROR: --cfg {config}: option 'crowd' must be true or false, got the string 'False'"
    assert not runs.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ['bad.yaml']


@pytest.mark.parametrize('text, message', [
    ('end_epoch: 0\n', "option 'end_epoch' must be an integer >= 1, got 0"),
    ('max_iters_per_epoch: 0\n', "option 'max_iters_per_epoch' must be an integer >= 1, got 0 (or null)"),
    ('train_batch_size: 1\n', "option 'train_batch_size' must be an integer >= 2"),
    ('lr_dec_epoch: 10\n', "option 'lr_dec_epoch' must be a list of values, e.g. [10], got 10"),
    ('seed: "0"\n', "option 'seed' must be an integer >= 0, got the string '0' (or null)"),
    ('trainset_3d: []\ntrainset_2d: []\n', "'trainset_3d' and 'trainset_2d' are both empty"),
])
def test_train_refuses_schedules_that_train_nothing(tmp_path, text, message):
    from main.train import run_cli
    runs = tmp_path / 'runs'
    config = bad_yaml(tmp_path, f'output_root: {runs}\n' + text)
    with pytest.raises(SystemExit) as info:
        run_cli(['--gpu', '0', '--cfg', str(config)])
    assert info.value.code.startswith('ERROR: ') and message in info.value.code
    assert not runs.exists()


def test_resume_needs_an_epoch_after_the_latest_snapshot(tmp_path):
    from main.train import run_cli
    old = tmp_path / 'old'
    (old / 'checkpoint').mkdir(parents=True)
    (old / 'checkpoint' / 'snapshot_10.pth.tar').write_bytes(b'not read')
    before = tree_digest(old)
    config = bad_yaml(tmp_path, f"output_root: {tmp_path / 'runs'}\nend_epoch: 11\n")
    with pytest.raises(SystemExit) as info:
        run_cli(['--gpu', '0', '--continue', '--exp_dir', str(old), '--cfg', str(config)])
    assert info.value.code == ("ERROR: option 'end_epoch' must be above the first epoch to train (11) so that "
                               "at least one epoch is trained, got 11.")
    assert not (tmp_path / 'runs').exists() and tree_digest(old) == before


def test_test_bad_option_writes_no_result_and_creates_no_folder(tmp_path):
    from main.test import run_cli
    exp = tmp_path / 'exp'
    (exp / 'checkpoint').mkdir(parents=True)
    config = bad_yaml(tmp_path)
    with pytest.raises(SystemExit) as info:
        run_cli(['--gpu', '0', '--exp_dir', str(exp), '--test_epoch', '0', '--cfg', str(config)])
    assert info.value.code == f"ERROR: --cfg {config}: option 'crowd' must be true or false, got the string 'False'"
    assert sorted(p.name for p in exp.iterdir()) == ['checkpoint']


def test_test_requires_exp_dir(tmp_path):
    from main.test import run_cli
    with pytest.raises(SystemExit, match='^ERROR: --exp_dir is required'):
        run_cli(['--gpu', '0', '--test_epoch', '0'])


def test_quickstart_bad_option_stops_before_making_data(tmp_path):
    from tool.quickstart import run_cli
    work = tmp_path / 'work'
    config = bad_yaml(tmp_path, 'lr: fast\n')
    with pytest.raises(SystemExit) as info:
        run_cli(['--cfg', str(config), '--work_dir', str(work)])
    assert info.value.code == f"ERROR: --cfg {config}: option 'lr' must be a number > 0, got the string 'fast'"
    assert not work.exists()


def test_demo_bad_option_is_one_line(tmp_path, monkeypatch):
    import main.demo as demo
    monkeypatch.setattr(demo, 'check_inputs', lambda *args: ('image', None))
    # The demo imports the checkpoint module where it uses it (fast --help): patch it at its source.
    monkeypatch.setattr('common.utils.checkpoint.load_checkpoint_file', lambda *args, **kwargs: {})
    config = bad_yaml(tmp_path, 'resnet_type: 34\n')
    with pytest.raises(SystemExit) as info:
        demo.run_cli(['--img', 'x.jpg', '--pose', 'p.json', '--model', 'm.pth', '--cfg', str(config),
                      '--out', str(tmp_path / 'out')])
    assert info.value.code == f"ERROR: --cfg {config}: option 'resnet_type' must be one of 50, 101, 152, got 34"
    assert not (tmp_path / 'out').exists()


# ------------------------------------------------------------- failed starts
def test_failed_start_removes_the_folder_it_created(tmp_path):
    cfg.output_root = str(tmp_path / 'runs')
    cfg.make_run_dirs(new_only=True)
    run = Path(cfg.output_dir)
    with pytest.raises(FileNotFoundError):
        with remove_run_dirs_on_failure(training=True):
            (run / 'config.yaml').write_text('lr: 0.001\n')    # written by the start that then fails
            (run / 'log' / 'train_logs.txt').write_text('Creating dataset...\n')
            raise FileNotFoundError('annotation file missing')
    assert list(tmp_path.iterdir()) == []                     # output_root was made by this run too


def test_failed_run_keeps_a_folder_with_snapshots(tmp_path):
    cfg.output_root = str(tmp_path)
    cfg.make_run_dirs(new_only=True)
    snapshot = Path(cfg.model_dir) / 'snapshot_0.pth.tar'
    with pytest.raises(RuntimeError):
        with remove_run_dirs_on_failure(training=True):
            snapshot.write_bytes(b'weights')
            raise RuntimeError('epoch 1 failed')
    assert snapshot.read_bytes() == b'weights'


def test_failed_evaluation_never_removes_the_experiment(tmp_path):
    exp = tmp_path / 'exp'
    (exp / 'checkpoint').mkdir(parents=True)
    (exp / 'checkpoint' / 'snapshot_0.pth.tar').write_bytes(b'weights')
    cfg.set_args('0', is_test=True, exp_dir=str(exp))
    cfg.make_run_dirs(evaluation=True)
    with pytest.raises(ValueError):
        with remove_run_dirs_on_failure(training=False):
            raise ValueError('bug')
    assert sorted(p.name for p in exp.iterdir()) == ['checkpoint']   # only its empty new folders went
    assert (exp / 'checkpoint' / 'snapshot_0.pth.tar').read_bytes() == b'weights'


def test_existing_folder_is_never_removed(tmp_path):
    """A folder the run did not create stays even when empty."""
    Config.created_dirs = []
    cfg.output_dir = str(tmp_path / 'mine')
    (tmp_path / 'mine').mkdir()
    with pytest.raises(RuntimeError):
        with remove_run_dirs_on_failure(training=True):
            raise RuntimeError('x')
    assert (tmp_path / 'mine').is_dir()


# ------------------------------------------------------------- end to end (slow)
def run_script(script, *args, timeout=600):
    return run_command([sys.executable, str(ROOT_DIR / script), *map(str, args)], timeout, cwd=ROOT_DIR)


@pytest.mark.slow
@pytest.mark.parametrize('script, args', [
    ('main/train.py', ['--gpu', '0']),
    ('main/test.py', ['--gpu', '0', '--test_epoch', '0', '--exp_dir', '{exp}']),
])
def test_scripts_end_bad_options_with_one_line_and_status_1(tmp_path, script, args):
    exp = tmp_path / 'exp'
    (exp / 'checkpoint').mkdir(parents=True)
    config = bad_yaml(tmp_path, f"output_root: {tmp_path / 'runs'}\ntrain_batch_size: 1\ncrowd: 'False'\n")
    out = run_script(script, *[a.format(exp=exp) for a in args], '--cfg', config)
    assert out.returncode == 1, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'ERROR: --cfg {config}: option '), out.stderr
    assert not (tmp_path / 'runs').exists() and sorted(p.name for p in exp.iterdir()) == ['checkpoint']
    out = run_script(script, *[a.format(exp=exp) for a in args], '--cfg', config, '--debug')
    assert out.returncode == 1 and 'Traceback' in out.stderr and 'ConfigError' in out.stderr


@pytest.mark.slow
def test_failed_training_start_leaves_no_folder(tmp_path, tiny_schedule_yaml):
    values = yaml.safe_load(tiny_schedule_yaml.read_text())
    values.update(data_dir=str(tmp_path / 'no_data'), output_root=str(tmp_path / 'runs'))
    config = tmp_path / 'run.yaml'
    config.write_text(yaml.safe_dump(values))
    out = run_script('main/train.py', '--gpu', '0', '--cfg', config)
    assert out.returncode == 1, out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith('ERROR: '), out.stderr
    assert 'Traceback' not in out.stderr
    assert not (tmp_path / 'runs').exists()


@pytest.mark.slow
def test_string_learning_rate_trains_with_its_value(tmp_path, tiny_schedule_yaml):
    from main.train import main
    text = tiny_schedule_yaml.read_text() + 'lr: 1e-3\nlr_backbone: 2e-4\napply_lr_backbone: true\n'
    config = tmp_path / 'run.yaml'
    config.write_text(text)
    assert yaml.safe_load(text)['lr'] == '1e-3'            # what PyYAML makes of it
    trained = []
    run_in_process(lambda argv: trained.append(main(argv)), ['--gpu', '0', '--cfg', str(config)])
    lrs = sorted(group['lr'] for group in trained[0].optimizer.param_groups)
    assert lrs[0] == 0.0002 and lrs[-1] == 0.001


@pytest.mark.slow
def test_a_runs_own_config_passed_back_starts_a_new_run(trained_snapshot):
    from main.train import main
    before = tree_digest(trained_snapshot)
    new = Path(run_in_process(main, ['--gpu', '0', '--cfg', str(trained_snapshot / 'config.yaml')]))
    assert new != trained_snapshot and new.parent == trained_snapshot.parent
    assert (new / 'checkpoint' / 'snapshot_0.pth.tar').is_file()
    assert tree_digest(trained_snapshot) == before            # the old run is byte-identical
    saved = yaml.safe_load((new / 'config.yaml').read_text())
    assert saved['output_dir'] == str(new)


@pytest.mark.slow
def test_test_evaluates_exp_dir_not_the_run_named_in_the_yaml(trained_snapshot, tmp_path):
    """A YAML naming another run (its output_dir / exp_dir) changes nothing of what is evaluated;
    --out_dir and an unwritable --exp_dir send log and results elsewhere, --exp_dir untouched."""
    import main.test as test_script
    other = tmp_path / 'other_run'
    (other / 'checkpoint').mkdir(parents=True)
    values = yaml.safe_load((trained_snapshot / 'config.yaml').read_text())
    values.update(output_dir=str(other), exp_dir=str(other))
    config = tmp_path / 'other.yaml'
    config.write_text(yaml.safe_dump(values))
    out = tmp_path / 'out'
    before = tree_digest(trained_snapshot)
    run_in_process(test_script.main, ['--gpu', '0', '--exp_dir', str(trained_snapshot), '--test_epoch', '0',
                                      '--cfg', str(config), '--out_dir', str(out)])
    metrics = json.loads((out / 'result' / 'eval_PW3D_snapshot_0.json').read_text())
    assert metrics and tree_digest(trained_snapshot) == before
    assert sorted(p.name for p in (other / 'checkpoint').iterdir()) == []
    assert 'Load checkpoint from ' + str(trained_snapshot / 'checkpoint' / 'snapshot_0.pth.tar') in \
        (out / 'log' / 'test_logs.txt').read_text()

    fallback_root = tmp_path / 'fallback'
    values.update(output_root=str(fallback_root))
    config.write_text(yaml.safe_dump(values))
    with pytest.MonkeyPatch.context() as patch:
        import common.tester  # root ignores chmod: the folder is declared read-only
        patch.setattr(common.tester, 'evaluation_output_dir',
                      lambda exp_dir, output_root: common.tester.eval_fallback_dir(output_root, exp_dir))
        run_in_process(test_script.main, ['--gpu', '0', '--exp_dir', str(trained_snapshot), '--test_epoch', '0',
                                          '--cfg', str(config)])
    fallback = fallback_root / f'eval_{trained_snapshot.name}'
    assert json.loads((fallback / 'result' / 'eval_PW3D_snapshot_0.json').read_text()) == metrics
    assert tree_digest(trained_snapshot) == before
