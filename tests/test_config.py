"""The configuration object: defaults, --gpu parsing, YAML overrides, run folders."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from main.config import Config, ROOT_DIR, cfg, parse_gpu_ids

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
    yaml_file.write_text('input_img_shape: [192, 320]\nlr: 0.01\ntrainset_2d: [MSCOCO]\n'
                         f'output_dir: {tmp_path / "run"}\n')
    cfg.update(yaml_file)
    assert cfg.lr == 0.01 and cfg.trainset_2d == ['MSCOCO']
    assert cfg.input_img_shape == (192, 320)
    assert cfg.princpt == (160.0, 96.0)
    assert cfg.model_dir == str(tmp_path / 'run' / 'checkpoint')


def test_update_rejects_unknown_key_listing_valid_ones(tmp_path, cfg_state):
    yaml_file = tmp_path / 'bad.yaml'
    yaml_file.write_text('learning_rate: 0.1\n')
    with pytest.raises(ValueError) as err:
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
    again.update(path)
    assert again.input_img_shape == (256, 256) and again.lr == 0.5 and again.output_dir == str(tmp_path)


def test_import_has_no_side_effects(tmp_path):
    code = 'import main.config, common, data; print("", end="")'
    env = dict(os.environ, PYTHONPATH=str(ROOT_DIR))
    before = set(os.listdir(ROOT_DIR))
    result = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=env,
                            capture_output=True, text=True, check=True)
    assert result.stdout == '' and result.stderr == ''
    assert set(os.listdir(ROOT_DIR)) == before
    assert list(tmp_path.iterdir()) == []
