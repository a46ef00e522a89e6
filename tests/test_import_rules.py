"""Import rules of the code layout, checked on the source with ``ast``.

1. Library code never imports the ``main`` package (the global configuration lives in
   ``main/config.py``; library code gets explicit arguments or the records of
   ``common/options.py``): every module under ``common/nets`` and ``common/utils`` (except the
   command-line glue ``cli.py``), ``common/{options,demo,runner,seeding}.py`` and the data
   pipeline's step modules. Imports at any nesting level count (a lazy import inside a
   function is still a dependency), and so do ``importlib.import_module('main...')`` /
   ``__import__('main...')`` with a literal name.

2. Entry scripts (``main/*.py``, ``tool/*.py``) never import another entry script. They may
   import ``common``, ``data``, the assembly layer ``main.config`` / ``main.model``, and the
   synthetic-data library ``tool.synthetic`` (the generators that ``tool/make_synthetic_*.py``,
   the quickstart, the benchmark and the tests call). Every other ``main.*`` or ``tool.*``
   module (``main.train``, ``main.demo``, ``tool.quickstart``, ``tool.make_synthetic_smpl``,
   ...) is an entry script.
"""
import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

LIBRARY_DIRS = ('common/nets', 'common/utils')
LIBRARY_GLUE = {'common/utils/cli.py'}
LIBRARY_FILES = ('common/options.py', 'common/demo.py', 'common/demo_inputs.py', 'common/demo_poses.py',
                 'common/demo_run.py', 'common/pose_estimator.py', 'common/runner.py', 'common/seeding.py',
                 'data/annotations.py', 'data/smpl_targets.py', 'data/sample_steps.py',
                 'data/train_dataset.py')
ASSEMBLY_MODULES = {'main.config', 'main.model'}
ENTRY_DIRS = ('main', 'tool')


def library_files():
    files = []
    for folder in LIBRARY_DIRS:
        files += sorted((ROOT / folder).rglob('*.py'))
    files += [ROOT / name for name in LIBRARY_FILES if (ROOT / name).is_file()]
    return [path for path in files if path.relative_to(ROOT).as_posix() not in LIBRARY_GLUE]


def entry_files():
    return [path for folder in ENTRY_DIRS for path in sorted((ROOT / folder).glob('*.py'))
            if path.name != '__init__.py']


def module_name(path):
    """Dotted module name of a repository file (``main/train.py`` -> ``main.train``)."""
    parts = list(path.relative_to(ROOT).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts = parts[:-1]
    return '.'.join(parts)


def imported_modules(path):
    """Every module name the file imports, with the line: ``import a.b``, ``from a import b``
    (as ``a`` and ``a.b``, since b may be a submodule), relative imports resolved against the
    file's package, and literal ``importlib.import_module``/``__import__`` calls."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path).split('.')
    if path.name != '__init__.py':
        package = package[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                source = '.'.join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            found.append((source, node.lineno))
            found += [(f'{source}.{alias.name}', node.lineno) for alias in node.names if alias.name != '*']
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, 'id', None)
            if name in ('import_module', '__import__') and isinstance(node.args[0].value, str):
                found.append((node.args[0].value, node.lineno))
    return found


def is_within(name, package):
    return name == package or name.startswith(package + '.')


def is_entry_script(name):
    """Whether the dotted module ``name`` is (inside) an entry script of ``main`` or ``tool``."""
    parts = name.split('.')
    if parts[0] not in ENTRY_DIRS or len(parts) < 2:
        return False
    head = '.'.join(parts[:2])
    if head in ASSEMBLY_MODULES or head == 'tool.synthetic':
        return False
    # ``from main import config`` names main.config; ``from tool import x`` names tool.x.
    return (ROOT / parts[0] / (parts[1] + '.py')).is_file()


def rel(path):
    return path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize('path', library_files(), ids=rel)
def test_library_code_does_not_import_main(path):
    offending = [f'{rel(path)}:{line} imports {name}' for name, line in imported_modules(path)
                 if is_within(name, 'main')]
    assert not offending, '\n'.join(offending)


@pytest.mark.parametrize('path', entry_files(), ids=rel)
def test_entry_scripts_do_not_import_each_other(path):
    own = module_name(path)
    offending = [f'{rel(path)}:{line} imports entry script {name}' for name, line in imported_modules(path)
                 if is_entry_script(name) and not is_within(name, own)]
    assert not offending, '\n'.join(offending)


def test_rules_see_every_import_form(tmp_path, monkeypatch):
    """The checker itself: nested, relative, from-package and dynamic imports are all found."""
    fake_root = tmp_path
    (fake_root / 'main').mkdir()
    (fake_root / 'tool').mkdir()
    for name in ('train.py', 'config.py', 'model.py', '__init__.py'):
        (fake_root / 'main' / name).write_text('')
    for name in ('quickstart.py', 'make_synthetic_smpl.py', '__init__.py'):
        (fake_root / 'tool' / name).write_text('')
    source = fake_root / 'main' / 'demo.py'
    source.write_text(
        'import os\n'
        'def f():\n'
        '    from main.train import Trainer\n'
        '    import importlib\n'
        "    importlib.import_module('tool.quickstart')\n"
        'from . import config\n'
        'from main import model\n'
        'from tool import make_synthetic_smpl\n'
        'from .train import x\n')
    monkeypatch.setattr(sys.modules[__name__], 'ROOT', fake_root)
    names = dict(imported_modules(source))
    assert {'main.train', 'main.train.Trainer', 'tool.quickstart', 'main.config', 'main.model',
            'tool.make_synthetic_smpl'} <= set(names)
    assert names['main.train.Trainer'] == 3 and names['tool.quickstart'] == 5
    entries = sorted({name for name in names if is_entry_script(name)})
    assert entries == ['main.train', 'main.train.Trainer', 'main.train.x', 'tool.make_synthetic_smpl',
                       'tool.quickstart']
    assert is_within('main.config', 'main') and not is_within('mainframe', 'main')
