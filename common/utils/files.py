"""Atomic file writing and clean-up of the temporary files of writers that died.

Every file the project writes goes through :func:`atomic_write`: the content is written
to ``.<name>.tmp-<pid>-<random>`` in the destination's folder, flushed and fsynced, then
renamed over the destination (``os.replace``), so a reader sees either the previous file
or the complete new one, never a truncated file under the final name.  A writer that is
killed leaves only its temporary file; :func:`remove_stale_temp_files` deletes those
whose process no longer exists.

    atomic_write('out/eval.json', lambda f: f.write(b'{}'))
    atomic_write_text('out/config.yaml', yaml.safe_dump(options))
"""
import json
import errno
import os
import re
import secrets
from pathlib import Path

from common.errors import UserError

TEMP_MARK = '.tmp-'
# ``.<name>.tmp-<pid>`` (older writers), ``.<name>.tmp-<pid>-<hex>`` or ``.<name>.tmp-<pid>-<hex>.<ext>``
_TEMP_RE = re.compile(r'^\..+\.tmp-(\d+)(?:-[0-9a-f]+(?:\.[A-Za-z0-9]+)?)?$')


class FileWriteError(UserError, RuntimeError):
    """A file could not be written (disk full, no permission, ...); the message names the
    path and says that any previous file under that name is unchanged.  ``errno`` is the
    operating-system error number (or ``None``)."""

    def __init__(self, message, errno_value=None):
        super().__init__(message)
        self.errno = errno_value


def temp_path_for(path, keep_suffix=False):
    """``<folder>/.<name>.tmp-<pid>-<random hex>``: unique per writer and call.

    ``keep_suffix``: end it with ``path``'s extension as well (``.clip.mp4.tmp-<pid>-<hex>.mp4``),
    for writers that pick the file format from the name (OpenCV's ``VideoWriter``).
    """
    path = Path(path)
    ending = path.suffix if keep_suffix else ''
    return path.with_name(f'.{path.name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}{ending}')


def temp_owner_pid(name):
    """The writer's process id encoded in a temporary file name, or ``None`` if ``name``
    is not one of ours."""
    match = _TEMP_RE.match(name)
    return int(match.group(1)) if match else None


def process_exists(pid):
    """True when a process with id ``pid`` exists on this machine (signal 0 probe)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def remove_stale_temp_files(folder):
    """Delete the temporary files in ``folder`` whose writer process no longer exists.

    Files of live writers (another run saving into a shared folder, this process) are
    kept.  Returns the removed paths (strings); a missing folder gives ``[]``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in folder.iterdir():
        pid = temp_owner_pid(entry.name)
        if pid is None or pid == os.getpid() or process_exists(pid):
            continue
        try:
            entry.unlink()
        except FileNotFoundError:  # another cleaner was faster
            continue
        except OSError:
            continue  # e.g. a read-only folder: nothing we can do, and nothing breaks
        removed.append(str(entry))
    return removed


def describe_os_error(exc, path, kept_note=None):
    """One line for an :class:`OSError` while writing ``path``: the reason in words, the
    path, and ``kept_note`` (what is still intact) when given."""
    reasons = {errno.ENOSPC: 'the disk is full', errno.EDQUOT: 'the disk quota is exceeded',
               errno.EACCES: 'permission denied', errno.EPERM: 'operation not permitted',
               errno.EROFS: 'the file system is read-only'}
    reason = reasons.get(getattr(exc, 'errno', None), exc.strerror or str(exc))
    text = f"Cannot write {path}: {reason} ({exc.__class__.__name__}: {exc})."
    if kept_note:
        text += f' {kept_note}'
    return text


def fsync_dir(folder):
    """Make a rename in ``folder`` durable where the OS allows it (best effort)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, write_fn, binary=True, kept_note=None, durable=True):
    """Write ``path`` atomically: ``write_fn(file)`` fills a temporary file in the same
    folder, which is flushed, fsynced and renamed over ``path``.

    ``binary``: open the temporary file in ``'wb'`` (default) or ``'w'`` (UTF-8) mode.
    On any failure the temporary file is removed and a previous ``path`` is unchanged;
    an :class:`OSError` (full disk, no permission) becomes :class:`FileWriteError`
    naming ``path`` (plus ``kept_note``, default: the previous file is unchanged).
    Stale temporary files of dead writers in the folder are removed first.
    ``durable=False`` (pictures and meshes written by the thousand into one folder) skips the
    fsyncs and that sweep: a kill still never leaves a half-written file under ``path``, but a
    power loss may lose the last files.  Returns ``path`` as a string.
    """
    path = Path(path)
    if kept_note is None:
        kept_note = (f'The previous {path.name} is intact.' if path.exists()
                     else f'No {path.name} was written.')
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if durable:
            remove_stale_temp_files(path.parent)
        tmp = temp_path_for(path)
        with open(tmp, 'wb' if binary else 'w', **({} if binary else {'encoding': 'utf-8'})) as f:
            write_fn(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            try:
                tmp.unlink()
            except OSError:
                pass
        if isinstance(exc, OSError):
            raise FileWriteError(describe_os_error(exc, path, kept_note), exc.errno) from exc
        raise
    if durable:
        fsync_dir(path.parent)
    return str(path)


def atomic_write_text(path, text, kept_note=None, durable=True):
    """:func:`atomic_write` of the string ``text`` (UTF-8); returns ``path`` as a string."""
    return atomic_write(path, lambda f: f.write(text), binary=False, kept_note=kept_note, durable=durable)


def atomic_copy(src, dst, kept_note=None):
    """Copy the file ``src`` to ``dst`` atomically (content and modification time);
    a full disk or a kill never leaves a partial ``dst``.  Returns ``dst`` as a string."""
    import shutil

    def copy(f):
        with open(src, 'rb') as source:
            shutil.copyfileobj(source, f, 16 * 1024 * 1024)

    result = atomic_write(dst, copy, kept_note=kept_note)
    shutil.copystat(src, dst)
    return result


def is_writable_dir(folder):
    """True when ``folder`` exists (or can be created) as a folder this process may write into."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # read-only parent, or a file of that name
        return False
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


def read_json_file(path, what, error_type, hint=''):
    """The parsed content of the JSON file ``path``.

    A missing file raises ``FileNotFoundError`` ("<what> not found: <path>", then ``hint`` on
    its own line when given); a file that is not valid UTF-8 JSON raises ``error_type`` naming
    ``what`` and the path.
    """
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}" + (f"\n{hint}" if hint else ''))
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise error_type(f"{what} {path} is not valid JSON ({err}).") from err
