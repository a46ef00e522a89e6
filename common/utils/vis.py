"""Visual outputs: 2D pose drawing, OBJ files, image writing and multi-person mesh overlays.

Images are RGB ``uint8`` arrays ``(H, W, 3)`` throughout; :func:`save_image` converts to
OpenCV's BGR only when writing.  Nothing here opens a window.

Joints are drawn in the SMPL-30 joint set (``common.utils.joints.SMPL30``): network outputs
use its skeleton; input 2D poses, which fill only 19 of its rows (OpenPose / COCO plus the
pelvis and neck midpoints), use ``INPUT_SKELETON`` over those 19 joints.

Meshes of several people, each seen through its own pinhole camera (the render camera has
its principal point at each person's bbox centre, see :func:`render_camera`), are drawn into
one z-buffer by :func:`render_people`: each mesh is first mapped, exactly as far as its image
is concerned, into a camera shared by all (:func:`to_shared_camera`), so depth ordering
across people is per pixel.
"""
import colorsys
import os
from pathlib import Path

import cv2
import numpy as np

from common.utils.joints import SMPL30
from common.utils.files import atomic_write, atomic_write_text
from common.utils.render import NEAR_PLANE, render_meshes


def _smpl30_edges(name_pairs):
    """Index pairs into SMPL-30 of the named joint pairs (keeps their order: later limbs draw on top)."""
    return tuple((SMPL30.index(a), SMPL30.index(b)) for a, b in name_pairs)


INPUT_SKELETON = _smpl30_edges((
    ('Nose', 'L_Eye'), ('Nose', 'R_Eye'), ('L_Eye', 'L_Ear'), ('R_Eye', 'R_Ear'), ('Nose', 'Neck'),
    ('Neck', 'L_Shoulder'), ('L_Shoulder', 'L_Elbow'), ('L_Elbow', 'L_Wrist'),
    ('Neck', 'R_Shoulder'), ('R_Shoulder', 'R_Elbow'), ('R_Elbow', 'R_Wrist'),
    ('Neck', 'Pelvis'), ('Pelvis', 'L_Hip'), ('L_Hip', 'L_Knee'), ('L_Knee', 'L_Ankle'),
    ('Pelvis', 'R_Hip'), ('R_Hip', 'R_Knee'), ('R_Knee', 'R_Ankle')))
"""19-joint skeleton of the input 2D poses (OpenPose / COCO with pelvis and neck, in SMPL-30 rows)."""

LEFT_JOINTS = frozenset(i for i, joint_name in enumerate(SMPL30.names) if joint_name.startswith('L_'))
"""SMPL-30 joints on the body's left side (drawn in a lighter tone)."""

RENDER_FOCAL = (5000.0, 5000.0)
"""Focal length (pixels) of the render camera: the model's render mode scales the camera depth
to the person's box so that this focal length overlays the mesh on the original image."""


# ----------------------------------------------------------------------------- colours
def person_colors(count, saturation=0.45, value=0.95):
    """(count, 3) float64 RGB in [0, 1]: distinct pastel colours, one per person.

    Hues step by the golden ratio from orange-ish, so neighbouring indices differ strongly;
    deterministic (person k always gets the same colour).
    """
    hues = (0.08 + 0.618033988749895 * np.arange(count)) % 1.0
    return np.array([colorsys.hsv_to_rgb(h, saturation, value) for h in hues], dtype=np.float64).reshape(-1, 3)


def _rgb255(color):
    """A colour in [0, 1] (or 0..255) as a tuple of three ints 0..255 for OpenCV drawing."""
    color = np.asarray(color, dtype=np.float64).reshape(3)
    if color.max() <= 1.0:
        color = color * 255.0
    return tuple(int(round(c)) for c in np.clip(color, 0, 255))


def _line_width(img):
    return max(1, int(round(min(img.shape[:2]) / 150)))


# ----------------------------------------------------------------------------- drawing
def as_uint8_image(img):
    """(H, W, 3) array 0..255 (any dtype; others rounded and clipped) -> contiguous uint8 copy."""
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {img.shape}")
    if img.dtype == np.uint8:
        return np.array(img, order='C', copy=True)       # already exact: no float round trip
    return np.ascontiguousarray(np.clip(np.rint(img), 0, 255).astype(np.uint8))


def draw_skeleton(img, joints, skeleton, scores=None, score_thr=None, color=(255, 128, 0),
                  show_scores=False, radius=None, thickness=None):
    """Draw 2D joints and limbs onto a copy of ``img``; returns the new uint8 RGB image.

    joints (J, >=2) pixel coordinates; skeleton: pairs of joint indices; scores (J,) or None.
    With ``score_thr`` a joint counts only when its score is above it: limbs need both ends
    counted, joints below it are drawn as hollow circles (scores then stay visible).
    ``show_scores`` writes each joint's score beside it.  Non-finite joints are skipped.
    """
    out = as_uint8_image(img)
    joints = np.asarray(joints, dtype=np.float64)
    scores = None if scores is None else np.asarray(scores, dtype=np.float64).reshape(-1)
    finite = np.isfinite(joints[:, :2]).all(axis=1)
    confident = finite.copy()
    if scores is not None and score_thr is not None:
        confident &= scores > score_thr
    thickness = thickness or _line_width(out)
    radius = radius or thickness + 2
    base = _rgb255(color)
    light = tuple(int(c + (255 - c) * 0.35) for c in base)
    for a, b in skeleton:
        if a < len(joints) and b < len(joints) and confident[a] and confident[b]:
            tone = light if (a in LEFT_JOINTS or b in LEFT_JOINTS) else base
            cv2.line(out, _point(joints[a]), _point(joints[b]), tone, thickness, cv2.LINE_AA)
    for j in np.nonzero(finite)[0]:
        tone = light if j in LEFT_JOINTS else base
        cv2.circle(out, _point(joints[j]), radius, tone, -1 if confident[j] else max(1, thickness // 2),
                   cv2.LINE_AA)
        if show_scores and scores is not None:
            cv2.putText(out, f'{scores[j]:.2f}', _point(joints[j] + radius + 1), cv2.FONT_HERSHEY_SIMPLEX,
                        0.3 * thickness, tone, 1, cv2.LINE_AA)
    return out


def _point(xy):
    return int(round(float(xy[0]))), int(round(float(xy[1])))


def draw_bbox(img, bbox, color=(0, 255, 0), thickness=None):
    """Draw an ``[x, y, w, h]`` box onto a copy of ``img``; returns the new uint8 image."""
    out = as_uint8_image(img)
    x, y, w, h = (float(v) for v in np.asarray(bbox).reshape(4))
    cv2.rectangle(out, _point((x, y)), _point((x + w, y + h)), _rgb255(color),
                  thickness or _line_width(out), cv2.LINE_AA)
    return out


def draw_input_pose(img, joints_smpl30, score_thr, color=(255, 128, 0), show_scores=False):
    """Draw an input 2D pose given in SMPL-30 order (J=30, columns x, y, score).

    Joints whose score is not above ``score_thr`` (including the 11 channels an input never
    fills, score 0) are left out; limbs follow ``INPUT_SKELETON``.
    """
    joints = np.asarray(joints_smpl30, dtype=np.float64)
    keep = joints[:, 2] > score_thr
    shown = np.where(keep[:, None], joints[:, :2], np.nan)
    return draw_skeleton(img, shown, INPUT_SKELETON, scores=joints[:, 2], score_thr=score_thr,
                         color=color, show_scores=show_scores)


# ----------------------------------------------------------------------------- files
def save_image(path, img):
    """Write an RGB image (``.jpg`` / ``.png``), creating the folder; returns ``path`` as str.

    Written atomically (temp file + rename): a kill never leaves a half-written picture.
    Raises ``OSError`` naming the path if OpenCV cannot encode it.
    """
    path = Path(path)
    bgr = cv2.cvtColor(as_uint8_image(img), cv2.COLOR_RGB2BGR)
    try:
        ok, encoded = cv2.imencode(path.suffix, bgr)
    except cv2.error as exc:
        raise OSError(f"Could not write image {path}: {exc}") from exc
    if not ok:
        raise OSError(f"Could not write image {path} (unsupported extension).")
    return atomic_write(path, lambda f: f.write(encoded.tobytes()), durable=False)


def write_obj(path, vertices, faces):
    """Write a mesh as Wavefront OBJ: ``v x y z`` lines, then ``f a b c`` with 1-based indices.

    vertices (V, 3) (metres, as given); faces (F, 3) 0-based ints.  Returns ``path`` as str.
    """
    vertices = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise ValueError(f"write_obj: face indices must lie in [0, {len(vertices) - 1}]")
    lines = [f'v {x:.6f} {y:.6f} {z:.6f}' for x, y, z in vertices.tolist()]
    lines += [f'f {a} {b} {c}' for a, b, c in (faces + 1).tolist()]
    return atomic_write_text(path, '\n'.join(lines) + '\n', durable=False)


# ----------------------------------------------------------------------------- cameras
def crop_camera_in_image(bb2img_trans, focal=RENDER_FOCAL, princpt=(128.0, 128.0)):
    """The crop's virtual camera expressed in original-image pixels: ``(focal (2,), princpt (2,))``.

    The crop -> image map of a test sample is an axis-aligned affine (no rotation at test
    time), so projecting with the crop camera and then applying ``bb2img_trans`` equals a
    pinhole with focal ``f * scale`` and principal point ``bb2img(princpt)`` (exact).
    """
    trans = np.asarray(bb2img_trans, dtype=np.float64).reshape(2, 3)
    focal_img = np.array([focal[0] * trans[0, 0], focal[1] * trans[1, 1]])
    princpt_img = trans @ np.array([princpt[0], princpt[1], 1.0])
    return focal_img, princpt_img


def render_camera(bbox, focal=RENDER_FOCAL):
    """The model's render-mode camera: focal 5000 px, principal point at the bbox centre.

    bbox ``[x, y, w, h]`` in original-image pixels.  Returns ``(focal (2,), princpt (2,))``.
    """
    x, y, w, h = (float(v) for v in np.asarray(bbox).reshape(4))
    return np.asarray(focal, dtype=np.float64), np.array([x + w / 2, y + h / 2])


# ----------------------------------------------------------------------------- bounded pictures
def bounded_size(height, width, max_side):
    """(H', W') of a picture whose longer side is at most ``max_side`` pixels, aspect kept.

    The size is unchanged when it already fits or ``max_side`` is 0 / None.
    """
    if not max_side or max(height, width) <= max_side:
        return int(height), int(width)
    factor = max_side / max(height, width)
    return max(1, int(round(height * factor))), max(1, int(round(width * factor)))


def resize_image(image, size):
    """(H, W, 3) image 0..255 -> uint8 of ``size`` (H', W'), area-averaged per channel.

    A uint8 image is reduced as it is (in either channel order, which is kept; returned
    itself, not a copy, when the size is already ``size``); any other dtype is first rounded
    to uint8 (:func:`as_uint8_image`).  Pixel centres follow OpenCV's resize: image pixel
    ``u`` lands on ``(u + 0.5) * W'/W - 0.5`` (:func:`to_resized_pixels`).
    """
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = as_uint8_image(image)
    if tuple(size) == image.shape[:2]:
        return image
    return cv2.resize(image, (int(size[1]), int(size[0])), interpolation=cv2.INTER_AREA)


def to_resized_pixels(xy, scale):
    """(..., 2) pixel coordinates of the original image -> those of a resized copy.

    scale (sx, sy) = (W'/W, H'/H); pixel centres at integer coordinates in both images.
    """
    xy = np.asarray(xy, dtype=np.float64)
    return (xy + 0.5) * np.asarray(scale, np.float64) - 0.5


def resized_camera(focal, princpt, scale):
    """The pinhole (focal, princpt) of the original image for a resized copy of it.

    A point projecting to ``u`` in the original projects to :func:`to_resized_pixels` of ``u``:
    ``f' = f s`` and ``c' = (c + 0.5) s - 0.5`` per axis.  Returns ``(focal (2,), princpt (2,))``.
    """
    scale = np.asarray(scale, np.float64)
    return np.asarray(focal, np.float64) * scale, to_resized_pixels(princpt, scale)


def resized_bbox(bbox, scale):
    """``[x, y, w, h]`` of the original image -> the same box in a resized copy."""
    x, y, w, h = (float(v) for v in np.asarray(bbox).reshape(4))
    x1, y1 = to_resized_pixels((x, y), scale)
    return np.array([x1, y1, w * scale[0], h * scale[1]])


def to_shared_camera(vertices, focal, princpt, shared_focal, shared_princpt):
    """Map camera-space vertices so that the shared camera sees them as their own camera did.

    vertices (V, 3) metres, seen with ``focal``/``princpt``; returns (V, 3) with the same
    depths whose projection with ``shared_focal``/``shared_princpt`` is identical:
    ``X' = X f/f0 + (c - c0) Z / f0`` (per axis).  Depth order across people is kept because
    ``Z`` is unchanged; shading changes only by the small shear.
    """
    verts = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    focal, princpt = np.asarray(focal, np.float64), np.asarray(princpt, np.float64)
    shared_focal, shared_princpt = np.asarray(shared_focal, np.float64), np.asarray(shared_princpt, np.float64)
    out = verts.copy()
    out[:, :2] = verts[:, :2] * (focal / shared_focal) + verts[:, 2:3] * ((princpt - shared_princpt) / shared_focal)
    return out


def render_people(image, meshes, faces, focals, princpts, colors=None, alpha=1.0, return_depth=False):
    """Render several people's meshes over ``image``, nearest surface first across people.

    image (H, W, 3) 0..255; meshes: list of (V, 3) camera-space vertices in metres; faces
    (F, 3); focals, princpts: one ``(fx, fy)`` / ``(cx, cy)`` per mesh (or a single pair for
    all) in pixels; colors: (N, 3) RGB in [0, 1], default :func:`person_colors`.
    Returns the uint8 image (and, with ``return_depth``, the depth map (H, W) float32 with
    ``inf`` and the per-pixel person index (H, W) int32 with -1 where no mesh is).

    Triangles are drawn on a canvas that holds each of them whole (``render.rasterize`` must
    not see triangles crossing its border, see ``_canvas_layout``); triangles reaching further
    than ``max(H, W)`` pixels beyond the image, or behind the camera, are left out.
    """
    image = as_uint8_image(image)
    height, width = image.shape[:2]
    count = len(meshes)
    depth = np.full((height, width), np.inf, np.float32)
    index = np.full((height, width), -1, np.int32)
    if count == 0:
        return (image, depth, index) if return_depth else image
    faces = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    focals = _per_mesh(focals, count, 'focals')
    princpts = _per_mesh(princpts, count, 'princpts')
    shared_focal, shared_princpt = focals[0], princpts[0]
    shared = [to_shared_camera(m, f, c, shared_focal, shared_princpt) for m, f, c in zip(meshes, focals, princpts)]
    colors = person_colors(count) if colors is None else np.asarray(colors, dtype=np.float64).reshape(-1, 3)
    if len(colors) < count:
        raise ValueError(f"render_people: {len(colors)} colours for {count} meshes")

    kept, (left, top, right, bottom) = _canvas_layout(shared, faces, shared_focal, shared_princpt, height, width)
    canvas = np.zeros((top + height + bottom, left + width + right, 3), np.uint8)
    canvas[top:top + height, left:left + width] = image
    canvas_princpt = (shared_princpt[0] + left, shared_princpt[1] + top)
    out = canvas.copy()
    canvas_depth = np.full(canvas.shape[:2], np.inf, np.float32)
    canvas_index = np.full(canvas.shape[:2], -1, np.int32)
    for i, (verts, mesh_faces) in enumerate(zip(shared, kept)):
        if not len(mesh_faces):
            continue
        drawn, mesh_depth, mesh_index = render_meshes(canvas, [verts], mesh_faces, tuple(shared_focal),
                                                      canvas_princpt, colors=colors[i:i + 1], alpha=alpha,
                                                      return_depth=True)
        nearer = (mesh_index >= 0) & (mesh_depth < canvas_depth)
        out[nearer] = drawn[nearer]
        canvas_depth[nearer] = mesh_depth[nearer]
        canvas_index[nearer] = i
    window = (slice(top, top + height), slice(left, left + width))
    out = np.ascontiguousarray(out[window])
    if return_depth:
        return out, canvas_depth[window].copy(), canvas_index[window].copy()
    return out


def _canvas_layout(meshes, faces, focal, princpt, height, width):
    """Per mesh the faces to draw, and the canvas margins ``(left, top, right, bottom)`` in pixels.

    ``render.rasterize`` pads each chunk of triangles to a common pixel grid and indexes pixels
    as ``y * W + x``; a triangle cut by the image border then lands on wrapped-around pixels
    (or out of range).  A canvas holding every kept triangle whole avoids that; triangles more
    than ``max(H, W)`` pixels outside the image or not in front of the camera are dropped.
    """
    cap = max(height, width)
    lo = np.array([0.0, 0.0])
    hi = np.array([width - 1.0, height - 1.0])
    kept = []
    for verts in meshes:
        verts = np.asarray(verts, np.float64)
        with np.errstate(divide='ignore', invalid='ignore'):
            uv = verts[:, :2] / verts[:, 2:3] * focal + princpt
        tri_uv, tri_z = uv[faces], verts[faces, 2]
        ok = (tri_z > NEAR_PLANE).all(axis=1) & np.isfinite(tri_uv).all(axis=(1, 2))
        ok &= (tri_uv[..., 0] >= -cap).all(axis=1) & (tri_uv[..., 0] <= width - 1 + cap).all(axis=1)
        ok &= (tri_uv[..., 1] >= -cap).all(axis=1) & (tri_uv[..., 1] <= height - 1 + cap).all(axis=1)
        kept.append(faces[ok])
        if ok.any():
            lo = np.minimum(lo, tri_uv[ok].reshape(-1, 2).min(axis=0))
            hi = np.maximum(hi, tri_uv[ok].reshape(-1, 2).max(axis=0))
    left, top = (int(np.ceil(-v)) + 1 if v < 0 else 0 for v in lo)
    right = int(np.ceil(hi[0] - (width - 1))) + 1 if hi[0] > width - 1 else 0
    bottom = int(np.ceil(hi[1] - (height - 1))) + 1 if hi[1] > height - 1 else 0
    return kept, (left, top, right, bottom)


def _per_mesh(values, count, name):
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape == (2,):
        arr = np.repeat(arr[None], count, axis=0)
    if arr.shape != (count, 2):
        raise ValueError(f"render_people: {name} must be one (2,) pair or ({count}, 2), got {arr.shape}")
    return arr


def ensure_dir(path):
    """Create ``path`` (and parents) if needed; returns it as str."""
    os.makedirs(path, exist_ok=True)
    return str(path)
