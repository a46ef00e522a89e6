"""The files a run reads, declared where they are read, and a cheap inspection of each.

A loader declares its files as ``RequiredFile`` records (the datasets' ``data_files``, the
body model's ``common.utils.smpl.body_model_files``, the warm start's
``common.utils.checkpoint.warm_start_file``) and opens exactly the paths it declared, so
``tool/check_setup.py`` inspects what a run will open, with the text saying where each file
comes from kept next to the path.

``inspect_file`` never loads a dataset: it checks that the path exists, runs the record's
``validate`` (e.g. parse a JSON file and check its top-level layout, read a regressor) and
decodes a few of the images an annotation file lists.
"""
import os.path as osp
import pickle
from typing import Callable, List, NamedTuple, Optional

from common.errors import UserError

# Exceptions a malformed file raises from a validator (anything else is a bug and propagates).
MALFORMED_ERRORS = (UserError, ValueError, TypeError, KeyError, OSError, EOFError, pickle.UnpicklingError)


class RequiredFile(NamedTuple):
    """One file or folder a run reads.

    path: where the run reads it (absolute or relative to the working folder).
    what: what it is, for a person ("3DPW test annotations (COCO-style JSON)").
    source: where it comes from and how to get it (a URL or the page hosting it).
    required: False for a file the run can do without (reported as a warning).
    is_dir: the path is a folder.
    validate: ``validate(path)`` raises on a malformed file and returns its parsed content
        (or None); None: existence is all that is checked.
    image_path: for an annotation file listing images, ``image_path(record)`` maps one record
        of the content's ``images`` list to the image's path (used to decode a sample).
    """
    path: str
    what: str
    source: str
    required: bool = True
    is_dir: bool = False
    validate: Optional[Callable] = None
    image_path: Optional[Callable] = None


class Finding(NamedTuple):
    """One problem of one ``RequiredFile``: ``problem`` is 'missing', 'malformed' or 'images'."""
    file: RequiredFile
    problem: str
    detail: str = ''

    @property
    def is_error(self):
        """True when the run cannot do without the file (a missing optional file only warns)."""
        return self.file.required


def first_line(error):
    """The first line of an exception's message (validators' messages can span lines)."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


class Requirements:
    """The files of a selection, each once, with the parts of the run that read it.

    ``files``: path -> ``RequiredFile`` (required when any reader needs it); ``readers``: path ->
    the readers' names in the order they were added.
    """

    def __init__(self):
        self.files = {}
        self.readers = {}

    def add(self, entry, reader):
        known = self.files.get(entry.path)
        if known is None or (entry.required and not known.required):
            self.files[entry.path] = entry
        self.readers.setdefault(entry.path, [])
        if reader not in self.readers[entry.path]:
            self.readers[entry.path].append(reader)

    def add_all(self, entries, reader):
        for entry in entries:
            self.add(entry, reader)


def inspect_file(entry, image_samples=3):
    """The findings of one ``RequiredFile`` (empty: present and well-formed).

    image_samples: how many of the images an annotation file lists are decoded (evenly
    spread over its ``images`` list; 0: none).
    """
    if entry.is_dir:
        return [] if osp.isdir(entry.path) else [Finding(entry, 'missing')]
    if not osp.isfile(entry.path):
        return [Finding(entry, 'missing')]
    if entry.validate is None:
        return []
    try:
        content = entry.validate(entry.path)
    except MALFORMED_ERRORS as err:
        return [Finding(entry, 'malformed', first_line(err))]
    if entry.image_path is None or image_samples <= 0:
        return []
    return inspect_images(entry, content, image_samples)


def spread(items, count):
    """Up to ``count`` items of ``items`` evenly spread from the first to the last, in order."""
    if len(items) <= count:
        return list(items)
    if count == 1:
        return [items[0]]
    step = (len(items) - 1) / (count - 1)
    return [items[round(k * step)] for k in range(count)]


def inspect_images(entry, content, count):
    """Decode ``count`` of the images an annotation file lists (those its loader reads, evenly
    spread); one finding for all failures.  A record ``image_path`` maps to None is not read."""
    from common.utils.preprocessing import read_image  # OpenCV only when images are checked
    records = content.get('images', []) if isinstance(content, dict) else []
    paths, bad_records = [], []
    for record in records:
        try:
            path = entry.image_path(record)
        except MALFORMED_ERRORS as err:
            bad_records.append(f"{record!r:.80} lacks {first_line(err)}")
            continue
        if path is not None:
            paths.append(path)
    sample = spread(paths, count)
    unreadable = []
    for path in sample:
        try:
            read_image(path)  # the decode is the check: the pixels are not used
        except MALFORMED_ERRORS as err:
            unreadable.append(first_line(err))
    findings = []
    if bad_records:
        findings.append(Finding(entry, 'malformed', f"{len(bad_records)} image records are incomplete, "
                                                    f"e.g. {bad_records[0]}"))
    if unreadable:
        findings.append(Finding(entry, 'images', f"{len(unreadable)} of {len(sample)} sampled images cannot be "
                                                 f"read, e.g. {unreadable[0]}"))
    return findings


def inspect_files(entries, image_samples=3):
    """``inspect_file`` of every entry, findings in the order of ``entries``."""
    findings: List[Finding] = []
    for entry in entries:
        findings.extend(inspect_file(entry, image_samples))
    return findings
