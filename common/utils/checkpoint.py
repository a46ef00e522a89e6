"""Checkpoint files: atomic saving, safe loading, strict and partial network loads.

A snapshot is ``<model_dir>/snapshot_<epoch>.pth.tar`` holding ``epoch``,
``network`` (state_dict keys prefixed ``module.``, as the released files),
``optimizer``, ``scaler`` and the resolved ``config``.  Released SGRE files
holding only ``epoch`` / ``network`` / ``optimizer`` load as well.

Loads are strict for every learnable weight and BatchNorm statistic: missing,
unexpected or mis-shaped keys raise :class:`CheckpointMismatchError` naming them.
The neutral SMPL buffers ``human_model_layer.th_*`` may be present (they then
replace the local body model, as in the original) or absent.  The only partial
load is the ``snapshot_0`` backbone warm start (:func:`load_network_partial`).

:func:`resume_training` (``--continue --exp_dir``) and :func:`warm_start`
(``--continue`` alone) put the source file into the new run's checkpoint folder and
load it; they take every location and object explicitly (the trainer passes them).
"""
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from common.errors import UserError
from common.nets.stacked import stacked_optimizer_state
from common.utils.files import FileWriteError, atomic_copy, atomic_write, remove_stale_temp_files
from common.utils.required_files import RequiredFile

MODULE_PREFIX = 'module.'
WARM_START_FILE = Path('tool') / 'snapshot_0.pth.tar'   # under the repository root
WARM_START_SOURCE = (
    "the SGRE authors' 'Pre-trained Model' (https://1drv.ms/f/s!AhpKYLhXKpH7g8t8Midw6Mh_0fu-eQ?e=YACLOC, from the "
    "README of https://github.com/kennethwdk/SGRE) or 3DCrowdNet's copy "
    "(https://drive.google.com/drive/folders/1UsntO3wdIHOiajcb8oicMhQ82SmFvulp); or convert SimpleBaseline's "
    "pose_resnet_50_256x192.pth.tar (https://github.com/microsoft/human-pose-estimation.pytorch) with "
    "python tool/convert_simple_to_i2l.py --src pose_resnet_50_256x192.pth.tar --out tool/snapshot_0.pth.tar")
SNAPSHOT_RE = re.compile(r'^snapshot_(\d+)\.pth\.tar$')
_SMPL_BUFFER_RE = re.compile(r'(^|\.)human_model_layer\.th_[A-Za-z_]+$')


class CheckpointError(UserError, RuntimeError):
    """A checkpoint file is missing, unreadable or lacks a required entry."""


class CheckpointWriteError(CheckpointError):
    """A snapshot could not be written (disk full, no permission); the message names the
    path and says which previous snapshot is intact."""


class NonFiniteCheckpointError(CheckpointError):
    """A snapshot holds NaN or infinite values; the message names the tensors (and the file)."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's network keys or shapes do not match the model.

    ``missing``, ``unexpected`` (key lists) and ``mismatched`` (list of
    ``(key, checkpoint_shape, model_shape)``) name every offending entry.
    """

    def __init__(self, source, missing, unexpected, mismatched):
        self.source, self.missing, self.unexpected, self.mismatched = source, missing, unexpected, mismatched
        lines = [f"Checkpoint {source} does not match the model (a strict load: every learnable "
                 "weight and BatchNorm statistic must be present with the model's shape)."]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {format_keys(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {format_keys(unexpected)}")
        if mismatched:
            shown = [f"{k}: checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in mismatched]
            lines.append(f"  shape mismatches ({len(mismatched)}): {format_keys(shown)}")
        lines.append("  Was it written for another backbone depth (cfg.resnet_type) or another model?")
        super().__init__('\n'.join(lines))


def format_keys(keys, limit=20):
    """Comma-separated ``keys``, cut after ``limit`` entries with a count of the rest."""
    keys = list(keys)
    text = ', '.join(keys[:limit])
    if len(keys) > limit:
        text += f', ... and {len(keys) - limit} more'
    return text


# ----------------------------------------------------------------- file names
def snapshot_path(model_dir, epoch):
    """``<model_dir>/snapshot_<epoch>.pth.tar``."""
    return str(Path(model_dir) / f'snapshot_{int(epoch)}.pth.tar')


def list_snapshots(model_dir):
    """``[(epoch, path), ...]`` of the ``snapshot_<N>.pth.tar`` files in ``model_dir``, by epoch."""
    folder = Path(model_dir)
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        match = SNAPSHOT_RE.match(entry.name)
        if match and entry.is_file():
            found.append((int(match.group(1)), str(entry)))
    return sorted(found)


def latest_snapshot(model_dir):
    """``(epoch, path)`` of the highest-epoch snapshot in ``model_dir``, or ``None``."""
    found = list_snapshots(model_dir)
    return found[-1] if found else None


# -------------------------------------------------------------- save / load
def floating_tensors(state, prefix=''):
    """``[(name, tensor), ...]`` of the floating (and complex) tensors in the nested
    dicts/lists ``state``, named by their path (``'optimizer/state/3/exp_avg'``)."""
    if torch.is_tensor(state):
        return [(prefix or '<tensor>', state)] if (state.is_floating_point() or state.is_complex()) else []
    found = []
    if isinstance(state, dict):
        for key, value in state.items():
            found += floating_tensors(value, f'{prefix}/{key}' if prefix else str(key))
    elif isinstance(state, (list, tuple)):
        for i, value in enumerate(state):
            found += floating_tensors(value, f'{prefix}/{i}' if prefix else str(i))
    return found


def non_finite_tensors(state):
    """Names (``'network/module.x.weight'``, ``'optimizer/state/3/exp_avg'``) of the floating
    tensors in the nested dicts/lists ``state`` that hold a NaN or an infinity.

    One flag per tensor is computed on the tensor's device and read back once per device
    (a GPU state costs a single synchronisation, not one per tensor).
    """
    by_device = {}
    for name, tensor in floating_tensors(state):
        by_device.setdefault(tensor.device, []).append((name, torch.isfinite(tensor).all()))
    bad = []
    for entries in by_device.values():
        flags = torch.stack([flag for _, flag in entries]).tolist()
        bad += [name for (name, _), finite in zip(entries, flags) if not finite]
    return bad


def save_checkpoint(state, path):
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, then rename.

    A state holding a non-finite tensor is refused (:class:`NonFiniteCheckpointError`
    naming it) before anything is written.  An interrupted save (crash, Ctrl-C, full
    disk) leaves any previous file at ``path`` untouched and removes the temporary file;
    temporary files of killed earlier saves are removed.  A full disk or a permission
    error raises :class:`CheckpointWriteError` naming ``path``.
    """
    path = Path(path)
    bad = non_finite_tensors(state)
    if bad:
        raise NonFiniteCheckpointError(
            f"Refusing to write {path}: non-finite values (NaN/inf) in {format_keys(bad)}. "
            f"{_kept_note(path)}")
    try:
        return atomic_write(path, lambda f: torch.save(state, f), kept_note=_kept_note(path))
    except FileWriteError as exc:
        raise CheckpointWriteError(str(exc)) from exc


def _kept_note(path):
    """What a failed write of ``path`` leaves intact, for error messages."""
    path = Path(path)
    if path.exists():
        return f'The previous {path.name} is intact.'
    latest = latest_snapshot(path.parent)
    if latest is not None:
        return f'The previous snapshot {latest[1]} is intact.'
    return 'No snapshot was written.'


def load_checkpoint_file(path, map_location='cpu'):
    """Read a checkpoint with ``weights_only=True`` (tensors, numbers, plain containers).

    Raises :class:`CheckpointError` naming the file when it is missing, truncated or
    holds arbitrary Python objects.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"Checkpoint {path} holds Python objects other than tensors, numbers and plain "
            f"containers, so it is not loaded (weights_only=True). If you trust the file, "
            f"re-save it with torch.save({{k: v}}) of plain values. Details: {exc}") from exc
    except (EOFError, RuntimeError, OSError) as exc:
        raise CheckpointError(f"Checkpoint {path} cannot be read (truncated or corrupt?): {exc}") from exc
    bad = non_finite_tensors(checkpoint)
    if bad:
        raise NonFiniteCheckpointError(
            f"Checkpoint {path} holds non-finite values (NaN/inf) in {format_keys(bad)}; it is not "
            "loaded (a run poisoned by a non-finite step?). Use an earlier snapshot.")
    return checkpoint


def warm_start_file(root_dir, required=True):
    """``RequiredFile`` of the ``--continue`` backbone warm start ``<root_dir>/tool/snapshot_0.pth.tar``."""
    return RequiredFile(str(Path(root_dir) / WARM_START_FILE),
                        'ResNet-50 backbone warm start of --continue (SimpleBaseline, converted)', WARM_START_SOURCE,
                        required=required, validate=read_network_state)


def read_network_state(path):
    """The ``network`` state dict of the checkpoint file ``path`` (``CheckpointError`` when unusable)."""
    return network_state_of(load_checkpoint_file(path), path)


def network_state_of(checkpoint, source):
    """The ``network`` entry of a loaded checkpoint dict, with a clear error if absent."""
    if not isinstance(checkpoint, dict) or 'network' not in checkpoint:
        keys = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise CheckpointError(f"Checkpoint {source} has no 'network' entry (found: {keys}).")
    return checkpoint['network']


# -------------------------------------------------------------- key helpers
def add_module_prefix(state_dict):
    """Keys as the released files write them: ``module.<name>``."""
    return {(k if k.startswith(MODULE_PREFIX) else MODULE_PREFIX + k): v for k, v in state_dict.items()}


def strip_module_prefix(state_dict):
    """Keys of the bare model: a leading ``module.`` removed where present."""
    return {(k[len(MODULE_PREFIX):] if k.startswith(MODULE_PREFIX) else k): v for k, v in state_dict.items()}


def is_smpl_buffer(key):
    """True for the neutral body-model buffers (``human_model_layer.th_*``), optional in files."""
    return bool(_SMPL_BUFFER_RE.search(key))


def compare_state(model, state_dict):
    """``(missing, unexpected, mismatched)`` of ``state_dict`` (prefix-free keys) against ``model``.

    SMPL buffers absent from the file do not count as missing.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict and not is_smpl_buffer(k)]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state_dict.items()
                  if k in own and torch.is_tensor(v) and tuple(v.shape) != tuple(own[k].shape)]
    return missing, unexpected, mismatched


def load_network_strict(model, network_state, source='checkpoint'):
    """Load a (``module.``-prefixed or bare) network state into ``model``, strictly.

    Returns the list of SMPL buffer keys the file did not hold (the local body model
    is kept for those).  Raises :class:`CheckpointMismatchError` naming every
    missing, unexpected or mis-shaped key.
    """
    state = strip_module_prefix(network_state)
    missing, unexpected, mismatched = compare_state(model, state)
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(source, missing, unexpected, mismatched)
    result = model.load_state_dict(state, strict=False)
    return list(result.missing_keys)


@dataclass
class PartialLoadReport:
    """What a partial (warm-start) load did; keys are prefix-free model names."""
    loaded: list = field(default_factory=list)
    skipped_unexpected: list = field(default_factory=list)
    skipped_shape: list = field(default_factory=list)
    not_in_file: list = field(default_factory=list)

    def summary(self, source):
        """Human-readable multi-line report for the log."""
        lines = [f"Partial load from {source}: {len(self.loaded)} model entries loaded "
                 f"({summarise_prefixes(self.loaded)})."]
        if self.skipped_unexpected:
            lines.append(f"  skipped, not in the model ({len(self.skipped_unexpected)}): "
                         f"{format_keys(self.skipped_unexpected, 12)}")
        if self.skipped_shape:
            lines.append(f"  skipped, shape differs ({len(self.skipped_shape)}): "
                         f"{format_keys(self.skipped_shape, 12)}")
        lines.append(f"  kept from initialisation ({len(self.not_in_file)}): "
                     f"{summarise_prefixes(self.not_in_file)}")
        return '\n'.join(lines)


def summarise_prefixes(keys, depth=1):
    """``'backbone: 318, pose2feat: 7'``: key counts per leading name component(s)."""
    counts = {}
    for key in keys:
        prefix = '.'.join(key.split('.')[:depth])
        counts[prefix] = counts.get(prefix, 0) + 1
    return ', '.join(f'{p}: {n}' for p, n in counts.items()) or 'none'


def load_network_partial(model, network_state):
    """Load the entries of ``network_state`` whose names and shapes match ``model``; skip the rest.

    This is the deliberate ``snapshot_0`` warm start (the pose-head keys of the
    SimpleBaseline file have no counterpart).  Returns a :class:`PartialLoadReport`.
    """
    state = strip_module_prefix(network_state)
    own = model.state_dict()
    report = PartialLoadReport()
    usable = {}
    for key, value in state.items():
        if key not in own:
            report.skipped_unexpected.append(key)
        elif tuple(value.shape) != tuple(own[key].shape):
            report.skipped_shape.append(f"{key}: file {tuple(value.shape)} vs model {tuple(own[key].shape)}")
        else:
            usable[key] = value
            report.loaded.append(key)
    report.not_in_file = [k for k in own if k not in usable]
    model.load_state_dict(usable, strict=False)
    return report


# ------------------------------------------------------------ resume / warm start
def link_or_copy(src, dst):
    """Put ``src`` at ``dst`` without writing to ``src``'s folder: a hard link where possible,
    else an atomic copy (a full disk or a kill never leaves a partial file under ``dst``'s
    name for a later resume to pick).  Stale temporary files of dead writers in ``dst``'s
    folder are removed first.  A failed copy raises :class:`CheckpointWriteError`."""
    remove_stale_temp_files(os.path.dirname(os.path.abspath(dst)))
    if os.path.exists(dst) and os.path.samefile(src, dst):
        return
    if os.path.exists(dst):
        os.remove(dst)
    try:
        os.link(src, dst)
    except OSError:
        try:
            atomic_copy(src, dst, kept_note=f'The source {src} is intact.')
        except FileWriteError as exc:
            raise CheckpointWriteError(str(exc)) from exc


def _local_copy_then_load(source, model_dir, is_main_process, map_location):
    """``(local_path, checkpoint)``: rank 0 links ``source`` into ``model_dir``; each rank
    reads the file itself (rank 0 its local copy, the others the source)."""
    local = os.path.join(str(model_dir), os.path.basename(source))
    if is_main_process:
        link_or_copy(source, local)
    checkpoint = load_checkpoint_file(local if is_main_process else source, map_location=map_location)
    return local, checkpoint


@dataclass
class ResumeResult:
    """What :func:`resume_training` loaded.

    ``next_epoch``: the epoch to train next; ``path``: the snapshot in the new run's folder;
    ``config``: the resumed run's stored options (or ``None``); ``missing_smpl``: body-model
    buffer keys the file lacked (the local ones are kept); ``had_optimizer``: whether Adam's
    state was restored.
    """
    next_epoch: int
    path: str
    config: object = None
    missing_smpl: list = field(default_factory=list)
    had_optimizer: bool = True


def resume_training(exp_dir, model_dir, model, optimizer, scaler, is_main_process=True, map_location='cpu'):
    """Continue the run in ``exp_dir`` from its latest snapshot.

    The snapshot is linked (or copied) into ``model_dir`` and loaded strictly into
    ``model``, with the optimizer state and, when ``scaler`` is enabled, the GradScaler
    state.  No state depends on the number of processes, so a run may resume with
    another one.  Temporary files of killed saves in both folders are removed.
    Returns a :class:`ResumeResult`.
    """
    source_dir = Path(exp_dir) / 'checkpoint'
    if is_main_process:
        # a save killed in the resumed run left its temporary file (up to a snapshot's size)
        remove_stale_temp_files(source_dir)
    latest = latest_snapshot(source_dir)
    if latest is None:
        raise FileNotFoundError(
            f"--continue --exp_dir {exp_dir}: no snapshot_<epoch>.pth.tar in {source_dir}.")
    local, checkpoint = _local_copy_then_load(latest[1], model_dir, is_main_process, map_location)
    missing_smpl = load_network_strict(model, network_state_of(checkpoint, local), source=local)
    had_optimizer = 'optimizer' in checkpoint
    if had_optimizer:
        try:
            optimizer.load_state_dict(stacked_optimizer_state(model, optimizer, checkpoint['optimizer']))
        except (ValueError, KeyError) as exc:
            raise CheckpointError(
                f"The optimizer state in {local} does not fit this model's Adam groups: {exc}") from exc
    scaler_state = checkpoint.get('scaler') or {}
    if scaler_state and scaler.is_enabled():
        scaler.load_state_dict(scaler_state)
    if not isinstance(checkpoint.get('epoch'), int):
        raise CheckpointError(f"Checkpoint {local} has no integer 'epoch' entry.")
    return ResumeResult(checkpoint['epoch'] + 1, local, checkpoint.get('config'), missing_smpl, had_optimizer)


def warm_start(source, model_dir, model, is_main_process=True, map_location='cpu'):
    """Load the backbone warm start ``source`` (the converted SimpleBaseline file) partially.

    The file is linked (or copied) into ``model_dir`` as ``snapshot_0.pth.tar``; entries
    matching the model's names and shapes are loaded.  Returns ``(next_epoch, report,
    local_path)`` with the :class:`PartialLoadReport`.
    """
    source = str(source)
    if not os.path.isfile(source):
        raise FileNotFoundError(
            f"--continue without --exp_dir needs the backbone warm start {source} "
            f"(tool/snapshot_0.pth.tar). Make it from the public SimpleBaseline checkpoint "
            f"pose_resnet_50_256x192.pth.tar with: python tool/convert_simple_to_i2l.py "
            f"--src pose_resnet_50_256x192.pth.tar (see the README).")
    local = snapshot_path(model_dir, 0)
    if is_main_process:
        link_or_copy(source, local)
    checkpoint = load_checkpoint_file(local if is_main_process else source, map_location=map_location)
    report = load_network_partial(model, network_state_of(checkpoint, local))
    if not report.loaded:
        raise CheckpointError(
            f"No entry of {source} matches the model's names and shapes: is it the converted "
            "pose_resnet_50 file (keys 'module.backbone.conv1.weight', ...)?")
    return int(checkpoint.get('epoch', 0)) + 1, report, local
