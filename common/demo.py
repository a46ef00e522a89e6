"""Demo library: 2D pose files -> selected people -> network inputs -> network outputs.

The steps for one picture (see docs/METHOD.md, "Demo"; ``common/demo_run.py`` strings them
together over many pictures and writes the outputs):

1. :func:`read_pose_file` parses an OpenPose JSON file (BODY_25, COCO-18 or COCO-17 layout,
   told apart by length) or a COCO keypoint-results file into :class:`Detection` records.
2. :func:`select_people` applies 3DCrowdNet's demo rules in file order: every pose is moved
   into SMPL-30 order (pelvis, and the neck where the layout has none, as midpoints);
   a person needs a score sum of at least ``MIN_SCORE_SUM``; a pose whose confident joints
   lie on average within ``DUPLICATE_PX`` of an earlier one's (or that shares no confident
   joint with it) is a duplicate; the box is the processed box around the confident joints.
3. :func:`person_inputs` crops each person without augmentation and expresses its joints in
   heatmap units; :func:`predict` runs the network in render mode (camera depth scaled to
   the box, so that the mesh seen through focal 5000 px with principal point at the box
   centre overlays the original image).

Nothing here reads the global configuration: geometry, model and device come in as arguments.
"""
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.errors import DataError
from common.utils import checkpoint as ckpt_io
from common.utils import vis
from common.utils.files import atomic_write_text, read_json_file
from common.utils.joints import BODY25, COCO17, OPENPOSE18, SMPL30, append_midpoint, transfer_joints
from common.utils.preprocessing import (crop_for_test, get_bbox, in_bounds_mask, input_aspect_ratio, load_img,
                                        process_bbox)

SCORE_THR = 0.1          # a joint is confident above this score
MIN_SCORE_SUM = 1.0      # a person needs at least this sum of joint scores
DUPLICATE_PX = 20.0      # mean |dx|,|dy| below this against an accepted person: a duplicate

POSE_LAYOUTS = {75: ('openpose-body25', BODY25.names), 54: ('openpose-coco18', OPENPOSE18.names),
                51: ('coco17', COCO17.names)}
"""Number of values of one OpenPose person -> (layout name, joint names)."""

NETWORK_INPUT_KEYS = ('img', 'joints', 'joints_mask')


class PoseFileError(DataError):
    """The pose file is missing pieces, holds non-numbers, or is in no supported format."""


def warn_stderr(message):
    """Default warning sink of the demo: one ``WARNING:`` line on stderr."""
    print(f'WARNING: {message}', file=sys.stderr)


def pick_device(gpu_ids):
    """The demo's ``torch.device`` from ``--gpu`` ids (None: the first CUDA device, else the
    CPU, said once on stderr; an id without CUDA: the CPU, with one warning)."""
    from common.utils.device import select_device
    setup = select_device(gpu_ids)
    for message in setup.warnings:
        warn_stderr(message)
    for message in setup.notes:
        print(message, file=sys.stderr)
    return setup.device


# ----------------------------------------------------------------------------- pose files
@dataclass
class Detection:
    """One person of the pose file.

    index: position in the file; joints (J, 3) ``[x, y, score]`` image pixels (float64),
    rows named by ``names``; layout: 'openpose-body25', 'openpose-coco18', 'coco17' or
    'coco-results'.
    """
    index: int
    joints: np.ndarray
    names: tuple
    layout: str


def read_pose_file(path, img_path=None, image_id=None):
    """Parse an OpenPose or COCO keypoint-results JSON file into a list of :class:`Detection`.

    For a COCO-results file holding several images, ``image_id`` picks one; without it the
    image is matched by its file stem (``000000000785.jpg`` -> id 785; ids compare by
    :func:`image_id_key`, as for many pictures in ``common.demo_poses.CocoResults``).  Raises
    ``FileNotFoundError`` for a missing file and :class:`PoseFileError` (naming the file and
    the offending entry) for anything malformed.
    """
    return parse_pose_data(load_pose_json(path), path, img_path, image_id)


def parse_pose_data(data, path, img_path=None, image_id=None):
    """:func:`read_pose_file` of already parsed JSON ``data`` (``path`` names the file in errors)."""
    path = Path(path)
    if isinstance(data, dict) and 'people' in data:
        return _read_openpose(data['people'], path)
    if is_coco_results(data):
        return _read_coco_results(data, path, img_path, image_id)
    raise PoseFileError(
        f"Pose file {path} is in no supported format: expected the OpenPose format "
        "{\"people\": [{\"pose_keypoints_2d\": [x, y, c, ...]}, ...]} or the COCO keypoint-results format "
        "[{\"image_id\": ..., \"keypoints\": [x, y, s] * 17, \"score\": ...}, ...].")


def load_pose_json(path):
    """The parsed JSON of a pose file; ``FileNotFoundError`` / :class:`PoseFileError` naming it."""
    return read_json_file(path, 'Pose file', PoseFileError)


def is_coco_results(data):
    """Whether parsed JSON is a COCO keypoint-results list (entries with ``keypoints``)."""
    return isinstance(data, list) and all(isinstance(e, dict) and 'keypoints' in e for e in data)


def _keypoints(values, what, path):
    """A flat float64 array of finite numbers, or a :class:`PoseFileError` naming ``what``."""
    try:
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise PoseFileError(f"Pose file {path}: {what} must be a flat list of numbers ({exc}).") from exc
    if not np.isfinite(arr).all():
        raise PoseFileError(f"Pose file {path}: {what} holds non-finite values.")
    return arr


def _read_openpose(people, path):
    if not isinstance(people, list):
        raise PoseFileError(f"Pose file {path}: 'people' must be a list.")
    detections = []
    for i, person in enumerate(people):
        # 'pose_keypoints' is the name OpenPose used before version 1.2.
        key = next((k for k in ('pose_keypoints_2d', 'pose_keypoints') if isinstance(person, dict) and k in person),
                   None)
        if key is None:
            raise PoseFileError(f"Pose file {path}: people[{i}] has no 'pose_keypoints_2d'.")
        values = _keypoints(person[key], f'people[{i}].{key}', path)
        if len(values) not in POSE_LAYOUTS:
            raise PoseFileError(
                f"Pose file {path}: people[{i}].{key} has {len(values)} numbers; expected 75 "
                "(OpenPose BODY_25), 54 (OpenPose COCO-18) or 51 (COCO-17), as x, y, confidence triples.")
        layout, names = POSE_LAYOUTS[len(values)]
        detections.append(Detection(i, values.reshape(-1, 3), names, layout))
    return detections


def _read_coco_results(entries, path, img_path, image_id):
    by_id = coco_results_by_image(entries, path)
    return by_id.get(_wanted_image_id(by_id, path, img_path, image_id), [])


def coco_entry_detection(entry, index, path):
    """Entry ``index`` of a COCO-results file as a 'coco-results' :class:`Detection`."""
    values = _keypoints(entry['keypoints'], f'entry {index} keypoints', path)
    if len(values) != 3 * len(COCO17):
        raise PoseFileError(f"Pose file {path}: entry {index} keypoints has {len(values)} numbers; the COCO "
                            "results format has 17 x, y, score triples (51).")
    return Detection(index, values.reshape(len(COCO17), 3), COCO17.names, 'coco-results')


def image_id_key(value):
    """A COCO ``image_id`` (or a file stem, frame number, ``--image_id``) as the key that
    matches a picture to its entries: digit strings and integers by value (``'000785'``,
    ``'785'`` and ``785`` are one image), anything else as its text."""
    text = str(value)
    return int(text) if text.isascii() and text.isdigit() else text


def coco_results_by_image(entries, path):
    """{:func:`image_id_key`: [:class:`Detection`] in file order} of COCO-results ``entries``."""
    by_id = {}
    for i, entry in enumerate(entries):
        by_id.setdefault(image_id_key(entry.get('image_id')), []).append(coco_entry_detection(entry, i, path))
    return by_id


def _wanted_image_id(by_id, path, img_path, image_id):
    """The key of the image a one-image COCO-results run takes: ``image_id``'s, else the only
    one, else the one of the image's file stem."""
    ids = list(by_id)
    if image_id is not None:
        if image_id_key(image_id) not in by_id:
            raise PoseFileError(f"Pose file {path} has no entry with image_id {image_id} "
                                f"(ids there: {', '.join(map(str, ids[:10]))}{' ...' if len(ids) > 10 else ''}).")
        return image_id_key(image_id)
    if len(ids) <= 1:
        return ids[0] if ids else None
    stem = image_id_key(Path(img_path).stem) if img_path else None
    if stem not in by_id:
        raise PoseFileError(
            f"Pose file {path} holds poses of {len(ids)} images and none has an image_id matching "
            f"the image name {Path(img_path).name if img_path else '?'}; pass --image_id.")
    return stem


# ----------------------------------------------------------------------------- selection
def to_smpl30(detection):
    """(30, 3) float32 image-space ``[x, y, score]`` of a detection in SMPL-30 order.

    The pelvis is appended as the hips' midpoint and, where the layout has no detected neck
    (COCO), the neck as the shoulders' midpoint (scores multiply); rows then move by name
    (joints without an SMPL-30 counterpart, e.g. BODY_25's feet, are dropped; SMPL-30
    joints the layout lacks stay zero).
    """
    joints, names = append_midpoint(detection.joints, detection.names, 'L_Hip', 'R_Hip', 'Pelvis')
    if 'Neck' not in names:
        joints, names = append_midpoint(joints, names, 'L_Shoulder', 'R_Shoulder', 'Neck')
    return transfer_joints(joints, names, SMPL30.names)


def duplicate_of(joints, accepted_joints):
    """Whom ``joints`` duplicates: ``(index into accepted_joints, mean distance px or None)`` or None.

    joints (30, 3) and each of ``accepted_joints`` (30, 3) ``[x, y, score]``.  A duplicate has a
    mean |dx|, |dy| below ``DUPLICATE_PX`` over the joints confident in both, or no joint
    confident in both (distance None).  The first such accepted person is returned.
    """
    for k, other in enumerate(accepted_joints):
        both = (joints[:, 2] > SCORE_THR) & (other[:, 2] > SCORE_THR)
        if not both.any():
            return k, None
        distance = float(np.abs(joints[both, :2] - other[both, :2]).mean())
        if distance < DUPLICATE_PX:
            return k, distance
    return None


@dataclass
class Person:
    """An accepted person: input index, SMPL-30 image joints (30, 3) float32 and processed bbox (4,)."""
    index: int
    joints_img: np.ndarray
    bbox: np.ndarray


def select_people(detections, img_width, img_height, geometry):
    """Apply the demo's selection rules in file order.

    detections: :func:`read_pose_file`'s list; geometry: ``GeometryOptions`` (its input
    aspect ratio shapes the boxes).  Returns ``(accepted [Person], skipped [dict(index, reason)])``.
    """
    aspect_ratio = input_aspect_ratio(geometry)
    accepted, skipped, reference = [], [], []
    for det in detections:
        joints = to_smpl30(det)
        score_sum = float(joints[:, 2].sum())
        if score_sum < MIN_SCORE_SUM or not (joints[:, 2] != 0).any():
            skipped.append({'index': det.index, 'reason': f'too few confident joints (score sum {score_sum:.2f} '
                                                          f'< {MIN_SCORE_SUM})'})
            continue
        dup = duplicate_of(joints, [r[1] for r in reference])
        if dup is not None:
            skipped.append({'index': det.index, 'reason': _duplicate_reason(reference[dup[0]][0], dup[1])})
            continue
        # A person accepted here is a duplicate reference even if its box fails below.
        reference.append((det.index, joints))
        valid = (joints[:, 2] > SCORE_THR).astype(np.float32)
        if not valid.any():
            skipped.append({'index': det.index, 'reason': f'too few confident joints (none above {SCORE_THR})'})
            continue
        bbox = process_bbox(get_bbox(joints, valid), img_width, img_height, aspect_ratio=aspect_ratio)
        if bbox is None:
            skipped.append({'index': det.index, 'reason': 'no usable box around its confident joints'})
            continue
        accepted.append(Person(det.index, joints, bbox))
    return accepted, skipped


def _duplicate_reason(other_index, distance):
    how = (f'mean joint difference {distance:.1f} px < {DUPLICATE_PX:.0f} px' if distance is not None
           else 'no confident joint in common')
    return f'duplicate of input person {other_index} ({how})'


# ----------------------------------------------------------------------------- network
def person_inputs(img, person, geometry):
    """Network inputs of one person: crop, heatmap-space joints, mask, transforms.

    img: a ``BGRImage`` (``read_image``; only the pixels the crop reads are converted) or an
    (H, W, 3) float32 RGB 0..255 array; person: a :class:`Person`; geometry: ``GeometryOptions``.
    Returns a dict of ``img`` (3, H_in, W_in) float32 in [0, 1], ``joints`` (30, 3)
    ``[x_hm, y_hm, score]``, ``joints_mask`` (30, 1) (confident and inside the heatmap),
    ``bbox`` (4,), ``img2bb_trans`` / ``bb2img_trans`` (2, 3), all float32 NumPy.
    """
    crop = crop_for_test(img, person.bbox, person.joints_img.astype(np.float32), geometry)
    joints = crop.joints_hm.astype(np.float32)
    valid = (joints[:, 2:] > SCORE_THR).astype(np.float32)
    return {'img': np.ascontiguousarray(crop.patch.transpose(2, 0, 1) / 255.0, dtype=np.float32),
            'joints': joints, 'joints_mask': valid * in_bounds_mask(joints, geometry.output_hm_shape),
            'bbox': np.asarray(person.bbox, np.float32), 'img2bb_trans': crop.img2bb.astype(np.float32),
            'bb2img_trans': crop.bb2img.astype(np.float32)}


def restore_network(model, checkpoint, device, source='checkpoint'):
    """Load a checkpoint dict's network into ``model`` strictly; returns it on ``device`` in eval mode."""
    ckpt_io.load_network_strict(model, ckpt_io.network_state_of(checkpoint, source), source=source)
    return model.to(device).eval()


def predict(model, samples, device):
    """Run the network in render mode on a list of :func:`person_inputs`-like dicts.

    Each sample needs ``img``, ``joints``, ``joints_mask`` and ``bbox`` (NumPy).  Returns
    NumPy arrays: the model's test outputs plus ``cam_trans`` (N, 3), the render-mode camera
    translation in metres.
    """
    def stack(key):
        return torch.from_numpy(np.stack([s[key] for s in samples])).to(device)
    inputs = {key: stack(key) for key in NETWORK_INPUT_KEYS}
    meta_info = {'bbox': stack('bbox')}
    with torch.no_grad():
        out = model(inputs, {}, meta_info, 'test', render=True)
        out['cam_trans'] = model.camera_translation(out['cam_param'], meta_info, render=True)
    return {k: v.detach().float().cpu().numpy() if torch.is_tensor(v) else np.asarray(v) for k, v in out.items()}


def predict_in_batches(model, samples, device, batch_size):
    """:func:`predict` over ``samples`` in chunks of at most ``batch_size``, outputs concatenated
    along the first axis (per-sample outputs do not depend on the chunking: the network runs in
    eval mode, where no layer mixes samples)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    chunks = [predict(model, samples[start:start + batch_size], device)
              for start in range(0, len(samples), batch_size)]
    return {key: np.concatenate([chunk[key] for chunk in chunks]) for key in chunks[0]}


# ----------------------------------------------------------------------------- test images
def openpose_json_from_annotations(annotations, path):
    """Write an OpenPose (COCO-18 layout) file from 3DPW annotations' ``openpose_result``.

    annotations: 3DPW annotation dicts, each with ``openpose_result`` (18, 3); returns ``path`` as str.
    """
    people = [{'person_id': [-1],
               'pose_keypoints_2d': np.asarray(a['openpose_result'], np.float64).reshape(-1).tolist()}
              for a in annotations]
    return atomic_write_text(path, json.dumps({'version': 1.3, 'people': people}))


def render_test_image(model, dataset, img_path, out_path, device):
    """Render every annotated person of one test image through the dataset's own test pipeline.

    dataset: a test dataset whose ``datalist`` entries carry ``img_path`` and whose samples
    give ``inputs`` (img, joints, joints_mask) and ``meta_info['bbox']``; the network runs in
    render mode on ``device``.  Writes the overlay to ``out_path`` and returns that path.
    """
    indices = [i for i, d in enumerate(dataset.datalist) if d['img_path'] == img_path]
    samples = []
    for i in indices:
        inputs, _, meta_info = dataset[i]
        samples.append({'img': inputs['img'].numpy() if torch.is_tensor(inputs['img']) else inputs['img'],
                        'joints': inputs['joints'], 'joints_mask': inputs['joints_mask'],
                        'bbox': meta_info['bbox']})
    out = predict(model, samples, device)
    cams = [vis.render_camera(s['bbox']) for s in samples]
    image = vis.as_uint8_image(load_img(img_path))
    rendered = vis.render_people(image, list(out['mesh_cam_render'].astype(np.float64)), model.mesh_face,
                                 [c[0] for c in cams], [c[1] for c in cams])
    return vis.save_image(out_path, rendered)
