"""The configuration object: defaults, --gpu parsing, YAML overrides, run folders."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from common.errors import ConfigError, RunDirError
from common.utils.gpu_ids import parse_gpu_ids
from main.config import Config, ROOT_DIR, cfg

# These tests set options on the global ``cfg``; ``cfg_state`` restores it after each test.
pytestmark = pytest.mark.usefixtures('cfg_state')


@pytest.mark.parametrize('text, expected', [
    ('0', '0'), ('3', '3'), ('0,1', '0,1'), ('0,2,5', '0,2,5'),
    ('0-0', '0'), ('0-3', '0,1,2,3'), ('2-4', '2,3,4'),
])
def test_gpu_ids_accepted_forms(text, expected):
    assert parse_gpu_ids(text) == expected


@pytest.mark.parametrize('text', ['', 'a', '0-', '-1', '3-1', '0,,1', '0;1', '0-1-2', 'gpu0', None])
def test_gpu_ids_rejected_with_message(text):
    with pytest.raises(ValueError, match='--gpu'):
        parse_gpu_ids(text)


def test_defaults_match_the_original():
    fresh = Config()
    assert fresh.trainset_3d == ['Human36M', 'MuCo'] and fresh.trainset_2d == ['MSCOCO', 'MPII']
    assert fresh.testset == 'PW3D' and fresh.resnet_type == 50
    assert fresh.input_img_shape == (256, 256) and fresh.output_hm_shape == (64, 64, 64)
    assert (fresh.bbox_3d_size, fresh.sigma, fresh.focal) == (2, 2.5, (5000, 5000))
    assert (fresh.lr_dec_epoch, fresh.end_epoch, fresh.lr, fresh.lr_backbone, fresh.lr_dec_factor) == \
        ([10], 11, 0.001, 0.0001, 10)
    assert (fresh.train_batch_size, fresh.test_batch_size, fresh.num_thread) == (128, 64, 16)
    assert fresh.princpt == (128.0, 128.0)
    assert fresh.data_dir == str(ROOT_DIR / 'data')
    assert fresh.smpl_model_dir.endswith(os.path.join('common', 'utils', 'smplpytorch', 'smplpytorch', 'native', 'models'))
    assert (fresh.scale_factor, fresh.rot_factor, fresh.color_factor) == (0.0, 0.0, 0.2)
    assert fresh.seed is None and fresh.max_iters_per_epoch is None and fresh.sync_bn is False


def test_set_args_counts_gpus_and_rejects_bad_ids(cfg_state):
    cfg.set_args('0-3')
    assert cfg.gpu_ids == '0,1,2,3' and cfg.num_gpus == 4
    assert cfg.camera_3d_size == 2.5 and cfg.bbox_3d_size == 2
    with pytest.raises(ValueError, match='Invalid --gpu'):
        cfg.set_args('zero')


def test_set_args_test_mode_uses_exp_dir(tmp_path, cfg_state):
    cfg.set_args('0', is_test=True, exp_dir=str(tmp_path))
    assert cfg.output_dir == str(tmp_path.resolve())
    assert cfg.model_dir == str(tmp_path.resolve() / 'checkpoint')
    assert cfg.result_dir == str(tmp_path.resolve() / 'result')


def test_update_overrides_and_derives(tmp_path, cfg_state):
    yaml_file = tmp_path / 'exp.yaml'
    yaml_file.write_text('input_img_shape: [192, 320]\nlr: 0.01\ntrainset_2d: [MSCOCO]\n')
    cfg.update(yaml_file)
    assert cfg.lr == 0.01 and cfg.trainset_2d == ['MSCOCO']
    assert cfg.input_img_shape == (192, 320)
    assert cfg.princpt == (160.0, 96.0)


def test_update_rejects_unknown_key_listing_valid_ones(tmp_path, cfg_state):
    yaml_file = tmp_path / 'bad.yaml'
    yaml_file.write_text('learning_rate: 0.1\n')
    with pytest.raises(ConfigError) as err:
        cfg.update(yaml_file)
    message = str(err.value)
    assert 'learning_rate' in message and 'lr_dec_epoch' in message and 'trainset_3d' in message


def test_update_rejects_derived_key(tmp_path, cfg_state):
    yaml_file = tmp_path / 'derived.yaml'
    yaml_file.write_text('princpt: [1, 2]\n')
    with pytest.raises(ValueError, match='derived'):
        cfg.update(yaml_file)


def test_run_dirs_unset_until_created():
    with pytest.raises(RuntimeError, match='make_run_dirs'):
        _ = cfg.model_dir


def test_two_runs_in_the_same_second_get_two_folders(tmp_path, cfg_state):
    cfg.output_root = str(tmp_path)
    first = cfg.make_run_dirs()
    cfg.output_dir = None
    second = cfg.make_run_dirs()
    assert first != second
    pattern = re.compile(r'^exp_\d\d-\d\d_\d\d:\d\d:\d\d(_\d+)?$')
    for run in (first, second):
        assert pattern.match(Path(run).name)
        for sub in ('checkpoint', 'vis', 'log', 'result'):
            assert (Path(run) / sub).is_dir()


def test_plain_options_are_yaml_safe_and_round_trip(tmp_path):
    import numpy as np
    import yaml
    config = Config()
    config.output_dir = str(tmp_path)
    config.lr = np.float32(0.5)
    config.voc_dir = tmp_path / 'VOC'             # a Path is stored as its text
    plain = config.plain_options()
    assert sorted(plain) == sorted(set(config.option_names()) - {'princpt', 'num_gpus'})
    assert plain['input_img_shape'] == [256, 256] and plain['focal'] == [5000, 5000]
    assert type(plain['lr']) is float and plain['lr'] == 0.5
    assert plain['voc_dir'] == str(tmp_path / 'VOC') and plain['seed'] is None
    path = config.write_yaml(tmp_path / 'config.yaml')
    assert yaml.safe_load(open(path)) == plain
    again = Config()
    again.update(path, log=lambda message: None)
    assert again.input_img_shape == (256, 256) and again.lr == 0.5
    assert again.output_dir is None  # the folder is the run's, not an option (RUN_IDENTITY_KEYS)


def test_import_has_no_side_effects(tmp_path):
    code = 'import main.config, common, data; print("", end="")'
    env = dict(os.environ, PYTHONPATH=str(ROOT_DIR))
    before = set(os.listdir(ROOT_DIR))
    result = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=env,
                            capture_output=True, text=True, check=True)
    assert result.stdout == '' and result.stderr == ''
    assert set(os.listdir(ROOT_DIR)) == before
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------ typed options
def write_yaml(folder, text, name='run.yaml'):
    path = folder / name
    path.write_text(text)
    return path


def test_every_option_has_a_type_and_the_defaults_pass_unchanged():
    from main.config import OPTION_TYPES, _default_options
    assert set(OPTION_TYPES) == set(_default_options())
    fresh = Config()
    before = fresh.snapshot()
    fresh.validate()
    after = fresh.snapshot()
    assert after == before
    assert all(type(after[k]) is type(before[k]) for k in before)


@pytest.mark.parametrize('text, option, value', [
    ('lr: 1e-3\n', 'lr', 0.001),                     # PyYAML reads 1e-3 as a string
    ('lr_backbone: "1e-4"\n', 'lr_backbone', 0.0001),
    ('lr: 1\n', 'lr', 1.0),                          # an int for a float option
    ('end_epoch: 3.0\n', 'end_epoch', 3),            # a float without fraction for an int option
    ('input_img_shape: [192, 320]\n', 'input_img_shape', (192, 320)),
    ('focal: [1000, 1e3]\n', 'focal', (1000, 1000.0)),
    ('seed: 7\n', 'seed', 7),
    ('seed: null\n', 'seed', None),
    ('max_iters_per_epoch: 1\n', 'max_iters_per_epoch', 1),
    ('crowd: true\n', 'crowd', True),
    ('lr_dec_epoch: []\n', 'lr_dec_epoch', []),
    ('trainset_2d: [MPII]\n', 'trainset_2d', ['MPII']),
])
def test_accepted_values_are_coerced_to_the_option_type(tmp_path, cfg_state, text, option, value):
    cfg.update(write_yaml(tmp_path, text))
    got = getattr(cfg, option)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize('text, message', [
    ('crowd: "False"\n', "option 'crowd' must be true or false, got the string 'False'"),
    ('vis: 1\n', "option 'vis' must be true or false, got 1"),
    ('train_batch_size: 0\n', "option 'train_batch_size' must be an integer >= 2 (per device: BatchNorm"),
    ('train_batch_size: 1\n', "option 'train_batch_size' must be an integer >= 2"),
    ('train_batch_size: "64"\n', "option 'train_batch_size' must be an integer >= 2 (per device: BatchNorm "
                                 "needs 2 samples), got the string '64'"),
    ('test_batch_size: 0\n', "option 'test_batch_size' must be an integer >= 1, got 0"),
    ('lr_dec_epoch: 10\n', "option 'lr_dec_epoch' must be a list of values, e.g. [10], got 10"),
    ('lr_dec_epoch: [10.5]\n', "option 'lr_dec_epoch' item 0 must be an integer >= 0, got 10.5"),
    ('seed: abc\n', "option 'seed' must be an integer >= 0, got the string 'abc' (or null)"),
    ('end_epoch: 0\n', "option 'end_epoch' must be an integer >= 1, got 0"),
    ('max_iters_per_epoch: 0\n', "option 'max_iters_per_epoch' must be an integer >= 1, got 0 (or null)"),
    ('lr: -0.001\n', "option 'lr' must be a number > 0, got -0.001"),
    ('lr: 0\n', "option 'lr' must be a number > 0, got 0"),
    ('lr: fast\n', "option 'lr' must be a number > 0, got the string 'fast'"),
    ('lr_backbone: .nan\n', "option 'lr_backbone' must be a number > 0, got nan"),
    ('num_thread: 2.5\n', "option 'num_thread' must be an integer >= 0, got 2.5"),
    ('num_thread: -1\n', "option 'num_thread' must be an integer >= 0, got -1"),
    ('resnet_type: 34\n', "option 'resnet_type' must be one of 50, 101, 152, got 34"),
    ('input_img_shape: [256]\n', "option 'input_img_shape' must be a list of 2 values, e.g. [256, 256], got [256]"),
    ('output_hm_shape: [64, 64, 64.5]\n', "option 'output_hm_shape' item 2 must be an integer >= 1, got 64.5"),
    ('focal: 5000\n', "option 'focal' must be a list of 2 values, e.g. [5000, 5000], got 5000"),
    ('testset: 3DPW\n', "option 'testset' must be an evaluation set or a list of them, from Human36M, MuCo, "
                        "MSCOCO, MPII, PW3D, PW3D-crowd, PW3D-OC, PW3D-PC, got the string '3DPW'"),
    ('testset: [PW3D, 3DPW-OC]\n', "option 'testset' item 1 must be an evaluation set or a list of them, from "
                                   "Human36M, MuCo, MSCOCO, MPII, PW3D, PW3D-crowd, PW3D-OC, PW3D-PC, got the "
                                   "string '3DPW-OC'"),
    ('testset: []\n', "option 'testset' must be an evaluation set or a list of them"),
    ('trainset_3d: [Human36m]\n', "option 'trainset_3d' item 0 must be a dataset name"),
    ('trainset_2d: MSCOCO\n', "option 'trainset_2d' must be a list of values, e.g. [MSCOCO, MPII]"),
    ('data_dir: 5\n', "option 'data_dir' must be a path, got 5"),
    ('imagenet_weights: ""\n', "option 'imagenet_weights' must be a path or null, got the string ''"),
    ('color_factor: -0.2\n', "option 'color_factor' must be a number >= 0, got -0.2"),
])
def test_bad_values_are_refused_naming_file_option_value_and_rule(tmp_path, cfg_state, text, message):
    path = write_yaml(tmp_path, 'lr: 0.5\n' + text)   # a good key before the bad one
    before = cfg.snapshot()
    with pytest.raises(ConfigError) as info:
        cfg.update(path)
    assert str(info.value).startswith(f'{path}: option ')
    assert message in str(info.value)
    assert '\n' not in str(info.value)
    assert cfg.snapshot() == before   # nothing of the file was applied


def test_malformed_yaml_is_one_line_naming_the_file(tmp_path, cfg_state):
    path = write_yaml(tmp_path, 'lr: [0.1\n')
    with pytest.raises(ConfigError, match=f'{path}: not valid YAML') as info:
        cfg.update(path)
    assert '\n' not in str(info.value)


def test_validate_checks_values_set_by_code(cfg_state):
    cfg.lr = '1e-3'
    cfg.validate()
    assert cfg.lr == 0.001
    cfg.crowd = 'False'
    with pytest.raises(ConfigError, match="^option 'crowd' must be true or false, got the string 'False'$"):
        cfg.validate()


def test_training_needs_an_epoch_to_train_and_a_training_set(cfg_state):
    cfg.end_epoch = 5
    cfg.validate_training(start_epoch=4)
    with pytest.raises(ConfigError, match=r"'end_epoch' must be above the first epoch to train \(5\).*got 5"):
        cfg.validate_training(start_epoch=5)
    cfg.trainset_3d, cfg.trainset_2d = [], []
    with pytest.raises(ConfigError, match="'trainset_3d' and 'trainset_2d' are both empty"):
        cfg.validate_training()


# ------------------------------------------------------------ run identity and folders
def test_a_run_config_passed_back_sets_options_never_folders(tmp_path, cfg_state):
    run = Config()
    run.output_dir, run.exp_dir, run.continue_train, run.gpu_ids = str(tmp_path / 'old'), 'x', True, '3'
    run.lr = 0.25
    path = run.write_yaml(tmp_path / 'config.yaml')
    notes = []
    skipped = cfg.update(path, log=notes.append)
    assert cfg.lr == 0.25
    assert (cfg.output_dir, cfg.exp_dir, cfg.continue_train, cfg.gpu_ids) == (None, '', False, '0')
    assert set(skipped) == {'output_dir', 'exp_dir', 'continue_train', 'gpu_ids', 'eval_output_dir'}
    assert len(notes) == 1 and 'ignoring' in notes[0] and 'output_dir' in notes[0]


def test_write_yaml_leaves_no_temp_file_and_replaces_atomically(tmp_path):
    config = Config()
    target = tmp_path / 'config.yaml'
    target.write_text('old')
    config.write_yaml(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['config.yaml']
    assert 'lr: 0.001' in target.read_text()


def test_bad_option_creates_no_folder(tmp_path, cfg_state):
    cfg.output_root = str(tmp_path / 'runs')
    cfg.crowd = 'False'
    with pytest.raises(ConfigError):
        cfg.make_run_dirs()
    assert list(tmp_path.iterdir()) == []


def test_training_refuses_an_existing_output_dir(tmp_path, cfg_state):
    old = tmp_path / 'old_run'
    (old / 'checkpoint').mkdir(parents=True)
    (old / 'config.yaml').write_text('lr: 0.5\n')
    cfg.output_dir = str(old)
    with pytest.raises(RunDirError, match=f'output_dir {old} already exists'):
        cfg.make_run_dirs(new_only=True)
    assert sorted(p.name for p in old.iterdir()) == ['checkpoint', 'config.yaml']
    assert (old / 'config.yaml').read_text() == 'lr: 0.5\n'


def test_evaluation_folders_go_to_eval_output_dir(tmp_path, cfg_state):
    exp = tmp_path / 'released'
    (exp / 'checkpoint').mkdir(parents=True)
    cfg.set_args('0', is_test=True, exp_dir=str(exp))
    cfg.eval_output_dir = str(tmp_path / 'elsewhere')
    cfg.make_run_dirs(evaluation=True)
    assert cfg.model_dir == str(exp.resolve() / 'checkpoint')
    assert cfg.result_dir == str(tmp_path / 'elsewhere' / 'result')
    assert cfg.log_dir == str(tmp_path / 'elsewhere' / 'log')
    assert sorted(p.name for p in exp.iterdir()) == ['checkpoint']    # nothing written into --exp_dir
    assert sorted(p.name for p in (tmp_path / 'elsewhere').iterdir()) == ['log', 'result', 'vis']


def test_remove_created_dirs_only_removes_empty_folders_the_run_made(tmp_path, cfg_state):
    from main.config import remove_created_dirs
    cfg.output_root = str(tmp_path / 'runs')
    cfg.make_run_dirs()
    created = list(Config.created_dirs)
    assert created[0] == tmp_path / 'runs' and Path(cfg.output_dir) in created
    (Path(cfg.log_dir) / 'keep.txt').write_text('x')
    remove_created_dirs(created)
    assert sorted(p.name for p in Path(cfg.output_dir).iterdir()) == ['log']
    assert tmp_path.is_dir()


def test_uncreatable_output_root_is_one_line_and_leaves_nothing(tmp_path, cfg_state):
    (tmp_path / 'a_file').write_text('x')
    cfg.output_root = str(tmp_path / 'a_file' / 'runs')
    with pytest.raises(RunDirError, match=f"^Cannot create the folder {tmp_path / 'a_file' / 'runs'}: "):
        cfg.make_run_dirs(new_only=True)
    assert [p.name for p in tmp_path.iterdir()] == ['a_file'] and cfg.output_dir is None


def test_training_set_up_forgets_a_previous_run_folder(tmp_path, cfg_state):
    old = tmp_path / 'old'
    cfg.set_args('0', is_test=True, exp_dir=str(old))
    cfg.set_args('0', is_test=False)
    assert cfg.output_dir is None
    cfg.output_root = str(tmp_path / 'runs')
    assert Path(cfg.make_run_dirs(new_only=True)).parent == tmp_path / 'runs' and not old.exists()
