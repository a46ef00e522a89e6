"""The single run configuration of SGRE: ``from main.config import cfg``.

Defaults follow the authors' ``main/config.py`` plus the keys this re-implementation
adds (README and docs/METHOD.md, "Configuration").  Importing this module creates
no folder and prints nothing; a run calls ``cfg.set_args(...)``, optionally
``cfg.update(yaml_file)``, and then ``cfg.make_run_dirs()``.
"""
import copy
import datetime
import os
from pathlib import Path

import numpy as np
import yaml

# ``--gpu`` parsing lives with the device selection; importable from here as before.
from common.utils.device import parse_gpu_ids  # noqa: F401

ROOT_DIR = Path(__file__).resolve().parents[1]

# Keys computed from other keys; they are read-only properties, recomputed on access.
DERIVED_KEYS = ('princpt', 'model_dir', 'vis_dir', 'log_dir', 'result_dir', 'num_gpus')

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
        return len(self.gpu_ids.split(','))

    def _run_subdir(self, name):
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
        return self._run_subdir('vis')

    @property
    def log_dir(self):
        return self._run_subdir('log')

    @property
    def result_dir(self):
        return self._run_subdir('result')

    # ---------------------------------------------------------- run set-up
    def set_args(self, gpu_ids, continue_train=False, is_test=False, exp_dir=''):
        """Apply the command-line arguments as the original does, without touching the disk.

        ``gpu_ids`` accepts '0', '0,1' or '0-3'.  For testing, a non-empty ``exp_dir``
        becomes the experiment folder; for training it names the run to resume from.
        """
        self.gpu_ids = parse_gpu_ids(gpu_ids)
        self.bbox_3d_size = 2
        self.camera_3d_size = 2.5
        self.exp_dir = exp_dir or ''
        if is_test:
            self.continue_train = False
            if exp_dir:
                self.output_dir = str(Path(exp_dir).resolve())
        else:
            self.continue_train = bool(continue_train)

    def update(self, config_file):
        """Override options from a YAML file; unknown or derived keys are rejected."""
        path = Path(config_file)
        if not path.is_file():
            raise FileNotFoundError(f"Config file not found: {path}")
        with open(path) as f:
            values = yaml.safe_load(f) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: expected a mapping of option names to values at the top level.")
        for key, value in values.items():
            if key in DERIVED_KEYS:
                raise ValueError(f"'{key}' in {path} is derived from other options and cannot be set.")
            if key not in self.__dict__:
                raise ValueError(
                    f"'{key}' in {path} is not an option of main/config.py. "
                    f"Valid options: {', '.join(self.option_names())}")
            default = self.__dict__[key]
            if isinstance(default, tuple) and isinstance(value, list):
                value = tuple(value)
            self.__dict__[key] = value

    def plain_options(self):
        """The options (derived values excluded) as YAML/pickle-safe plain values, by name.

        Tuples become lists, NumPy scalars Python numbers, anything else unknown its
        ``str``.  This is what a snapshot stores as ``config``; its YAML (:meth:`write_yaml`)
        can be passed back with ``--cfg``.
        """
        return {k: _plain_value(v) for k, v in sorted(self.__dict__.items()) if k not in DERIVED_KEYS}

    def write_yaml(self, path):
        """Write :meth:`plain_options` to ``path`` (the run's resolved configuration); returns ``path``."""
        with open(path, 'w') as f:
            yaml.safe_dump(self.plain_options(), f, sort_keys=True, default_flow_style=None)
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

    def make_run_dirs(self):
        """Create the experiment folder and its subfolders; returns ``output_dir``.

        Without an explicit ``output_dir`` a new folder ``exp_MM-DD_HH:MM:SS`` (plus
        ``_N`` if that name is taken) is made under ``output_root``.
        """
        if self.output_dir is None:
            self.output_dir = _new_experiment_dir(Path(self.output_root))
        for sub in (self.model_dir, self.vis_dir, self.log_dir, self.result_dir):
            os.makedirs(sub, exist_ok=True)
        return self.output_dir


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


def _new_experiment_dir(output_root):
    """Atomically claim a fresh ``exp_MM-DD_HH:MM:SS[_N]`` folder under ``output_root``."""
    output_root.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime('%m-%d_%H:%M:%S')
    suffix = 0
    while True:
        name = f'exp_{stamp}' if suffix == 0 else f'exp_{stamp}_{suffix}'
        candidate = output_root / name
        try:
            candidate.mkdir()
            return str(candidate)
        except FileExistsError:
            suffix += 1


cfg = Config()
