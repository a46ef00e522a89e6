"""The demo over many pictures: selected people of all frames through the network in batches,
then per picture the overlay, the 2D-pose picture, OBJ meshes and an SMPL summary.

:func:`iter_demo` takes ``(frame, detections, pose_origin)`` triples (``common.demo_inputs.Frame``
and ``common.demo.Detection`` lists; the pose source decides where they come from) and yields
one :class:`FrameResult` per frame, in order.  People of consecutive frames are gathered until
``batch_size`` people (or ``batch_size`` frames) are waiting, then run through the network in
chunks of ``batch_size``; each person's outputs equal those of a run on its picture alone
(eval mode: no layer mixes samples).  A frame's full-size picture is its decoded uint8 BGR
pixels (``Frame.img``), which the crops read directly; frames wait only as bounded-size uint8
RGB pictures, so memory stays bounded for long videos and very large images.

Pictures are drawn at most ``render_max_side`` pixels on their longer side: the meshes are
rasterised straight into the reduced picture through the correspondingly scaled camera
(``vis.resized_camera``), so they align exactly as at full size while the rasteriser's
buffers shrink with the picture.  Meshes, cameras and boxes in the JSON and OBJ files stay in
the original image's pixels.
"""
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from common.demo_defaults import DEFAULT_BATCH_SIZE, DEFAULT_RENDER_MAX_SIDE
from common.demo import (SCORE_THR, person_inputs, predict_in_batches, read_pose_file, select_people, to_smpl30,
                         warn_stderr)
from common.demo_inputs import Frame
from common.utils import vis
from common.utils.files import atomic_write_text
from common.utils.preprocessing import read_image
from common.utils.warp_source import release_canvas

SKIPPED_COLOR = (0.6, 0.6, 0.6)

SUMMARY_UNITS = ('smpl_pose: 24x3 axis-angle (radians), relative rotations; cam_trans: metres; the mesh is '
                 'SMPL_neutral(pose, shape) + cam_trans, seen through render_camera (pixels of the image)')


@dataclass(frozen=True)
class OutputOptions:
    """What is written per picture.

    render_max_side: longer side (pixels) of the drawn pictures, 0 for full size;
    write_obj / write_pose_image: the per-person OBJ files and the ``_2dpose.jpg`` picture;
    checkpoint_path: only recorded in the summaries.
    """
    render_max_side: int = DEFAULT_RENDER_MAX_SIDE
    write_obj: bool = True
    write_pose_image: bool = True
    checkpoint_path: str = None


@dataclass
class FrameResult:
    """Outputs of one picture: ``paths`` as :func:`run_demo` returns them, and ``rendered``,
    the overlay (H', W', 3) uint8 RGB at the bounded size."""
    name: str
    paths: dict
    rendered: np.ndarray


@dataclass
class _Pending:
    """A frame whose people are cropped and wait for the network."""
    frame: object
    detections: list
    pose_origin: str
    people: list
    skipped: list
    samples: list
    picture: np.ndarray                 # uint8 RGB at the bounded size
    scale: tuple                        # (sx, sy): bounded size / original size
    outputs: dict = field(default_factory=dict)


def run_demo(img_path, pose_path, out_dir, model, geometry, image_id=None, checkpoint_path=None, log=print,
             warn=warn_stderr, render_max_side=DEFAULT_RENDER_MAX_SIDE):
    """Meshes for every person of ``img_path`` from the poses in ``pose_path``; writes the outputs.

    model: the network in eval mode on its device (its parameters' device is used), or None
    when no person can be accepted (a ``ValueError`` is raised otherwise); geometry:
    ``GeometryOptions``; image_id: picks the image in a COCO-results file of many images;
    checkpoint_path: only recorded in the summary.  Writes into ``out_dir``:
    ``<stem>_render.jpg`` (all meshes over the image), ``<stem>_2dpose.jpg`` (input poses),
    ``<stem>_person<k>.obj`` (render-camera meshes, metres) and ``<stem>_smpl.json``.
    Returns ``{'render', 'pose_2d', 'json': path, 'obj': [paths], 'people': int,
    'skipped': [dict(index, reason)]}``.
    """
    frame = Frame(Path(img_path).stem, read_image(img_path), str(img_path))
    detections = read_pose_file(pose_path, img_path, image_id)
    options = OutputOptions(render_max_side=render_max_side, checkpoint_path=checkpoint_path)
    results = iter_demo([(frame, detections, str(pose_path))], out_dir, model, geometry, options, log=log,
                        warn=warn)
    return next(iter(results)).paths


def iter_demo(items, out_dir, model, geometry, options=OutputOptions(), batch_size=DEFAULT_BATCH_SIZE, log=print,
              warn=warn_stderr):
    """Yield a :class:`FrameResult` per ``(frame, detections, pose_origin)`` item, in order.

    Writes each frame's outputs into ``out_dir`` (see :func:`run_demo`; the summary adds
    ``frame`` for video frames and ``render_scale`` when the pictures are reduced).
    """
    out_dir = Path(vis.ensure_dir(out_dir))
    pending, waiting_people = [], 0
    for frame, detections, pose_origin in items:
        pending.append(_prepare(frame, detections, pose_origin, geometry, options.render_max_side, log, warn))
        waiting_people += len(pending[-1].people)
        if waiting_people >= batch_size or len(pending) >= batch_size:
            yield from _finish(pending, out_dir, model, options, batch_size, log)
            pending, waiting_people = [], 0
    yield from _finish(pending, out_dir, model, options, batch_size, log)


def _prepare(frame, detections, pose_origin, geometry, render_max_side, log, warn):
    """Select and crop a frame's people; keep only the bounded-size picture of the frame."""
    height, width = frame.img.shape[:2]
    people, skipped = select_people(detections, width, height, geometry)
    for entry in skipped:
        warn(f"{frame.name}: input person {entry['index']} skipped: {entry['reason']}")
    log(f'{frame.name}: {len(detections)} input poses, {len(people)} people kept, {len(skipped)} skipped.')
    samples = [person_inputs(frame.img, p, geometry) for p in people]
    size = vis.bounded_size(height, width, render_max_side)
    picture = bounded_picture(frame.img, size)
    frame.img = None                     # the full-size picture is no longer needed
    return _Pending(frame, detections, pose_origin, people, skipped, samples, picture,
                    (size[1] / width, size[0] / height))


def bounded_picture(image, size):
    """The picture to draw on: a ``BGRImage`` -> (H', W', 3) uint8 RGB of ``size`` (H', W').

    The uint8 BGR pixels are reduced first (``vis.resize_image``, area-averaged per channel, so
    the channel order does not matter) and only the reduced picture is turned into RGB.
    """
    return cv2.cvtColor(vis.resize_image(image.pixels, size), cv2.COLOR_BGR2RGB)


def _finish(pending, out_dir, model, options, batch_size, log):
    """Run the waiting people through the network, then write and yield each frame."""
    release_canvas()                     # the crops' full-size buffer is not needed while drawing
    samples = [s for p in pending for s in p.samples]
    out = None
    if samples:
        if model is None:
            raise ValueError("The demo needs a loaded model when a person is to be reconstructed.")
        out = predict_in_batches(model, samples, next(model.parameters()).device, batch_size)
    start = 0
    for item in pending:
        count = len(item.samples)
        if count:
            item.outputs = {key: value[start:start + count] for key, value in out.items()}
        start += count
        item.samples = None
        yield _write_frame(item, out_dir, getattr(model, 'mesh_face', None), options, log)


def _write_frame(item, out_dir, faces, options, log):
    """Write one frame's pictures, meshes and summary; returns its :class:`FrameResult`."""
    name, people, out = item.frame.name, item.people, item.outputs
    colors = vis.person_colors(len(people))
    records, objs, meshes = [], [], []
    for k, person in enumerate(people):
        mesh = out['mesh_cam_render'][k].astype(np.float64)
        focal, princpt = vis.render_camera(person.bbox)
        obj = vis.write_obj(out_dir / f'{name}_person{k}.obj', mesh, faces) if options.write_obj else None
        objs += [obj] if obj else []
        meshes.append((mesh, focal, princpt))
        records.append(_person_record(k, person, out, colors[k], focal, princpt, obj))

    reduced = item.scale != (1.0, 1.0)
    rendered = item.picture
    if meshes:
        cameras = [vis.resized_camera(f, c, item.scale) if reduced else (f, c) for _, f, c in meshes]
        rendered = vis.render_people(item.picture, [m for m, _, _ in meshes], faces, [f for f, _ in cameras],
                                     [c for _, c in cameras], colors=colors)
    paths = {'render': vis.save_image(out_dir / f'{name}_render.jpg', rendered), 'pose_2d': None}
    if options.write_pose_image:
        drawing = draw_input_poses(item.picture, item.detections, people, colors, item.scale if reduced else None)
        paths['pose_2d'] = vis.save_image(out_dir / f'{name}_2dpose.jpg', drawing)
    summary = {'image': item.frame.source, 'pose_file': item.pose_origin,
               'pose_layouts': sorted({d.layout for d in item.detections}),
               'checkpoint': str(options.checkpoint_path) if options.checkpoint_path else None,
               'units': SUMMARY_UNITS, 'people': records, 'skipped': item.skipped}
    if item.frame.index is not None:
        summary['frame'] = item.frame.index
    if reduced:
        summary['render_scale'] = [round(s, 6) for s in item.scale]
    paths['json'] = atomic_write_text(out_dir / f'{name}_smpl.json', json.dumps(summary, indent=1), durable=False)
    paths.update({'obj': objs, 'people': len(people), 'skipped': item.skipped})
    written = ', '.join(p for p in (paths['render'], paths['pose_2d'], paths['json']) if p)
    log(f'Wrote {written} and {len(objs)} OBJ files.')
    return FrameResult(name, paths, rendered)


def _person_record(k, person, out, color, focal, princpt, obj_path):
    """Person k's entry of the JSON summary (plain lists; bbox and colour rounded for reading)."""
    return {
        'person': k, 'input_index': person.index, 'color': color.round(4).tolist(),
        'bbox': np.asarray(person.bbox, np.float64).round(3).tolist(),
        'smpl_pose': out['smpl_pose'][k].tolist(), 'smpl_shape': out['smpl_shape'][k].tolist(),
        'cam_trans': out['cam_trans'][k].tolist(),
        'render_camera': {'focal': focal.tolist(), 'princpt': princpt.round(4).tolist()},
        'obj': os.path.basename(obj_path) if obj_path else None}


def draw_input_poses(image, detections, people, colors, scale=None):
    """The input poses on the image: accepted people in their colour with their box, the
    skipped ones in grey.  image (H', W', 3) uint8 RGB, reduced by ``scale`` (sx, sy) from
    the picture the poses refer to (None: the same picture); colors (len(people), 3) in [0, 1]."""
    def shown(joints):
        if scale is None:
            return joints
        joints = np.array(joints, np.float64)
        joints[:, :2] = vis.to_resized_pixels(joints[:, :2], scale)
        return joints

    accepted = {p.index for p in people}
    out = image
    for det in detections:
        if det.index not in accepted:
            out = vis.draw_input_pose(out, shown(to_smpl30(det)), SCORE_THR, color=SKIPPED_COLOR)
    for k, person in enumerate(people):
        out = vis.draw_input_pose(out, shown(person.joints_img), SCORE_THR, color=colors[k])
        bbox = person.bbox if scale is None else vis.resized_bbox(person.bbox, scale)
        out = vis.draw_bbox(out, bbox, color=colors[k])
    return out
