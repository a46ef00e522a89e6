"""Loading a body-model pickle never runs code from the file: crafted files whose payload would
run a command or evaluate Python are refused before the payload is called (the marker file it
would create stays absent), while the official layouts (Python-2 chumpy pickles, the synthetic
stand-in, re-saves at newer pickle protocols) still load to the same arrays as ``pickle.load``."""
import copyreg
import io
import pickle
import re
import shlex
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

from common.utils.smpl import SMPLFormatError, SMPLUnsafeFileError, load_smpl_model
from common.utils.smpl_layer import SMPL_MODEL_FILES
from tests.test_smpl import FIELDS, _Py2StylePickler, _write_chumpy_pickle

SLOT = 'PAYLOAD_SLOT_5f2c9e'  # a string in the valid pickle that the payload's opcodes replace
EXT_CODE = 241  # copyreg extension code the EXT1 variant registers for the duration of a test


# ----------------------------------------------------------------------------- pickle opcodes
def _text(value):
    """BINUNICODE: push a str."""
    raw = value.encode('utf-8')
    return b'X' + len(raw).to_bytes(4, 'little') + raw


def _global(module, name):
    """GLOBAL: push ``module.name`` (the unpickler's find_class resolves it)."""
    return b'c' + module.encode() + b'\n' + name.encode() + b'\n'


def _stack_global(module, name):
    """STACK_GLOBAL (protocol 4): the same, with module and name pushed as strings."""
    return _text(module) + _text(name) + b'\x93'


def _call(func_ops, *arg_ops):
    """REDUCE: call what ``func_ops`` pushes with the values the ``arg_ops`` push."""
    return func_ops + b'(' + b''.join(arg_ops) + b'tR'


def _str_list(*items):
    """EMPTY_LIST, MARK, items, APPENDS: push a list of str."""
    return b'](' + b''.join(_text(item) for item in items) + b'e'


def _payloads(marker):
    """name -> (opcodes that create ``marker`` when unpickled by plain pickle, refused global)."""
    touch = f'touch {shlex.quote(str(marker))}'
    create = f'open({str(marker)!r}, "w").close()'
    return {
        'os.system': (_call(_global('os', 'system'), _text(touch)), 'os.system'),
        'posix.system': (_call(_global('posix', 'system'), _text(touch)), 'posix.system'),
        'builtins.eval': (_call(_global('builtins', 'eval'), _text(create)), 'builtins.eval'),
        '__builtin__.eval': (_call(_global('__builtin__', 'eval'), _text(create)), '__builtin__.eval'),
        'subprocess.Popen': (_call(_global('subprocess', 'Popen'), _str_list('touch', str(marker))),
                             'subprocess.Popen'),
        # getattr(__import__('os'), 'system')(touch)
        'builtins.getattr': (_call(_call(_global('builtins', 'getattr'),
                                         _call(_global('builtins', '__import__'), _text('os')), _text('system')),
                                   _text(touch)), 'builtins.getattr'),
        # copyreg._reconstructor(Popen, Popen, args) runs Popen.__init__(obj, args)
        'copyreg._reconstructor': (_call(_global('copyreg', '_reconstructor'), _global('subprocess', 'Popen'),
                                         _global('subprocess', 'Popen'), _str_list('touch', str(marker))),
                                   'copyreg._reconstructor'),
        'stack_global': (_call(_stack_global('os', 'system'), _text(touch)), 'os.system'),
        # INST (protocol 0): MARK args INST module name
        'inst': (b'(' + _text(touch) + b'ios\nsystem\n', 'os.system'),
        # EXT1: a code of the copyreg extension registry that names os.system
        'ext1': (_call(b'\x82' + bytes([EXT_CODE]), _text(touch)), 'os.system'),
    }


LIVE_PAYLOADS = tuple(_payloads(Path('m')))
# Globals from the packages the official files use that are still not part of a body model.
FOREIGN_GLOBALS = (('numpy', 'load'), ('numpy.lib.npyio', 'load'), ('scipy.sparse', 'load_npz'),
                   ('chumpy.ch', 'Ch.__init__'), ('numpy.core.multiarray', 'fromfile'),
                   ('copy_reg', '_reconstructor'), ('builtins', 'object'))


@pytest.fixture
def ext_code_for_os_system():
    """Registers extension code ``EXT_CODE`` -> os.system (as an attacker's own environment
    could not, but as the EXT opcodes would look it up) and removes it afterwards."""
    copyreg.add_extension('os', 'system', EXT_CODE)
    yield
    copyreg.remove_extension('os', 'system', EXT_CODE)


@pytest.fixture(scope='module')
def official_dict(synthetic_smpl_dir):
    """The synthetic neutral model as plain ``pickle.load`` reads it (the trusted reference)."""
    with open(Path(synthetic_smpl_dir) / SMPL_MODEL_FILES['neutral'], 'rb') as handle:
        return pickle.load(handle)


@pytest.fixture(scope='module')
def payload_template(official_dict):
    """Protocol-2 pickle of the reference model with a slot nested in the middle: after
    ``shapedirs`` comes ``'extra': [array, ('note', SLOT)]``, then the remaining fields."""
    items = list(official_dict.items())
    cut = [key for key, _ in items].index('shapedirs') + 1
    nested = {'extra': [np.arange(3), ('note', SLOT)]}
    raw = pickle.dumps(dict(items[:cut] + list(nested.items()) + items[cut:]), protocol=2)
    assert raw.count(_text(SLOT)) == 1
    return raw


def _with_payload(template, payload_ops):
    """The template with the payload's opcodes in place of the slot string."""
    return template.replace(_text(SLOT), payload_ops)


def _assert_arrays_match_reference(model, reference):
    """Every layer field equals the trusted ``pickle.load`` value bit for bit."""
    for field in FIELDS:
        expected = reference[field]
        expected = expected.toarray() if scipy.sparse.issparse(expected) else np.asarray(expected)
        assert model[field].shape == expected.shape, field
        assert np.array_equal(model[field], expected), field
        if field not in ('kintree_table', 'f'):
            assert np.array_equal(model[field].view(np.uint64), expected.astype(np.float64).view(np.uint64)), field


# ----------------------------------------------------------------------------- refused files
@pytest.mark.parametrize('kind', LIVE_PAYLOADS)
def test_code_running_payload_is_refused_before_it_runs(payload_template, tmp_path, kind, request):
    if kind == 'ext1':
        request.getfixturevalue('ext_code_for_os_system')
    marker = tmp_path / 'MARKER'
    payload_ops, refused = _payloads(marker)[kind]
    path = tmp_path / SMPL_MODEL_FILES['neutral']
    path.write_bytes(_with_payload(payload_template, payload_ops))
    with pytest.raises(SMPLUnsafeFileError) as info:
        load_smpl_model(path)
    message = str(info.value)
    assert str(path) in message and f"'{refused}'" in message and '\n' not in message
    assert isinstance(info.value, SMPLFormatError) and isinstance(info.value, ValueError)
    assert isinstance(info.value, pickle.UnpicklingError)
    if 'Popen' in kind or 'reconstructor' in kind:
        time.sleep(0.2)  # Popen does not wait: a started command would have created the marker by now
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


@pytest.mark.parametrize('module,name', FOREIGN_GLOBALS)
def test_other_globals_of_numpy_scipy_chumpy_are_refused(payload_template, tmp_path, module, name):
    path = tmp_path / 'model.pkl'
    path.write_bytes(_with_payload(payload_template, _global(module, name)))
    with pytest.raises(SMPLUnsafeFileError, match=re.escape(f"'{path}' refers to '{module}.{name}'")):
        load_smpl_model(path)


def test_codecs_encode_only_as_latin1_bytes(payload_template, tmp_path):
    """Python 3 pickles bytes as _codecs.encode(str, 'latin1'); any other codec is refused."""
    path = tmp_path / 'model.pkl'
    path.write_bytes(_with_payload(payload_template, _call(_global('_codecs', 'encode'), _text('abc'), _text('rot13'))))
    with pytest.raises(SMPLFormatError, match=rf"(?s){re.escape(str(path))}'.*only allowed as \(str, 'latin1'\)"):
        load_smpl_model(path)


@pytest.mark.slow  # spawns the payloads' processes
@pytest.mark.parametrize('kind', LIVE_PAYLOADS)
def test_the_refused_files_are_live_exploits_for_plain_pickle(payload_template, tmp_path, kind, request):
    """The reference: the very bytes the loader refuses create the marker under ``pickle.loads``."""
    if kind == 'ext1':
        request.getfixturevalue('ext_code_for_os_system')
    marker = tmp_path / 'MARKER'
    raw = _with_payload(payload_template, _payloads(marker)[kind][0])
    loaded = pickle.loads(raw, encoding='latin1')
    deadline = time.monotonic() + 20
    while not marker.exists() and time.monotonic() < deadline:  # Popen runs asynchronously
        time.sleep(0.05)
    assert marker.exists()
    payload_result = loaded['extra'][1][1]
    if hasattr(payload_result, 'wait'):
        payload_result.wait(timeout=20)


# ----------------------------------------------------------------------------- files that load
@pytest.mark.parametrize('gender', ('neutral', pytest.param('male', marks=pytest.mark.slow),
                                    pytest.param('female', marks=pytest.mark.slow)))
def test_synthetic_official_format_loads_bit_identically(synthetic_smpl_dir, gender):
    path = Path(synthetic_smpl_dir) / SMPL_MODEL_FILES[gender]
    with open(path, 'rb') as handle:
        reference = pickle.load(handle)
    _assert_arrays_match_reference(load_smpl_model(path), reference)


@pytest.mark.parametrize('protocol', (2, pytest.param(4, marks=pytest.mark.slow), 5))
def test_resaved_model_loads_at_every_protocol(official_dict, tmp_path, protocol):
    """Re-saves by Python 3 use _codecs.encode (2), STACK_GLOBAL (4) and numpy _frombuffer (5)."""
    path = tmp_path / f'model_p{protocol}.pkl'
    path.write_bytes(pickle.dumps(official_dict, protocol=protocol))
    _assert_arrays_match_reference(load_smpl_model(path), official_dict)


@pytest.mark.slow  # test_full_official_key_set_loads covers the same globals in the fast tier
def test_chumpy_built_python2_pickle_loads(official_dict, tmp_path):
    """The chumpy pickle of test_smpl.py (chumpy.ch.Ch, reordering, ch_ops, ``__builtin__.set``,
    ``numpy.core.multiarray``, ``scipy.sparse.csc``) loads to the reference arrays."""
    path = tmp_path / SMPL_MODEL_FILES['neutral']
    _write_chumpy_pickle(path, _reference_arrays(official_dict))
    _assert_arrays_match_reference(load_smpl_model(path), official_dict)


def test_full_official_key_set_loads(official_dict, tmp_path):
    """All keys of the official files (J, weights_prior, J_regressor_prior, vert_sym_idxs, ...)
    as chumpy objects, sparse matrices and arrays with Python-2 module names."""
    ch = pytest.importorskip('chumpy')
    arrays = _reference_arrays(official_dict)
    data = {
        'J_regressor_prior': scipy.sparse.csc_matrix(arrays['J_regressor']),
        'f': np.array(arrays['f'], dtype=np.uint32),
        'J_regressor': scipy.sparse.csc_matrix(arrays['J_regressor']),
        'kintree_table': np.array(arrays['kintree_table']),
        'J': ch.array(arrays['J_regressor'] @ arrays['v_template']),
        'weights_prior': ch.array(np.array(arrays['weights'])),
        'weights': ch.array(np.array(arrays['weights'])),
        'vert_sym_idxs': np.arange(6890)[::-1].copy(),
        'posedirs': ch.array(np.array(arrays['posedirs'])),
        'bs_type': 'lrotmin',
        'v_template': ch.array(np.array(arrays['v_template'])),
        'shapedirs': ch.array(np.array(arrays['shapedirs'])),
        'bs_style': 'lbs',
    }
    buffer = io.BytesIO()
    _Py2StylePickler(buffer, protocol=2).dump(data)
    raw = buffer.getvalue().replace(b'cnumpy._core.multiarray\n', b'cnumpy.core.multiarray\n')
    raw = raw.replace(b'cscipy.sparse._csc\n', b'cscipy.sparse.csc\n')
    path = tmp_path / SMPL_MODEL_FILES['female']
    path.write_bytes(raw)
    model = load_smpl_model(path)
    _assert_arrays_match_reference(model, official_dict)
    assert np.array_equal(model['J'], arrays['J_regressor'] @ arrays['v_template'])
    assert np.array_equal(model['vert_sym_idxs'], np.arange(6890)[::-1])
    assert model['bs_style'] == 'lbs' and model['bs_type'] == 'lrotmin'


def _reference_arrays(reference):
    """The layer fields of the trusted reference as dense NumPy arrays."""
    return {field: (value.toarray() if scipy.sparse.issparse(value) else np.asarray(value))
            for field, value in reference.items() if field in FIELDS}
