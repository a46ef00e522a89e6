"""Atomic writes, stale temporary files, disk-full and permission errors, finite snapshots.

Each test builds the failure (a dying writer, a full disk, a NaN tensor, a dead writer's
temporary file) and checks what is on disk afterwards, not only the message.
"""
import errno
import os
import subprocess
import sys

import pytest
import torch

from common.utils import checkpoint as ckpt_io
from common.utils import files


def dead_pid():
    """The id of a process that has exited (a child that ran ``true`` and was reaped)."""
    child = subprocess.Popen([sys.executable, '-c', 'pass'])
    child.wait()
    return child.pid


def good_state(epoch=1):
    return {'epoch': epoch, 'network': {'module.w': torch.arange(5.0)},
            'optimizer': {'state': {0: {'exp_avg': torch.ones(5), 'step': torch.tensor(3.0)}},
                          'param_groups': [{'lr': 1e-3, 'params': [0]}]}}


# ------------------------------------------------------------ atomic writes
def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / 'sub' / 'out.txt'
    assert files.atomic_write_text(path, 'first') == str(path)
    files.atomic_write(path, lambda f: f.write(b'second'))
    assert path.read_text() == 'second'
    assert os.listdir(path.parent) == ['out.txt']


def test_failing_writer_keeps_the_previous_file_and_names_the_path(tmp_path):
    path = tmp_path / 'eval.json'
    path.write_text('{"old": 1}')

    def full_disk(f):
        f.write(b'{"new": ')
        raise OSError(errno.ENOSPC, 'No space left on device')

    with pytest.raises(files.FileWriteError) as info:
        files.atomic_write(path, full_disk)
    assert str(path) in str(info.value) and 'disk is full' in str(info.value)
    assert 'previous eval.json is intact' in str(info.value) and info.value.errno == errno.ENOSPC
    assert path.read_text() == '{"old": 1}' and os.listdir(tmp_path) == ['eval.json']


def test_atomic_copy_of_a_full_disk_leaves_no_file_under_the_final_name(tmp_path, monkeypatch):
    src = tmp_path / 'src.bin'
    src.write_bytes(os.urandom(1000))
    dst_dir = tmp_path / 'dst'
    dst_dir.mkdir()
    files.atomic_copy(src, dst_dir / 'ok.bin')
    assert (dst_dir / 'ok.bin').read_bytes() == src.read_bytes()

    def half_copy(source, target, length=0):
        target.write(source.read(100))
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr('shutil.copyfileobj', half_copy)
    with pytest.raises(files.FileWriteError, match='disk is full'):
        files.atomic_copy(src, dst_dir / 'snapshot_3.pth.tar')
    assert sorted(os.listdir(dst_dir)) == ['ok.bin']


def test_stale_temporaries_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    dead = tmp_path / f'.snapshot_3.pth.tar.tmp-{dead_pid()}-0a1b2c3d'
    dead_old_style = tmp_path / f'.snapshot_2.pth.tar.tmp-{dead_pid()}'
    dead_with_ending = tmp_path / f'.clip.mp4.tmp-{dead_pid()}-0a1b2c3d.mp4'
    live = tmp_path / f'.snapshot_4.pth.tar.tmp-{os.getppid()}-00ff00ff'
    mine = tmp_path / f'.snapshot_5.pth.tar.tmp-{os.getpid()}-00000000'
    other = tmp_path / 'notes.tmp-1'
    not_ours = tmp_path / f'.notes.tmp-{dead_pid()}.txt'     # an ending only after the random part
    for p in (dead, dead_old_style, dead_with_ending, live, mine, other, not_ours):
        p.write_bytes(b'partial')
    removed = files.remove_stale_temp_files(tmp_path)
    assert sorted(removed) == sorted([str(dead), str(dead_old_style), str(dead_with_ending)])
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in (live, mine, other, not_ours))
    assert files.remove_stale_temp_files(tmp_path / 'absent') == []


def test_is_writable_dir(tmp_path, monkeypatch):
    assert files.is_writable_dir(tmp_path / 'new')
    (tmp_path / 'a_file').write_text('x')
    assert not files.is_writable_dir(tmp_path / 'a_file')
    monkeypatch.setattr(os, 'access', lambda path, mode: False)
    assert not files.is_writable_dir(tmp_path / 'new')


# --------------------------------------------------------------- snapshots
def test_save_removes_a_killed_saves_temporary(tmp_path):
    stale = tmp_path / f'.snapshot_3.pth.tar.tmp-{dead_pid()}-deadbeef'
    stale.write_bytes(b'PK\x03\x04 half of a killed save')
    ckpt_io.save_checkpoint(good_state(4), tmp_path / 'snapshot_4.pth.tar')
    assert os.listdir(tmp_path) == ['snapshot_4.pth.tar']


def test_full_disk_on_save_names_the_path_and_keeps_the_previous_snapshot(tmp_path, monkeypatch):
    path = tmp_path / 'snapshot_1.pth.tar'
    ckpt_io.save_checkpoint(good_state(1), path)
    before = path.read_bytes()

    def full_disk(obj, f, *args, **kwargs):
        f.write(b'PK\x03\x04 partial')
        raise OSError(errno.ENOSPC, 'No space left on device')

    monkeypatch.setattr(torch, 'save', full_disk)
    with pytest.raises(ckpt_io.CheckpointWriteError) as info:
        ckpt_io.save_checkpoint(good_state(1), path)
    assert isinstance(info.value, ckpt_io.CheckpointError)  # the CLI's one-line error type
    message = str(info.value)
    assert str(path) in message and 'disk is full' in message and 'intact' in message
    assert '\n' not in message
    assert path.read_bytes() == before and os.listdir(tmp_path) == ['snapshot_1.pth.tar']

    # a new epoch's snapshot that cannot be written names the last one that is intact
    with pytest.raises(ckpt_io.CheckpointWriteError, match=r'previous snapshot .*snapshot_1\.pth\.tar is intact'):
        ckpt_io.save_checkpoint(good_state(2), tmp_path / 'snapshot_2.pth.tar')
    assert os.listdir(tmp_path) == ['snapshot_1.pth.tar']


def test_permission_error_on_save_names_the_path(tmp_path, monkeypatch):
    path = tmp_path / 'snapshot_1.pth.tar'
    real_open = open

    def refusing_open(file, mode='r', *args, **kwargs):
        if 'w' in mode and '.tmp-' in str(file):
            raise PermissionError(errno.EACCES, 'Permission denied', str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr('builtins.open', refusing_open)
    with pytest.raises(ckpt_io.CheckpointWriteError, match=f'{path}: permission denied'):
        ckpt_io.save_checkpoint(good_state(1), path)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('where, name', [
    (('network', 'module.w'), 'network/module.w'),
    (('optimizer', 'state', 0, 'exp_avg'), 'optimizer/state/0/exp_avg'),
])
def test_non_finite_snapshot_is_refused_on_save(tmp_path, where, name):
    path = tmp_path / 'snapshot_1.pth.tar'
    ckpt_io.save_checkpoint(good_state(1), path)
    before = path.read_bytes()
    state = good_state(1)
    holder = state
    for key in where[:-1]:
        holder = holder[key]
    holder[where[-1]] = holder[where[-1]].clone()
    holder[where[-1]][2] = float('nan')
    with pytest.raises(ckpt_io.NonFiniteCheckpointError) as info:
        ckpt_io.save_checkpoint(state, path)
    assert name in str(info.value) and str(path) in str(info.value)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ['snapshot_1.pth.tar']


def test_non_finite_snapshot_is_refused_on_load(tmp_path):
    state = good_state(1)
    state['network']['module.bn.running_var'] = torch.tensor([1.0, float('inf')])
    path = tmp_path / 'snapshot_1.pth.tar'
    torch.save(state, path)  # written by another tool, bypassing the check on save
    with pytest.raises(ckpt_io.NonFiniteCheckpointError) as info:
        ckpt_io.load_checkpoint_file(path)
    assert 'network/module.bn.running_var' in str(info.value) and str(path) in str(info.value)
    assert 'module.w' not in str(info.value)


def test_resume_copy_is_atomic_and_cleans_stale_temporaries(tmp_path, monkeypatch):
    src_dir = tmp_path / 'old' / 'checkpoint'
    ckpt_io.save_checkpoint(good_state(1), src_dir / 'snapshot_1.pth.tar')
    new_dir = tmp_path / 'new' / 'checkpoint'
    new_dir.mkdir(parents=True)
    stale = new_dir / f'.snapshot_1.pth.tar.tmp-{dead_pid()}-12345678'
    stale.write_bytes(b'partial')

    def no_links(src, dst):
        raise OSError(errno.EXDEV, 'Invalid cross-device link')

    monkeypatch.setattr(os, 'link', no_links)

    def full_disk(source, target, length=0):
        target.write(source.read(10))
        raise OSError(errno.ENOSPC, 'No space left on device')

    with monkeypatch.context() as patch:
        patch.setattr('shutil.copyfileobj', full_disk)
        with pytest.raises(ckpt_io.CheckpointWriteError, match='snapshot_1.pth.tar: the disk is full'):
            ckpt_io.link_or_copy(str(src_dir / 'snapshot_1.pth.tar'), str(new_dir / 'snapshot_1.pth.tar'))
    # no truncated file under a valid snapshot name for the next resume to pick; stale temp gone
    assert os.listdir(new_dir) == [] and ckpt_io.latest_snapshot(new_dir) is None

    ckpt_io.link_or_copy(str(src_dir / 'snapshot_1.pth.tar'), str(new_dir / 'snapshot_1.pth.tar'))
    assert (new_dir / 'snapshot_1.pth.tar').read_bytes() == (src_dir / 'snapshot_1.pth.tar').read_bytes()


def test_resume_removes_the_killed_saves_temporary_of_the_resumed_run(tmp_path):
    from torch import nn
    model = nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters())
    old = tmp_path / 'old'
    state = {'epoch': 3, 'network': {'module.' + k: v for k, v in model.state_dict().items()}}
    ckpt_io.save_checkpoint(state, old / 'checkpoint' / 'snapshot_3.pth.tar')
    stale = old / 'checkpoint' / f'.snapshot_4.pth.tar.tmp-{dead_pid()}-0badf00d'
    stale.write_bytes(b'PK\x03\x04 a killed save of epoch 4')
    new_dir = tmp_path / 'new' / 'checkpoint'
    new_dir.mkdir(parents=True)
    scaler = torch.amp.GradScaler('cpu', enabled=False)
    result = ckpt_io.resume_training(old, new_dir, model, optimizer, scaler)
    assert result.next_epoch == 4 and not stale.exists()
    assert os.listdir(old / 'checkpoint') == ['snapshot_3.pth.tar']
    assert os.listdir(new_dir) == ['snapshot_3.pth.tar']
