"""Image loading, bounding boxes, augmentation parameters and the affine crop.

See docs/METHOD.md, "Images, boxes and crops".  Conventions: boxes are ``[x, y, w, h]``
(top-left corner, width, height) in pixels; image coordinates ``(u, v)`` have pixel
``(u, v)``'s centre at integer coordinates; horizontal mirroring maps ``u -> W - 1 - u``.
Every random draw takes an explicit ``rng: np.random.Generator``; crop and heatmap sizes
come from a ``common.options.GeometryOptions`` (``geometry``), augmentation ranges from an
``AugmentOptions`` (``augment``).
"""
import math
import os.path as osp
import re
from typing import NamedTuple

import cv2
import numpy as np

from common.errors import ImageFileError
from common.utils.warp_source import fill_canvas, sampled_region

BBOX_JOINT_EXTEND = 1.2      # get_bbox: enlargement of the joints' extent
BBOX_CONTEXT_SCALE = 1.25    # process_bbox: enlargement after the aspect extension
ROT_PROBABILITY = 0.6        # probability of drawing a rotation (identity in SGRE)
FLIP_PROBABILITY = 0.5


# ----------------------------------------------------------------------------- images
class BGRImage(NamedTuple):
    """A decoded image kept as OpenCV gives it: ``pixels`` (H, W, 3) uint8, BGR order.

    The crops (``generate_patch_image``, ``augmentation``, ``crop_for_test``) accept it in
    place of ``load_img``'s float32 RGB array and give the same patch, bit for bit, while
    converting only the pixels they read (``common/utils/warp_source.py``).
    """
    pixels: np.ndarray

    @property
    def shape(self):
        """(H, W, 3), as the array's."""
        return self.pixels.shape


def read_image(path):
    """Read and decode an image once: a ``BGRImage`` (uint8, BGR, 3 channels).

    OpenCV colour read, EXIF orientation ignored (as the original); greyscale files come
    out as 3 identical channels.  Raises ``FileNotFoundError`` for a missing file and
    ``ImageFileError`` for an unreadable, corrupt or truncated one, naming the path (never
    a silent black image).
    """
    path = str(path)
    if not osp.isfile(path):
        raise FileNotFoundError(f"Image file not found: {path}")
    with open(path, 'rb') as f:  # read once: the truncation check and the decoder share the bytes
        data = f.read()
    if _is_truncated_jpeg(data):
        raise ImageFileError(f"Truncated JPEG file (no end-of-image marker): {path}")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if img is None or img.size == 0:
        raise ImageFileError(f"Cannot read image (unsupported or corrupt file): {path}")
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    return BGRImage(img)


def load_img(path, order='RGB'):
    """Read a whole image as a float32 array ``(H, W, 3)`` with values 0..255.

    ``read_image`` converted: ``order`` is 'RGB' (default) or 'BGR'.  Crops need not
    convert the whole image: give them ``read_image(path)`` instead.
    """
    if order not in ('RGB', 'BGR'):
        raise ValueError(f"load_img: order must be 'RGB' or 'BGR', got {order!r}")
    img = read_image(path).pixels
    if order == 'RGB':
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img.astype(np.float32)


# JPEG markers (ITU-T T.81, table B.1).
_SOI, _EOI, _SOS = 0xD8, 0xD9, 0xDA
_STANDALONE_MARKERS = frozenset([0x01, *range(0xD0, 0xD8)])   # TEM, RST0..7: no length field


def _is_truncated_jpeg(data):
    """True for JPEG file bytes ``data`` whose main image ends before its end-of-image marker.

    OpenCV decodes a truncated JPEG silently (grey lower part), so the file's segment
    structure is walked: SOI, then length-prefixed segments (an EXIF APP1 segment may hold
    a whole thumbnail JPEG with its own EOI, which is skipped with the segment), each SOS
    followed by entropy-coded data up to the next marker that is neither byte stuffing
    (0xFF00) nor a restart marker (progressive files have several scans), and finally
    EOI.  Anything after EOI (camera trailers, motion-photo videos) is ignored.  Files
    that do not start with SOI are not JPEGs and are never called truncated here.
    """
    if data[:2] != b'\xff\xd8':
        return False
    return _jpeg_end_of_image(data) is None


def _jpeg_end_of_image(data):
    """Offset just past the main image's EOI marker in JPEG bytes ``data``, or None if it is missing."""
    pos, size = 2, len(data)
    while True:
        # Markers may be preceded by any number of 0xFF fill bytes.
        if pos >= size or data[pos] != 0xFF:
            return None
        while pos < size and data[pos] == 0xFF:
            pos += 1
        if pos >= size:
            return None
        marker = data[pos]
        pos += 1
        if marker == _EOI:
            return pos
        if marker in _STANDALONE_MARKERS or marker == _SOI:
            continue
        if pos + 2 > size:
            return None
        length = int.from_bytes(data[pos:pos + 2], 'big')   # includes the two length bytes
        if length < 2 or pos + length > size:
            return None
        pos += length
        if marker == _SOS:
            pos = _skip_entropy_coded_data(data, pos)
            if pos is None:
                return None


# 0xFF followed by anything but stuffing (0x00), a restart marker (RST0..7) or a fill byte (0xFF).
_MARKER_AFTER_SCAN = re.compile(rb'\xff[^\x00\xd0-\xd7\xff]')


def _skip_entropy_coded_data(data, pos):
    """Offset of the first marker after the entropy-coded data starting at ``pos`` (None: none follows).

    Inside the scan 0xFF is followed by 0x00 (byte stuffing) or a restart marker RST0..7;
    fill bytes 0xFF may precede a marker; any other byte after 0xFF starts the next marker.
    One regular-expression search (a Python loop over every 0xFF of a large photo takes
    milliseconds).
    """
    found = _MARKER_AFTER_SCAN.search(data, pos)
    return None if found is None else found.start()


# ------------------------------------------------------------------------------ boxes
def get_bbox(joint_img, joint_valid, extend_ratio=BBOX_JOINT_EXTEND):
    """Box around the valid joints, enlarged about its centre.

    joint_img (J, >=2) pixels; joint_valid (J,) or (J, 1), joints with ``valid == 1``
    count.  Returns float32 ``[x, y, w, h]``; width and height are the joints' extent
    times ``extend_ratio`` (may be 0 when all valid joints coincide).
    Raises ``ValueError`` when no joint is valid.
    """
    joint_img = np.asarray(joint_img)
    valid = np.asarray(joint_valid).reshape(-1) == 1
    if not valid.any():
        raise ValueError("get_bbox: no valid joint to build a box from")
    x, y = joint_img[valid, 0], joint_img[valid, 1]
    # Sums and extents in the input's precision, the rest in float64 (the original's
    # NumPy-1 scalar promotion).
    x_center, width = float(x.min() + x.max()) / 2, float(x.max() - x.min())
    y_center, height = float(y.min() + y.max()) / 2, float(y.max() - y.min())
    xmin, xmax = x_center - 0.5 * width * extend_ratio, x_center + 0.5 * width * extend_ratio
    ymin, ymax = y_center - 0.5 * height * extend_ratio, y_center + 0.5 * height * extend_ratio
    return np.array([xmin, ymin, xmax - xmin, ymax - ymin], dtype=np.float32)


def sanitize_bbox(bbox, img_width, img_height, is_3dpw_test=False):
    """Step 1-2 of ``process_bbox``: clamp into the image; None for an unusable box.

    Keeps the original's quirk (docs/METHOD.md, "Differences from the original"): the
    right/bottom edge starts from the clamped
    left/top corner, so a box sticking out on the left/top is shifted, not cut.
    ``is_3dpw_test=True`` accepts any box (never None).  Returns float32 (4,) or None.
    """
    x, y, w, h = (float(v) for v in np.asarray(bbox).reshape(4))
    x1, y1 = max(0.0, x), max(0.0, y)
    x2 = min(img_width - 1.0, x1 + max(0.0, w - 1))
    y2 = min(img_height - 1.0, y1 + max(0.0, h - 1))
    if not is_3dpw_test and not (w * h > 0 and x2 >= x1 and y2 >= y1):
        return None
    return np.array([x1, y1, x2 - x1, y2 - y1], dtype=np.float32)


def input_aspect_ratio(geometry):
    """Width / height of the network's input crop (``GeometryOptions.input_img_shape``)."""
    height, width = geometry.input_img_shape
    return width / height


def process_bbox(bbox, img_width, img_height, is_3dpw_test=False, aspect_ratio=1.0,
                 scale=BBOX_CONTEXT_SCALE):
    """Sanitise, extend to the input aspect ratio and enlarge 1.25x.

    bbox ``[x, y, w, h]`` pixels of an image ``img_width x img_height``.  aspect_ratio:
    W/H of the input crop (``input_aspect_ratio(geometry)``; 1 for 256x256).  Returns the
    processed float32 ``[x, y, w, h]`` (same centre), or None in default mode when the
    box is unusable (``w*h <= 0`` or empty after clamping).
    Worked example: ``[10, 20, 100, 50]`` in 640x480 -> ``[-2.375, -17.375, 123.75, 123.75]``.
    """
    box = sanitize_bbox(bbox, img_width, img_height, is_3dpw_test)
    if box is None:
        return None
    w, h = float(box[2]), float(box[3])
    c_x, c_y = float(box[0]) + w / 2.0, float(box[1]) + h / 2.0
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    # Stored through float32 one value at a time, as the original's float32 array.
    box[2] = w * scale
    box[3] = h * scale
    box[0] = c_x - float(box[2]) / 2.0
    box[1] = c_y - float(box[3]) / 2.0
    return box


def compute_iou(box_a, box_b):
    """IoU of ``[x, y, w, h]`` boxes with the original's ``+1e-5`` in the denominator.

    Broadcasts: box_a (..., 4), box_b (..., 4) -> (...) float64 (a Python float for two
    single boxes).  For all pairs use ``compute_iou(a[:, None], b[None])``.
    """
    a = np.asarray(box_a, dtype=np.float64)
    b = np.asarray(box_b, dtype=np.float64)
    inter_w = np.maximum(0.0, np.minimum(a[..., 0] + a[..., 2], b[..., 0] + b[..., 2])
                         - np.maximum(a[..., 0], b[..., 0]))
    inter_h = np.maximum(0.0, np.minimum(a[..., 1] + a[..., 3], b[..., 1] + b[..., 3])
                         - np.maximum(a[..., 1], b[..., 1]))
    inter = inter_w * inter_h
    iou = inter / (a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter + 1e-5)
    return float(iou) if iou.ndim == 0 else iou


# ----------------------------------------------------------------- affine transforms
def apply_affine(points, trans):
    """Apply a (2, 3) affine to points (..., >=2) -> (..., 2) float32 (``A @ [x, y, 1]``)."""
    pts = np.asarray(points, dtype=np.float32)[..., :2]
    trans = np.asarray(trans, dtype=np.float32)
    return (pts @ trans[:, :2].T + trans[:, 2]).astype(np.float32)


def rotate_2d(point, rot_rad):
    """Rotate a 2-D vector by ``rot_rad`` (counter-clockwise in x-right/y-up axes)."""
    sn, cs = math.sin(rot_rad), math.cos(rot_rad)
    return np.array([point[0] * cs - point[1] * sn, point[0] * sn + point[1] * cs], dtype=np.float32)


def gen_trans_from_patch_cv(c_x, c_y, src_width, src_height, dst_width, dst_height, scale, rot, inv=False):
    """(2, 3) float32 affine mapping a rotated source box onto a ``dst`` patch.

    The box of size ``scale * (src_width, src_height)`` centred at ``(c_x, c_y)`` and
    rotated by ``rot`` degrees maps to the whole ``dst_width x dst_height`` patch:
    centre -> patch centre, centre + Rot(rot)(0, h/2) -> bottom-centre,
    centre + Rot(rot)(w/2, 0) -> right-centre; solved from these three float32 point
    pairs with ``cv2.getAffineTransform``.  ``inv=True`` gives patch -> source.
    """
    src_w, src_h = src_width * scale, src_height * scale
    rot_rad = math.pi * rot / 180
    src_center = np.array([c_x, c_y], dtype=np.float32)
    src_down = rotate_2d(np.array([0, src_h * 0.5], dtype=np.float32), rot_rad)
    src_right = rotate_2d(np.array([src_w * 0.5, 0], dtype=np.float32), rot_rad)
    dst_center = np.array([dst_width * 0.5, dst_height * 0.5], dtype=np.float32)
    src = np.stack([src_center, src_center + src_down, src_center + src_right]).astype(np.float32)
    dst = np.stack([dst_center,
                    dst_center + np.array([0, dst_height * 0.5], dtype=np.float32),
                    dst_center + np.array([dst_width * 0.5, 0], dtype=np.float32)]).astype(np.float32)
    trans = cv2.getAffineTransform(dst, src) if inv else cv2.getAffineTransform(src, dst)
    return trans.astype(np.float32)


def generate_patch_image(cvimg, bbox, scale, rot, do_flip, out_shape):
    """Cut the (optionally mirrored) box out of an image.

    cvimg: (H, W, C) array, or a ``BGRImage`` (read_image), which crops as its float32 RGB
    conversion (``load_img``) would; bbox processed ``[x, y, w, h]``; scale, rot (degrees),
    do_flip; out_shape (H_o, W_o).  Returns ``(patch (H_o, W_o, C) float32, img2bb (2, 3),
    bb2img (2, 3))``: bilinear ``warpAffine`` with a constant black border.  When
    flipped, the image is mirrored first (``u -> W - 1 - u``), so ``img2bb`` maps
    flipped-image coordinates.  Only the pixels the warp reads are converted or mirrored
    (``common/utils/warp_source.py``); the patch is the one of the whole-image path.
    """
    bgr = isinstance(cvimg, BGRImage)
    pixels = cvimg.pixels if bgr else cvimg
    img_height, img_width = pixels.shape[:2]
    bb_c_x = float(bbox[0]) + 0.5 * float(bbox[2])
    bb_c_y = float(bbox[1]) + 0.5 * float(bbox[3])
    bb_width, bb_height = float(bbox[2]), float(bbox[3])
    if do_flip:
        bb_c_x = img_width - bb_c_x - 1
    out_h, out_w = int(out_shape[0]), int(out_shape[1])
    img2bb = gen_trans_from_patch_cv(bb_c_x, bb_c_y, bb_width, bb_height, out_w, out_h, scale, rot)
    source = fill_canvas(pixels, sampled_region(img2bb, (out_h, out_w), img_height, img_width), do_flip, bgr)
    patch = cv2.warpAffine(source, img2bb, (out_w, out_h), flags=cv2.INTER_LINEAR)
    if patch.ndim == 2:  # warpAffine drops a single channel axis
        patch = patch[:, :, None]
    bb2img = gen_trans_from_patch_cv(bb_c_x, bb_c_y, bb_width, bb_height, out_w, out_h, scale, rot, inv=True)
    return patch.astype(np.float32, copy=False), img2bb, bb2img


# --------------------------------------------------------------------- augmentation
def get_aug_config(rng, augment):
    """Draw augmentation parameters with the ranges of ``augment`` (an ``AugmentOptions``).

    Returns ``(scale, rot, color_scale (3,) float64, do_flip)``.  Draws from ``rng``,
    in this order:
      1. ``n1 = rng.standard_normal()``: ``scale = 1 + scale_factor * clip(n1, -1, 1)``;
      2. ``u1 = rng.random()``; only if ``u1 <= 0.6``: ``n2 = rng.standard_normal()``,
         ``rot = rot_factor * clip(n2, -2, 2)``, else ``rot = 0``;
      3. ``color_scale = rng.uniform(1 - color_factor, 1 + color_factor, size=3)``;
      4. ``do_flip = rng.random() <= 0.5``.
    SGRE's defaults (0, 0, 0.2) make scale 1 and rot 0 but still consume the draws.
    """
    scale_factor, rot_factor, color_factor = augment.scale_factor, augment.rot_factor, augment.color_factor
    scale = 1.0 + scale_factor * float(np.clip(rng.standard_normal(), -1.0, 1.0))
    rot = 0.0
    if rng.random() <= ROT_PROBABILITY:
        rot = rot_factor * float(np.clip(rng.standard_normal(), -2.0, 2.0))
    color_scale = rng.uniform(1.0 - color_factor, 1.0 + color_factor, size=3)
    do_flip = bool(rng.random() <= FLIP_PROBABILITY)
    return scale, rot, color_scale, do_flip


def augmentation(img, bbox, out_shape, augment=None, rng=None):
    """Crop of one person, augmented when ``augment`` is given.

    img (H, W, 3) float32 RGB 0..255 (``load_img``) or a ``BGRImage`` (``read_image``; the
    same patch, faster); bbox processed ``[x, y, w, h]``;
    out_shape (H_o, W_o), e.g. ``geometry.input_img_shape``.  With ``augment`` (an
    ``AugmentOptions``; training) the parameters are drawn with ``get_aug_config(rng,
    augment)`` (rng required) and, with ``augment.use_occlusion``, Pascal VOC occluders
    are pasted into the patch before colour scaling (further draws from ``rng``).
    Without it: scale 1, rot 0, colour 1, no flip, nothing drawn.
    Returns ``(patch (H_o, W_o, 3) float32 0..255, img2bb (2, 3) float32,
    bb2img (2, 3) float32, rot (degrees), do_flip)``.
    """
    if augment is not None:
        if rng is None:
            raise ValueError("augmentation: an augmented crop needs an rng (np.random.Generator)")
        scale, rot, color_scale, do_flip = get_aug_config(rng, augment)
    else:
        scale, rot, color_scale, do_flip = 1.0, 0.0, np.ones(3), False
    patch, img2bb, bb2img = generate_patch_image(img, bbox, scale, rot, do_flip, out_shape)
    if augment is not None and augment.use_occlusion:
        from common.utils.occlusion import occlude_with_voc  # opt-in; keeps VOC code off the default path
        patch = occlude_with_voc(patch, rng, augment.voc_dir)
    patch = np.clip(patch * np.asarray(color_scale)[None, None, :], 0, 255).astype(np.float32)
    return patch, img2bb, bb2img, rot, do_flip


class TestCrop(NamedTuple):
    """A test-time crop of one person (``crop_for_test``).

    patch (H_in, W_in, 3) float32 RGB 0..255; joints_hm (J, C) float32 with x, y in
    heatmap units (other columns as given); img2bb / bb2img (2, 3) float32 affines
    between original-image pixels and crop pixels.
    """
    __test__ = False   # not a pytest test class despite its name

    patch: np.ndarray
    joints_hm: np.ndarray
    img2bb: np.ndarray
    bb2img: np.ndarray


def crop_for_test(img, bbox, joints, geometry):
    """The un-augmented network input of one person and its 2D joints in heatmap units.

    img (H, W, 3) float32 RGB 0..255 (``load_img``) or a ``BGRImage`` (``read_image``; the
    same patch, faster); bbox (4,) processed ``[x, y, w, h]`` pixels;
    joints (J, C >= 2) image pixels (columns after x, y are copied unchanged);
    geometry: a ``GeometryOptions`` (crop and heatmap sizes).  The crop has scale 1,
    no rotation and no flip.  Returns a ``TestCrop``.
    """
    patch, img2bb, bb2img = generate_patch_image(img, bbox, 1.0, 0.0, False, geometry.input_img_shape)
    joints_hm = np.array(joints, dtype=np.float32, copy=True)
    joints_hm[:, :2] = apply_affine(joints_hm[:, :2], img2bb)
    joints_hm = to_heatmap_xy(joints_hm, geometry)
    return TestCrop(np.asarray(patch, dtype=np.float32), joints_hm,
                    np.asarray(img2bb, dtype=np.float32), np.asarray(bb2img, dtype=np.float32))


# ------------------------------------------------------------------- heatmap units
def heatmap_scale(geometry):
    """(sx, sy) turning crop pixels into heatmap cells (64/256 for both by default)."""
    height, width = geometry.input_img_shape
    return geometry.output_hm_shape[2] / width, geometry.output_hm_shape[1] / height


def to_heatmap_xy(xy, geometry):
    """Crop pixels -> heatmap cells (x * sx, y * sy). xy: (N, >=2); returns a float32 copy."""
    out = np.array(xy, dtype=np.float32, copy=True)
    sx, sy = heatmap_scale(geometry)
    out[:, 0] = out[:, 0] * sx
    out[:, 1] = out[:, 1] * sy
    return out


def normalise_depth(depth_rel, unit_scale, geometry):
    """Root-relative depth -> heatmap depth cells: +-bbox_3d_size/2 maps onto [0, D_hm).

    depth_rel: (N,) in mm (unit_scale=1000) or metres (unit_scale=1).  Returns float32 (N,).
    """
    half_range = geometry.bbox_3d_size * unit_scale / 2
    return ((np.asarray(depth_rel, dtype=np.float32) / half_range + 1) / 2
            * geometry.output_hm_shape[0]).astype(np.float32)


# ----------------------------------------------------------------------- flipping
def flip_img_joints(joints, img_width, flip_pairs):
    """Mirror image joints (..., J, C): x -> W - 1 - x, then swap flip pairs (copy, float32)."""
    out = np.array(joints, dtype=np.float32, copy=True)
    out[..., 0] = img_width - 1 - out[..., 0]
    if len(flip_pairs):
        first, second = np.asarray(flip_pairs).T
        out[..., first, :], out[..., second, :] = out[..., second, :].copy(), out[..., first, :].copy()
    return out


def in_bounds_mask(joint_hm, hm_shape, check_depth=False):
    """(N, 1) float32 truncation mask: 0 <= x < W_hm, 0 <= y < H_hm (and 0 <= z < D_hm).

    joint_hm (N, >=2 or 3) heatmap coordinates; hm_shape (D, H, W), e.g.
    ``geometry.output_hm_shape``.  Multiply by validity where one exists.
    """
    depth_n, height_n, width_n = hm_shape
    joint_hm = np.asarray(joint_hm)
    x, y = joint_hm[:, 0], joint_hm[:, 1]
    inside = (x >= 0) & (x < width_n) & (y >= 0) & (y < height_n)
    if check_depth:
        inside &= (joint_hm[:, 2] >= 0) & (joint_hm[:, 2] < depth_n)
    return inside.astype(np.float32)[:, None]
