"""Shared fixtures: the synthetic body model and data tree are generated once per run."""
import pytest

from main.config import cfg


@pytest.fixture
def cfg_state():
    """``cfg`` for the test to change; restored to the state before the test afterwards."""
    state = cfg.snapshot()
    yield cfg
    cfg.restore(state)


@pytest.fixture(scope='session')
def synthetic_smpl_dir(tmp_path_factory):
    """Folder with the three synthetic SMPL pkl files and the regressor .npy files."""
    from tool.synthetic.body_model import make_synthetic_smpl
    out = tmp_path_factory.mktemp('smpl_model')
    make_synthetic_smpl(out, seed=0)
    return out


@pytest.fixture
def smpl_cfg(cfg_state, synthetic_smpl_dir):
    """cfg pointing at the synthetic body model (``data_dir`` holds J_regressor_extra.npy);
    restored after the test."""
    cfg_state.smpl_model_dir = str(synthetic_smpl_dir)
    cfg_state.data_dir = str(synthetic_smpl_dir)
    return cfg_state


@pytest.fixture(scope='session')
def synthetic_data_root(tmp_path_factory, synthetic_smpl_dir):
    """A small data tree of all five datasets in their real on-disk formats."""
    from tool.synthetic.tree import make_synthetic_data
    root = tmp_path_factory.mktemp('data')
    make_synthetic_data(root, synthetic_smpl_dir, seed=0)
    return root


@pytest.fixture(scope='session')
def full_size_data_root(tmp_path_factory, synthetic_smpl_dir):
    """The synthetic tree with images at each dataset's real resolution (about 30 s to render)."""
    from tool.synthetic.tree import make_synthetic_data
    root = tmp_path_factory.mktemp('data_full_size')
    make_synthetic_data(root, synthetic_smpl_dir, seed=0, full_size=True)
    return root


@pytest.fixture
def data_cfg(cfg_state, synthetic_smpl_dir, synthetic_data_root):
    """cfg pointing at the synthetic body model and the synthetic data tree; restored after the test."""
    cfg_state.smpl_model_dir = str(synthetic_smpl_dir)
    cfg_state.data_dir = str(synthetic_data_root)
    return cfg_state


@pytest.fixture(scope='session')
def tiny_schedule_yaml(tmp_path_factory, synthetic_smpl_dir, synthetic_data_root):
    """``--cfg`` file of a seeded CPU schedule on the synthetic tree: 1 epoch of 2
    iterations at batch 2, no DataLoader workers, runs under a temporary output_root."""
    import yaml
    folder = tmp_path_factory.mktemp('driver_runs')
    values = {
        'data_dir': str(synthetic_data_root), 'smpl_model_dir': str(synthetic_smpl_dir),
        'output_root': str(folder / 'runs'), 'train_batch_size': 2, 'test_batch_size': 8,
        'max_iters_per_epoch': 2, 'end_epoch': 1, 'lr_dec_epoch': [1], 'num_thread': 0, 'seed': 0,
    }
    path = folder / 'tiny_schedule.yaml'
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.fixture(scope='session')
def trained_snapshot(tiny_schedule_yaml):
    """Experiment folder of a two-iteration training run (``tiny_schedule_yaml``):
    ``<exp>/checkpoint/snapshot_0.pth.tar``, ``<exp>/log/train_logs.txt``, ``<exp>/config.yaml``."""
    from pathlib import Path
    from main.train import main
    from tests.helpers import run_in_process
    return Path(run_in_process(main, ['--gpu', '0', '--cfg', str(tiny_schedule_yaml)]))
