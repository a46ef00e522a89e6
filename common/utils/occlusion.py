"""Opt-in synthetic occlusion with Pascal VOC 2012 objects.

See docs/METHOD.md, "Augmentation and pose synthesis".  Off by default
(``AugmentOptions.use_occlusion = False``), as in SGRE, whose loaders never call it.
When on, ``AugmentOptions.voc_dir`` must point to a VOC 2012 root holding ``Annotations/``
(XML), ``JPEGImages/`` and ``SegmentationObject/`` (instance PNGs).  Occluders are
extracted once per process and directory (cached; call ``get_voc_occluders()`` in the
main process before starting DataLoader workers so forked workers share them).
"""
import glob
import os.path as osp
import xml.etree.ElementTree as ET

import cv2
import numpy as np

MIN_OCCLUDER_PIXELS = 500
OCCLUDER_DOWNSCALE = 0.5
BORDER_ALPHA = 192
MAX_OCCLUDERS = 4
SIZE_RANGE = (0.2, 0.5)   # longer occluder side as a fraction of min(W, H)
VOC_URL = 'http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ (VOCtrainval_11-May-2012.tar)'

_OCCLUDER_CACHE = {}


def voc_palette(num=256):
    """(num, 3) uint8 RGB colours of the VOC segmentation palette (label i -> colour)."""
    palette = np.zeros((num, 3), dtype=np.uint8)
    for label in range(num):
        code, rgb = label, [0, 0, 0]
        for bit in range(8):
            for channel in range(3):
                rgb[channel] |= ((code >> channel) & 1) << (7 - bit)
            code >>= 3
        palette[label] = rgb
    return palette


def read_voc_instance_mask(path):
    """(H, W) uint8 instance labels of a VOC ``SegmentationObject`` PNG (0 = background).

    OpenCV expands palette PNGs to colours; they are mapped back through the VOC
    palette (the 255 'void' border and unknown colours become 0).
    """
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise IOError(f"Cannot read VOC instance mask: {path}")
    rgb = bgr[:, :, ::-1].astype(np.int64)
    keys = (rgb[:, :, 0] << 16) | (rgb[:, :, 1] << 8) | rgb[:, :, 2]
    palette = voc_palette().astype(np.int64)
    palette_keys = (palette[:, 0] << 16) | (palette[:, 1] << 8) | palette[:, 2]
    order = np.argsort(palette_keys)
    pos = np.clip(np.searchsorted(palette_keys[order], keys), 0, len(order) - 1)
    labels = order[pos]
    labels[palette_keys[labels] != keys] = 0
    labels[labels == 255] = 0
    return labels.astype(np.uint8)


def _parse_annotation(path):
    """(segmented flag, image stem, [(difficult, truncated, (xmin, ymin, xmax, ymax)), ...])."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise ValueError(f"Malformed VOC annotation {path}: {err}") from err
    segmented = int(float(root.findtext('segmented', '0'))) == 1
    stem = osp.splitext(root.findtext('filename') or osp.basename(path))[0]
    objects = []
    for obj in root.findall('object'):
        box = obj.find('bndbox')
        coords = tuple(int(float(box.findtext(key))) for key in ('xmin', 'ymin', 'xmax', 'ymax'))
        objects.append((int(float(obj.findtext('difficult', '0'))) == 1,
                        int(float(obj.findtext('truncated', '0'))) == 1, coords))
    return segmented, stem, objects


def _make_occluder(image_rgb, instance_mask, box):
    """RGBA uint8 occluder from one object's box, or None when its mask is too small."""
    xmin, ymin, xmax, ymax = box
    mask = (instance_mask[ymin:ymax, xmin:xmax]).astype(np.uint8)
    if int(mask.sum()) < MIN_OCCLUDER_PIXELS:
        return None
    alpha = mask * 255
    eroded = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (8, 8)))
    alpha[(mask > 0) & (eroded == 0)] = BORDER_ALPHA
    rgba = np.concatenate([image_rgb[ymin:ymax, xmin:xmax], alpha[:, :, None]], axis=2)
    return resize_by_factor(rgba, OCCLUDER_DOWNSCALE)


def load_voc_occluders(voc_dir):
    """Extract every usable VOC object (not difficult, not truncated, mask >= 500 px)
    as an RGBA uint8 occluder (RGB order, alpha 255 inside, 192 on the mask border),
    downscaled by 0.5.  Returns a list of (h, w, 4) arrays."""
    check_voc_dir(voc_dir)
    occluders = []
    for ann_path in sorted(glob.glob(osp.join(voc_dir, 'Annotations', '*.xml'))):
        segmented, stem, objects = _parse_annotation(ann_path)
        if not segmented:
            continue
        img_path = osp.join(voc_dir, 'JPEGImages', stem + '.jpg')
        seg_path = osp.join(voc_dir, 'SegmentationObject', stem + '.png')
        bgr = cv2.imread(img_path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise IOError(f"Cannot read VOC image {img_path} (listed in {ann_path})")
        labels = read_voc_instance_mask(seg_path)
        image_rgb = bgr[:, :, ::-1]
        for index, (difficult, truncated, box) in enumerate(objects):
            if difficult or truncated:
                continue
            occluder = _make_occluder(image_rgb, labels == index + 1, box)
            if occluder is not None:
                occluders.append(occluder)
    if not occluders:
        raise ValueError(f"No usable occluder found in the Pascal VOC folder {voc_dir} "
                         "(needs segmented objects that are neither difficult nor truncated).")
    return occluders


def check_voc_dir(voc_dir):
    """Raise a clear error when the VOC root is unset or lacks one of its folders."""
    if not voc_dir:
        raise ValueError("use_occlusion is True but voc_dir is not set: point it to the "
                         "Pascal VOC 2012 root (VOCdevkit/VOC2012, with Annotations/, JPEGImages/, "
                         f"SegmentationObject/); get it from {VOC_URL}.")
    for sub in ('Annotations', 'JPEGImages', 'SegmentationObject'):
        if not osp.isdir(osp.join(voc_dir, sub)):
            raise FileNotFoundError(
                f"Pascal VOC folder {osp.join(voc_dir, sub)} not found (voc_dir = {voc_dir!r}). "
                "voc_dir must be the VOC 2012 root (VOCdevkit/VOC2012) with Annotations/, "
                f"JPEGImages/ and SegmentationObject/; get it from {VOC_URL}.")


def get_voc_occluders(voc_dir):
    """The occluders of the VOC 2012 root ``voc_dir``, extracted once per process."""
    check_voc_dir(voc_dir)
    key = osp.abspath(voc_dir)
    if key not in _OCCLUDER_CACHE:
        _OCCLUDER_CACHE[key] = load_voc_occluders(voc_dir)
    return _OCCLUDER_CACHE[key]


def resize_by_factor(img, factor):
    """Resize by a scale factor: area interpolation when shrinking, bilinear when enlarging."""
    height, width = img.shape[:2]
    new_size = (max(1, int(round(width * factor))), max(1, int(round(height * factor))))
    interpolation = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    return cv2.resize(img, new_size, interpolation=interpolation)


def paste_over(occluder, img, center):
    """Alpha-blend an RGBA occluder onto img (H, W, 3) in place, centred at ``center``
    (x, y), clipped at the borders: ``alpha * src + (1 - alpha) * dst``."""
    occ_h, occ_w = occluder.shape[:2]
    img_h, img_w = img.shape[:2]
    x0 = int(round(center[0] - occ_w / 2))
    y0 = int(round(center[1] - occ_h / 2))
    dx0, dy0 = max(x0, 0), max(y0, 0)
    dx1, dy1 = min(x0 + occ_w, img_w), min(y0 + occ_h, img_h)
    if dx1 <= dx0 or dy1 <= dy0:
        return img
    src = occluder[dy0 - y0:dy1 - y0, dx0 - x0:dx1 - x0]
    alpha = src[:, :, 3:4].astype(np.float32) / 255.0
    region = img[dy0:dy1, dx0:dx1]
    img[dy0:dy1, dx0:dx1] = alpha * src[:, :, :3].astype(np.float32) + (1 - alpha) * region
    return img


def occlude_with_objects(img, occluders, rng):
    """Paste k ~ U{1..4} random occluders into a copy of img (H, W, 3).

    Draws from ``rng``: ``k = rng.integers(1, 5)``; then per occluder
    ``rng.integers(len(occluders))``, ``rng.uniform(0.2, 0.5)`` (longer side as a
    fraction of min(W, H)) and ``rng.uniform([W/8, H/8], [7W/8, 7H/8])`` (centre).
    Returns a float32 array.
    """
    result = np.array(img, dtype=np.float32, copy=True)
    height, width = result.shape[:2]
    for _ in range(int(rng.integers(1, MAX_OCCLUDERS + 1))):
        occluder = occluders[int(rng.integers(len(occluders)))]
        target = rng.uniform(*SIZE_RANGE) * min(width, height)
        occluder = resize_by_factor(occluder, target / max(occluder.shape[:2]))
        center = rng.uniform([width / 8, height / 8], [width * 7 / 8, height * 7 / 8])
        paste_over(occluder, result, center)
    return result


def occlude_with_voc(img, rng, voc_dir):
    """Paste 1-4 random VOC occluders into img (H, W, 3) float32 0..255; returns a new array.

    voc_dir: the VOC 2012 root; raises a clear error when it is unset or missing.
    """
    return occlude_with_objects(img, get_voc_occluders(voc_dir), rng)
