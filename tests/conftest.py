"""Shared fixtures: the synthetic body model and data tree are generated once per run."""
import pytest

from main.config import cfg


@pytest.fixture(autouse=True)
def restore_cfg():
    """Every test starts from, and leaves behind, the same configuration."""
    state = cfg.snapshot()
    yield cfg
    cfg.restore(state)


@pytest.fixture(scope='session')
def synthetic_smpl_dir(tmp_path_factory):
    """Folder with the three synthetic SMPL pkl files and the regressor .npy files."""
    from tool.make_synthetic_smpl import make_synthetic_smpl
    out = tmp_path_factory.mktemp('smpl_model')
    make_synthetic_smpl(out, seed=0)
    return out


@pytest.fixture
def smpl_cfg(synthetic_smpl_dir):
    """cfg pointing at the synthetic body model (``data_dir`` holds J_regressor_extra.npy)."""
    cfg.smpl_model_dir = str(synthetic_smpl_dir)
    cfg.data_dir = str(synthetic_smpl_dir)
    return cfg


@pytest.fixture(scope='session')
def synthetic_data_root(tmp_path_factory, synthetic_smpl_dir):
    """A small data tree of all five datasets in their real on-disk formats."""
    from tool.make_synthetic_data import make_synthetic_data
    root = tmp_path_factory.mktemp('data')
    make_synthetic_data(root, synthetic_smpl_dir, seed=0)
    return root


@pytest.fixture
def data_cfg(synthetic_smpl_dir, synthetic_data_root):
    """cfg pointing at the synthetic body model and the synthetic data tree."""
    cfg.smpl_model_dir = str(synthetic_smpl_dir)
    cfg.data_dir = str(synthetic_data_root)
    return cfg
