"""Datasets carry their options: the data pipeline reads the run configuration only in
dataset constructors (docs/METHOD.md, "Configuration")."""
import ast
import dataclasses
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest

from main.config import ROOT_DIR, cfg

# These tests set options on the global ``cfg``; ``cfg_state`` restores it after each test.
pytestmark = pytest.mark.usefixtures('cfg_state')

# Library modules of the data side: they must not import ``main`` at all.
LEAF_MODULES = ('data/annotations.py', 'data/sample_steps.py', 'data/smpl_targets.py', 'data/train_dataset.py',
                'data/registry.py', 'common/utils/preprocessing.py', 'common/utils/posefix.py',
                'common/utils/occlusion.py', 'common/utils/joints.py', 'common/utils/metrics.py')
# Dataset modules: ``main`` only inside ``resolve_data_options`` (called by constructors).
DATASET_MODULES = ('data/dataset.py', 'data/Human36M/Human36M.py', 'data/MuCo/MuCo.py', 'data/MSCOCO/MSCOCO.py',
                   'data/MPII/MPII.py', 'data/PW3D/PW3D.py')


def imports_of_main(path):
    """(line, enclosing function name or None) of every import of ``main`` in a source file."""
    tree = ast.parse(Path(ROOT_DIR, path).read_text())
    found = []

    def visit(node, function):
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else function
            names = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0:
                names = [child.module or '']
            if any(name == 'main' or name.startswith('main.') for name in names):
                found.append((child.lineno, function))
            visit(child, inner)

    visit(tree, None)
    return found


@pytest.mark.parametrize('path', LEAF_MODULES)
def test_data_library_modules_never_import_main(path):
    assert imports_of_main(path) == []


@pytest.mark.parametrize('path', DATASET_MODULES)
def test_dataset_modules_reach_the_configuration_only_through_their_constructors(path):
    assert all(function == 'resolve_data_options' for _, function in imports_of_main(path))


def test_the_import_check_sees_imports():
    """The checker itself finds a module-level and a function-level import of main."""
    assert imports_of_main('data/dataset.py') == [(imports_of_main('data/dataset.py')[0][0], 'resolve_data_options')]
    assert imports_of_main('main/train.py')


def mscoco(options):
    from data.MSCOCO.MSCOCO import MSCOCO
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return MSCOCO(None, 'train', options)


def test_explicit_options_replace_the_configuration(data_cfg, tmp_path):
    options = dataclasses.replace(data_cfg.data_options(), seed=3)
    reference = mscoco(options)
    sample = reference[1]
    # The global configuration now points nowhere and has another seed: nothing changes.
    cfg.data_dir, cfg.smpl_model_dir, cfg.seed = str(tmp_path / 'missing'), str(tmp_path / 'missing'), 9
    explicit = mscoco(options)
    assert explicit.options is options and len(explicit) == len(reference)
    for got, expected in zip(explicit[1], sample):
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


def test_pickled_dataset_keeps_its_options(data_cfg):
    """What a DataLoader worker receives: the dataset with its options, whatever cfg says."""
    data_cfg.seed = 4
    dataset = mscoco(None)
    assert dataset.options == data_cfg.data_options()
    copy = pickle.loads(pickle.dumps(dataset))
    data_cfg.seed, data_cfg.fix_flip_neighbours = None, True
    assert copy.options.seed == 4 and not copy.options.fix_flip_neighbours
    for got, expected in zip(copy[0], dataset[0]):
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
