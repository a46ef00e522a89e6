"""The single run configuration of SGRE: ``from main.config import cfg``.

Defaults follow the authors' ``main/config.py`` plus the keys this re-implementation
adds (README and docs/METHOD.md, "Configuration").  Importing this module creates
no folder and prints nothing; a run calls ``cfg.set_args(...)``, optionally
``cfg.update(yaml_file)``, and then ``cfg.make_run_dirs()``.

Every option has a declared type and range (``OPTION_TYPES``): a YAML value is checked and
coerced when it is read, and the whole configuration again before any folder is made, so a
bad option ends the run with one line (:class:`common.errors.ConfigError`) and leaves no trace
on disk.  The keys that record the run rather than its options (``RUN_IDENTITY_KEYS``) are never
taken from a YAML file.
"""
import copy
import datetime
import os
import sys
from pathlib import Path

import numpy as np
import yaml

from common.errors import ConfigError, RunDirError
from common.utils.gpu_ids import parse_gpu_ids

ROOT_DIR = Path(__file__).resolve().parents[1]

# Keys computed from other keys; they are read-only properties, recomputed on access.
DERIVED_KEYS = ('princpt', 'model_dir', 'vis_dir', 'log_dir', 'result_dir', 'num_gpus')

# Keys that record which run this is and where it lives, not how it computes: a ``--cfg`` file
# (e.g. a run's own config.yaml passed back) never sets them; the command line does.
RUN_IDENTITY_KEYS = ('output_dir', 'exp_dir', 'continue_train', 'gpu_ids', 'eval_output_dir')

def _default_options():
    """Every option with its default value (the original's options, then the added keys)."""
    return dict(
        # datasets
        trainset_3d=['Human36M', 'MuCo'],
        trainset_2d=['MSCOCO', 'MPII'],
        testset='PW3D',
        # model
        resnet_type=50,
        input_img_shape=(256, 256),
        output_hm_shape=(64, 64, 64),
        bbox_3d_size=2,
        camera_3d_size=2.5,
        sigma=2.5,
        focal=(5000, 5000),
        # training
        lr_dec_epoch=[10],
        end_epoch=11,
        lr=1e-3,
        lr_backbone=1e-4,
        lr_dec_factor=10,
        train_batch_size=128,
        use_gt_info=True,
        # testing
        test_batch_size=64,
        crowd=False,
        vis=False,
        render=False,
        # others
        num_thread=16,
        gpu_ids='0',
        continue_train=False,
        exp_dir='',
        # directories
        data_dir=str(ROOT_DIR / 'data'),
        smpl_model_dir=str(ROOT_DIR / 'common' / 'utils' / 'smplpytorch' / 'smplpytorch' / 'native' / 'models'),
        output_root=str(ROOT_DIR / 'output'),
        output_dir=None,
        eval_output_dir=None,
        # added by this re-implementation
        seed=None,
        imagenet_weights=None,
        scale_factor=0.0,
        rot_factor=0.0,
        color_factor=0.2,
        use_occlusion=False,
        voc_dir=None,
        fix_flip_neighbours=False,
        apply_lr_backbone=False,
        amp_dynamic_scale=False,
        max_iters_per_epoch=None,
        sync_bn=False,
    )


class Config:
    """Run options as attributes; see ``_default_options`` for names and defaults."""

    root_dir = str(ROOT_DIR)
    cur_dir = str(ROOT_DIR / 'main')
    created_dirs = []    # the folders the last make_run_dirs() created, outermost first

    def __init__(self):
        self.reset()

    # ---------------------------------------------------------------- state
    def reset(self):
        """Restore every option to its default (used by tests)."""
        self.__dict__.clear()
        self.__dict__.update(_default_options())

    def option_names(self):
        return sorted(self.__dict__)

    def to_dict(self):
        """Plain ``{name: value}`` of every option and derived value (for YAML/checkpoints)."""
        out = {k: copy.deepcopy(v) for k, v in self.__dict__.items()}
        for key in ('princpt', 'num_gpus'):
            out[key] = getattr(self, key)
        return out

    def snapshot(self):
        return copy.deepcopy(self.__dict__)

    def restore(self, state):
        self.__dict__.clear()
        self.__dict__.update(copy.deepcopy(state))

    # -------------------------------------------------------------- derived
    @property
    def princpt(self):
        """(cx, cy) of the virtual crop camera = (W/2, H/2) of ``input_img_shape``."""
        height, width = self.input_img_shape
        return (width / 2, height / 2)

    @property
    def num_gpus(self):
        """Number of listed GPU ids; 1 when ``gpu_ids`` is None (the first CUDA device, else the CPU)."""
        return 1 if self.gpu_ids is None else len(self.gpu_ids.split(','))

    def _run_subdir(self, name, writable=False):
        """``<output_dir>/<name>``; for the folders an evaluation writes (``writable``), under
        ``eval_output_dir`` instead when it is set (e.g. a read-only ``--exp_dir``)."""
        if writable and self.eval_output_dir is not None:
            return str(Path(self.eval_output_dir) / name)
        if self.output_dir is None:
            raise RuntimeError(
                "cfg.output_dir is not set yet: call cfg.make_run_dirs() when the run starts "
                "(or set output_dir / pass --exp_dir).")
        return str(Path(self.output_dir) / name)

    @property
    def model_dir(self):
        return self._run_subdir('checkpoint')

    @property
    def vis_dir(self):
        return self._run_subdir('vis', writable=True)

    @property
    def log_dir(self):
        return self._run_subdir('log', writable=True)

    @property
    def result_dir(self):
        return self._run_subdir('result', writable=True)

    # ---------------------------------------------------------- run set-up
    def set_args(self, gpu_ids, continue_train=False, is_test=False, exp_dir=''):
        """Apply the command-line arguments as the original does, without touching the disk.

        ``gpu_ids`` accepts '0', '0,1' or '0-3', or None (no ``--gpu``: the first CUDA device
        if there is one, else the CPU; the device is chosen when the run starts).  For testing,
        a non-empty ``exp_dir`` becomes the experiment folder; for training it names the run to
        resume from, and ``output_dir`` is cleared: training never writes into an existing
        run's folder.
        """
        self.gpu_ids = None if gpu_ids is None else parse_gpu_ids(gpu_ids)
        self.bbox_3d_size = 2
        self.camera_3d_size = 2.5
        self.exp_dir = exp_dir or ''
        self.eval_output_dir = None
        if is_test:
            self.continue_train = False
            if exp_dir:
                self.output_dir = str(Path(exp_dir).resolve())
        else:
            self.continue_train = bool(continue_train)
            self.output_dir = None   # a training run always gets a new folder (make_run_dirs)

    def update(self, config_file, log=None):
        """Override options from a YAML file, each checked and coerced (see ``OPTION_TYPES``).

        Unknown or derived keys and values of the wrong type or range raise
        :class:`~common.errors.ConfigError` naming the file, the option, the value and what is
        allowed; nothing is changed then.  The run-identity keys (``RUN_IDENTITY_KEYS``) are
        skipped with one line to ``log`` (default: stderr), so a run's own config.yaml passed
        back reproduces its options, never its folders.  Returns the skipped keys.
        """
        path = Path(config_file)
        if not path.is_file():
            raise FileNotFoundError(f"Config file not found: {path}")
        try:
            with open(path) as f:
                values = yaml.safe_load(f)
        except yaml.YAMLError as exc:
            problem = str(exc).replace('\n', ' ')
            raise ConfigError(f"{path}: not valid YAML ({problem})") from None
        values = {} if values is None else values
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping of option names to values at the top level.")
        checked, skipped = {}, []
        for key, value in values.items():
            if key in DERIVED_KEYS:
                raise ConfigError(f"'{key}' in {path} is derived from other options and cannot be set.")
            if key not in self.__dict__:
                raise ConfigError(
                    f"'{key}' in {path} is not an option of main/config.py. "
                    f"Valid options: {', '.join(self.option_names())}")
            if key in RUN_IDENTITY_KEYS:
                skipped.append(key)
                continue
            checked[key] = check_option(key, value, source=str(path))
        self.__dict__.update(checked)
        if skipped:
            (log or _note_stderr)(
                f"{path}: ignoring {', '.join(skipped)}: a config file sets options, never the run's "
                "folders or devices (use --exp_dir and --gpu).")
        return skipped

    def validate(self):
        """Check and coerce every option, then the rules that join several options.

        Called before a run creates anything on disk; raises :class:`~common.errors.ConfigError`
        with a one-line message naming the option, its value and what is allowed.
        """
        for key in _default_options():
            self.__dict__[key] = check_option(key, self.__dict__.get(key))
        for key in sorted(set(self.__dict__) - set(_default_options())):
            raise ConfigError(f"'{key}' is not an option of main/config.py.")
        return self

    def validate_training(self, start_epoch=0):
        """:meth:`validate` plus what only training needs: a training set, and at least one
        epoch after ``start_epoch`` (the epoch a resumed run starts at)."""
        self.validate()
        if not self.trainset_3d and not self.trainset_2d:
            raise ConfigError("options 'trainset_3d' and 'trainset_2d' are both empty: "
                              "name at least one training set, e.g. trainset_2d: [MSCOCO].")
        if self.end_epoch <= start_epoch:
            raise ConfigError(
                f"option 'end_epoch' must be above the first epoch to train ({start_epoch}) so that at "
                f"least one epoch is trained, got {self.end_epoch}.")
        return self

    def plain_options(self):
        """The options (derived values excluded) as YAML/pickle-safe plain values, by name.

        Tuples become lists, NumPy scalars Python numbers, anything else unknown its
        ``str``.  This is what a snapshot stores as ``config``; its YAML (:meth:`write_yaml`)
        can be passed back with ``--cfg``.
        """
        return {k: _plain_value(v) for k, v in sorted(self.__dict__.items()) if k not in DERIVED_KEYS}

    def write_yaml(self, path):
        """Write :meth:`plain_options` to ``path`` (the run's resolved configuration) atomically
        (temp file beside it, then a rename), so ``path`` is never half-written.  A full disk or
        a missing permission raises :class:`~common.errors.RunDirError` naming ``path``.
        Returns ``path``."""
        from common.utils.files import FileWriteError, atomic_write_text
        text = yaml.safe_dump(self.plain_options(), sort_keys=True, default_flow_style=None)
        try:
            atomic_write_text(path, text)
        except FileWriteError as exc:
            raise RunDirError(f'Cannot write the configuration: {exc}') from None
        return path

    # ------------------------------------------------------ option records
    def geometry_options(self):
        """Crop, heatmap and virtual-camera geometry (``common.options.GeometryOptions``)."""
        from common.options import GeometryOptions
        return GeometryOptions(input_img_shape=tuple(self.input_img_shape),
                               output_hm_shape=tuple(self.output_hm_shape),
                               bbox_3d_size=self.bbox_3d_size, camera_3d_size=self.camera_3d_size,
                               focal=tuple(self.focal), sigma=self.sigma)

    def augment_options(self):
        """Training augmentation ranges (``common.options.AugmentOptions``)."""
        from common.options import AugmentOptions
        return AugmentOptions(scale_factor=self.scale_factor, rot_factor=self.rot_factor,
                              color_factor=self.color_factor, use_occlusion=self.use_occlusion,
                              voc_dir=self.voc_dir)

    def body_model_paths(self):
        """Body-model file locations (``common.options.BodyModelPaths``)."""
        from common.options import BodyModelPaths
        return BodyModelPaths(smpl_model_dir=str(self.smpl_model_dir), regressor_dir=str(self.data_dir))

    def data_options(self):
        """Everything the datasets need (``common.options.DataOptions``)."""
        from common.options import DataOptions
        return DataOptions(data_dir=str(self.data_dir), geometry=self.geometry_options(),
                           augment=self.augment_options(), body_model=self.body_model_paths(),
                           use_gt_info=self.use_gt_info, fix_flip_neighbours=self.fix_flip_neighbours,
                           crowd=self.crowd, vis=self.vis, render=self.render,
                           vis_dir=self.vis_dir if self.output_dir is not None else None,
                           seed=self.seed)

    def model_options(self):
        """What ``get_model`` needs (``common.options.ModelOptions``)."""
        from common.options import ModelOptions
        return ModelOptions(geometry=self.geometry_options(), body_model=self.body_model_paths(),
                            resnet_type=self.resnet_type, imagenet_weights=self.imagenet_weights)

    def make_run_dirs(self, new_only=False, evaluation=False):
        """Create the experiment folder and its subfolders; returns ``output_dir``.

        Without an explicit ``output_dir`` a new folder ``exp_MM-DD_HH:MM:SS`` (plus
        ``_N`` if that name is taken) is made under ``output_root``.  With ``new_only``
        (training) an explicit ``output_dir`` must not exist yet: a run writes only into a
        folder it creates itself.  With ``evaluation`` only the folders an evaluation writes
        (log, vis, result; under ``eval_output_dir`` if set) are created, never
        ``checkpoint/``.  The options are validated first, so a bad option creates nothing.
        Which folders were created is kept in :attr:`created_dirs` (see :func:`remove_created_dirs`).
        """
        self.validate()
        if new_only and self.output_dir is not None and os.path.lexists(self.output_dir):
            raise RunDirError(
                f"output_dir {self.output_dir} already exists: training writes only into a new folder "
                f"it creates (leave output_dir unset to get one under output_root {self.output_root}).")
        created = Config.created_dirs = []
        try:
            if self.output_dir is None:
                self.output_dir = _new_experiment_dir(Path(self.output_root), created)
            subs = (self.vis_dir, self.log_dir, self.result_dir)
            for sub in subs if evaluation else (self.model_dir,) + subs:
                _make_dirs(Path(sub), created)
        except RunDirError:
            remove_created_dirs(created)   # a half-made folder tree is a failed start too
            raise
        return self.output_dir


def _make_dirs(folder, created):
    """``mkdir -p folder``, appending each folder it makes (outermost first) to ``created``."""
    missing = []
    probe = folder
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"Cannot create the folder {folder}: {exc.strerror or exc}.") from None
    created.extend(reversed(missing))


def remove_created_dirs(created):
    """Remove the folders of ``created`` (as recorded by :meth:`Config.make_run_dirs`) that are
    still empty, innermost first; folders holding anything, and folders the run did not create,
    stay.  Returns the removed paths."""
    removed = []
    for folder in sorted(set(map(str, created)), key=len, reverse=True):
        try:
            os.rmdir(folder)
            removed.append(folder)
        except OSError:
            pass
    return removed


def check_option(name, value, source=None):
    """``value`` checked and coerced for option ``name`` (``OPTION_TYPES``); a
    :class:`~common.errors.ConfigError` naming ``source``, the option, the value and what is
    allowed otherwise."""
    try:
        return OPTION_TYPES[name](value)
    except _Invalid as exc:
        where = f'{source}: ' if source else ''
        raise ConfigError(f"{where}option '{name}' {exc}") from None


def _note_stderr(message):
    print(message, file=sys.stderr)


def _plain_value(value):
    """``value`` as plain YAML/pickle-safe data (see :meth:`Config.plain_options`)."""
    if isinstance(value, (list, tuple)):
        return [_plain_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain_value(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _new_experiment_dir(output_root, created):
    """Atomically claim a fresh ``exp_MM-DD_HH:MM:SS[_N]`` folder under ``output_root``
    (appended to ``created``, after any parent it had to make)."""
    _make_dirs(output_root, created)
    stamp = datetime.datetime.now().strftime('%m-%d_%H:%M:%S')
    suffix = 0
    while True:
        name = f'exp_{stamp}' if suffix == 0 else f'exp_{stamp}_{suffix}'
        candidate = output_root / name
        try:
            candidate.mkdir()
        except FileExistsError:
            suffix += 1
            continue
        except OSError as exc:
            raise RunDirError(f"Cannot create the experiment folder {candidate}: {exc.strerror or exc}.") from None
        created.append(candidate)
        return str(candidate)


# ------------------------------------------------------------------ option types
class _Invalid(Exception):
    """Raised by a checker: the text says what is allowed and what was given."""


def _shown(value):
    """``value`` for a message: strings quoted and called strings (YAML quoting is a common slip)."""
    if isinstance(value, str):
        return f"the string '{value}'"
    return repr(value)


def _is_real_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real_number(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _as_int(value, allowed):
    """``value`` as an int: ints, and floats without a fraction (``2.0``); never bools or strings."""
    if _is_real_int(value):
        return int(value)
    if isinstance(value, (float, np.floating)) and np.isfinite(value) and float(value).is_integer():
        return int(value)
    raise _Invalid(f'must be {allowed}, got {_shown(value)}')


def _as_number(value, allowed, to_float):
    """``value`` as a finite number; numeric strings such as '1e-3' (PyYAML reads them as
    text) become floats.  With ``to_float`` ints become floats too, else they stay ints."""
    if _is_real_number(value):
        number = value.item() if isinstance(value, np.generic) else value
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise _Invalid(f'must be {allowed}, got {_shown(value)}') from None
    else:
        raise _Invalid(f'must be {allowed}, got {_shown(value)}')
    if not np.isfinite(number):
        raise _Invalid(f'must be {allowed}, got {_shown(value)}')
    return float(number) if to_float else number


def boolean():
    """true or false only: the string 'False' is truthy in Python, so it is refused."""
    def check(value):
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        raise _Invalid(f'must be true or false, got {_shown(value)}')
    return check


def integer(minimum=None, choices=None, why=''):
    """An int, at least ``minimum`` or one of ``choices``; ``why`` is appended to the rule."""
    if choices is not None:
        allowed = 'one of ' + ', '.join(map(str, choices))
    elif minimum is not None:
        allowed = f'an integer >= {minimum}'
    else:
        allowed = 'an integer'
    allowed += f' ({why})' if why else ''

    def check(value):
        number = _as_int(value, allowed)
        if (choices is not None and number not in choices) or (minimum is not None and number < minimum):
            raise _Invalid(f'must be {allowed}, got {_shown(value)}')
        return number
    return check


def number(positive=False, nonnegative=False, to_float=True):
    """A finite number (> 0 with ``positive``, >= 0 with ``nonnegative``); see :func:`_as_number`."""
    allowed = 'a number > 0' if positive else 'a number >= 0' if nonnegative else 'a number'

    def check(value):
        result = _as_number(value, allowed, to_float)
        if (positive and result <= 0) or (nonnegative and result < 0):
            raise _Invalid(f'must be {allowed}, got {_shown(value)}')
        return result
    return check


def sequence(item, length=None, example='', as_tuple=False):
    """A list of ``length`` values (any length if None), each checked by ``item``."""
    size = f'{length} ' if length is not None else ''
    allowed = f'a list of {size}values, e.g. {example}' if example else f'a list of {size}values'

    def check(value):
        if not isinstance(value, (list, tuple)) or (length is not None and len(value) != length):
            raise _Invalid(f'must be {allowed}, got {_shown(value)}')
        items = []
        for index, element in enumerate(value):
            try:
                items.append(item(element))
            except _Invalid as exc:
                raise _Invalid(f'item {index} {exc} (the option must be {allowed})') from None
        return tuple(items) if as_tuple else items
    return check


def dataset_name():
    """One of the registry's dataset names."""
    from data.registry import KNOWN_DATASETS
    allowed = 'a dataset name, one of ' + ', '.join(KNOWN_DATASETS)

    def check(value):
        if isinstance(value, str) and value in KNOWN_DATASETS:
            return value
        raise _Invalid(f'must be {allowed}, got {_shown(value)}')
    return check


def test_sets():
    """One evaluation set name (a dataset or an evaluation subset such as PW3D-OC) or a
    non-empty list of them; a single name stays a string."""
    from data.registry import TEST_SETS
    allowed = 'an evaluation set or a list of them, from ' + ', '.join(TEST_SETS)

    def check(value):
        if isinstance(value, str) and value in TEST_SETS:
            return value
        if isinstance(value, (list, tuple)) and value:
            for index, name in enumerate(value):
                if not (isinstance(name, str) and name in TEST_SETS):
                    raise _Invalid(f'item {index} must be {allowed}, got {_shown(name)}')
            return list(value)
        raise _Invalid(f'must be {allowed}, got {_shown(value)}')
    return check


def path(optional=False):
    """A non-empty path (a ``str``; a ``pathlib.Path`` is stored as its text); ``None`` if optional."""
    allowed = 'a path or null' if optional else 'a path'

    def check(value):
        if value is None and optional:
            return None
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if isinstance(value, str) and value.strip():
            return value
        raise _Invalid(f'must be {allowed}, got {_shown(value)}')
    return check


def text():
    """Any string (may be empty)."""
    def check(value):
        if isinstance(value, str):
            return value
        raise _Invalid(f'must be a string, got {_shown(value)}')
    return check


def optional(inner):
    """``None`` or what ``inner`` accepts (``null`` in YAML)."""
    def check(value):
        if value is None:
            return None
        try:
            return inner(value)
        except _Invalid as exc:
            raise _Invalid(f'{exc} (or null)') from None
    return check


def gpu_list():
    """A ``--gpu`` string ('0', '0,1', '0-3'), normalised to the comma list."""
    def check(value):
        try:
            return parse_gpu_ids(value)
        except ValueError:
            raise _Invalid(f"must be GPU ids such as '0', '0,1' or '0-3', got {_shown(value)}") from None
    return check


def _option_types():
    """The checker of every option of ``_default_options`` (same names)."""
    datasets = sequence(dataset_name(), example='[Human36M, MuCo]')
    return dict(
        trainset_3d=datasets,
        trainset_2d=sequence(dataset_name(), example='[MSCOCO, MPII]'),
        testset=test_sets(),
        resnet_type=integer(choices=(50, 101, 152)),
        input_img_shape=sequence(integer(minimum=1), 2, '[256, 256]', as_tuple=True),
        output_hm_shape=sequence(integer(minimum=1), 3, '[64, 64, 64]', as_tuple=True),
        bbox_3d_size=number(positive=True, to_float=False),
        camera_3d_size=number(positive=True, to_float=False),
        sigma=number(positive=True, to_float=False),
        focal=sequence(number(positive=True, to_float=False), 2, '[5000, 5000]', as_tuple=True),
        lr_dec_epoch=sequence(integer(minimum=0), example='[10]'),
        end_epoch=integer(minimum=1),
        lr=number(positive=True),
        lr_backbone=number(positive=True),
        lr_dec_factor=number(positive=True, to_float=False),
        train_batch_size=integer(minimum=2, why='per device: BatchNorm needs 2 samples'),
        use_gt_info=boolean(),
        test_batch_size=integer(minimum=1),
        crowd=boolean(),
        vis=boolean(),
        render=boolean(),
        num_thread=integer(minimum=0),
        gpu_ids=optional(gpu_list()),
        continue_train=boolean(),
        exp_dir=text(),
        data_dir=path(),
        smpl_model_dir=path(),
        output_root=path(),
        output_dir=path(optional=True),
        eval_output_dir=path(optional=True),
        seed=optional(integer(minimum=0)),
        imagenet_weights=path(optional=True),
        scale_factor=number(nonnegative=True),
        rot_factor=number(nonnegative=True),
        color_factor=number(nonnegative=True),
        use_occlusion=boolean(),
        voc_dir=path(optional=True),
        fix_flip_neighbours=boolean(),
        apply_lr_backbone=boolean(),
        amp_dynamic_scale=boolean(),
        max_iters_per_epoch=optional(integer(minimum=1)),
        sync_bn=boolean(),
    )


OPTION_TYPES = _option_types()


cfg = Config()
