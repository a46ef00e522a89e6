"""``--help`` of every entry script answers before torch, OpenCV or SciPy is imported.

Each script runs in a fresh interpreter, as ``python <script> --help`` would run it (its
folder first on ``sys.path``, started from an unrelated folder); a small wrapper then reports
which heavy packages ended up in ``sys.modules``.  No timing: the absence of the imports is
what makes ``--help`` fast (the wall times are in the README).
"""
import ast
import json
import sys
from pathlib import Path

import pytest

from tests.helpers import run_command

ROOT = Path(__file__).resolve().parents[1]

# Packages whose import costs seconds (torch and its extensions, OpenCV, SciPy).
HEAVY_MODULES = ('torch', 'torchvision', 'cv2', 'scipy', 'pycocotools')

# Runs a script as ``__main__`` with the given arguments, then prints one JSON line with the
# exit code, the heavy packages imported and the usage text.
WRAPPER = """
import contextlib, io, json, os, runpy, sys
script, args = sys.argv[1], sys.argv[2:]
sys.argv = [script] + args
sys.path[0] = os.path.dirname(os.path.abspath(script))
out = io.StringIO()
code = 0
try:
    with contextlib.redirect_stdout(out):
        runpy.run_path(script, run_name='__main__')
except SystemExit as exc:
    code = exc.code
heavy = sorted(name for name in {heavy} if name in sys.modules)
print(json.dumps({{'code': code, 'heavy': heavy, 'stdout': out.getvalue()}}))
"""


def entry_scripts():
    """``main/*.py`` and ``tool/*.py`` files that run as scripts (an ``if __name__ == '__main__'``
    block), as paths relative to the repository root."""
    scripts = []
    for folder in ('main', 'tool'):
        for path in sorted((ROOT / folder).glob('*.py')):
            tree = ast.parse(path.read_text())
            if any(isinstance(node, ast.If) and '__main__' in ast.unparse(node.test) for node in tree.body):
                scripts.append(path.relative_to(ROOT).as_posix())
    return scripts


def run_script(script, args, cwd):
    """``script args`` in a fresh interpreter through :data:`WRAPPER`: the reported dict."""
    code = WRAPPER.format(heavy=repr(HEAVY_MODULES))
    result = run_command([sys.executable, '-c', code, str(ROOT / script)] + list(args), timeout=120, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_entry_scripts_are_found():
    scripts = entry_scripts()
    assert {'main/train.py', 'main/test.py', 'main/demo.py', 'tool/benchmark.py',
            'tool/quickstart.py', 'tool/make_synthetic_data.py'} <= set(scripts)
    assert 'main/config.py' not in scripts and 'main/model.py' not in scripts


@pytest.mark.slow
@pytest.mark.parametrize('script', entry_scripts())
def test_help_imports_no_heavy_package(script, tmp_path):
    report = run_script(script, ['--help'], cwd=tmp_path)
    assert report['code'] in (0, None), report
    assert report['stdout'].startswith('usage: ')
    assert report['heavy'] == [], f"{script} --help imported {', '.join(report['heavy'])}"


@pytest.mark.slow
def test_wrapper_sees_a_heavy_import(tmp_path):
    """The wrapper itself: a script that imports torch before parsing is caught."""
    script = tmp_path / 'heavy.py'
    script.write_text('import argparse\nimport torch\nargparse.ArgumentParser().parse_args()\n')
    report = run_script(script, ['--help'], cwd=tmp_path)
    assert report['code'] == 0 and report['heavy'] == ['torch']
