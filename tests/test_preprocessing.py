"""Image loading, boxes, crops, augmentation parameters, IoU and occlusion (docs/METHOD.md,
"Images, boxes and crops")."""
import math
import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest

from common.utils import occlusion
from common.utils.preprocessing import (
    TestCrop, apply_affine, augmentation, compute_iou, crop_for_test, flip_img_joints,
    gen_trans_from_patch_cv, generate_patch_image, get_aug_config, get_bbox, in_bounds_mask, input_aspect_ratio,
    load_img, process_bbox, sanitize_bbox)
from common.options import AugmentOptions, GeometryOptions

GEOMETRY = GeometryOptions(input_img_shape=(256, 256), output_hm_shape=(64, 64, 64), bbox_3d_size=2.0,
                           camera_3d_size=2.5, focal=(5000.0, 5000.0), sigma=2.5)
SGRE_AUGMENT = AugmentOptions(scale_factor=0.0, rot_factor=0.0, color_factor=0.2, use_occlusion=False, voc_dir=None)


def to3x3(affine):
    return np.vstack([np.asarray(affine, np.float64), [0, 0, 1]])


# ------------------------------------------------------------------------- load_img
def test_load_img_rgb_float32(tmp_path):
    bgr = np.zeros((5, 7, 3), np.uint8)
    bgr[1, 2] = (0, 0, 255)      # pure red in OpenCV's BGR order
    path = tmp_path / 'red.png'
    cv2.imwrite(str(path), bgr)
    img = load_img(path)
    assert img.dtype == np.float32 and img.shape == (5, 7, 3)
    assert img[1, 2].tolist() == [255.0, 0.0, 0.0]
    assert load_img(path, order='BGR')[1, 2].tolist() == [0.0, 0.0, 255.0]


def test_load_img_greyscale_expanded(tmp_path):
    path = tmp_path / 'grey.png'
    cv2.imwrite(str(path), np.arange(12, dtype=np.uint8).reshape(3, 4) * 10)
    img = load_img(path)
    assert img.shape == (3, 4, 3)
    assert np.array_equal(img[..., 0], img[..., 2]) and img[2, 3, 1] == 110


def test_load_img_missing_and_corrupt(tmp_path):
    missing = tmp_path / 'nope.jpg'
    with pytest.raises(FileNotFoundError, match='nope.jpg'):
        load_img(missing)
    corrupt = tmp_path / 'broken.jpg'
    corrupt.write_bytes(b'\xff\xd8 this is not a jpeg at all' * 3)
    with pytest.raises(IOError, match='broken.jpg'):
        load_img(corrupt)
    # OpenCV decodes a truncated JPEG silently; load_img refuses it.
    full = tmp_path / 'full.jpg'
    cv2.imwrite(str(full), np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8))
    assert load_img(full).shape == (60, 80, 3)
    data = full.read_bytes()
    truncated = tmp_path / 'cut.jpg'
    truncated.write_bytes(data[:len(data) // 2])
    with pytest.raises(IOError, match='cut.jpg'):
        load_img(truncated)


# ---------------------------------------------------------------------------- boxes
def test_process_bbox_worked_example():
    assert sanitize_bbox([10, 20, 100, 50], 640, 480).tolist() == [10, 20, 99, 49]
    box = process_bbox([10, 20, 100, 50], 640, 480)
    assert box.dtype == np.float32
    np.testing.assert_allclose(box, [-2.375, -17.375, 123.75, 123.75], rtol=0, atol=1e-5)


def test_process_bbox_rejections_and_3dpw_mode():
    assert process_bbox([10, 20, 0, 50], 640, 480) is None            # w*h = 0
    assert process_bbox([10, 20, -5, 50], 640, 480) is None           # w*h < 0
    assert process_bbox([700, 20, 100, 50], 640, 480) is None         # right of the image
    assert process_bbox([10, 500, 100, 50], 640, 480) is None         # below the image
    # Test mode never rejects: a zero-size box stays (centre kept, size 0).
    box = process_bbox([10, 20, 0, 0], 640, 480, is_3dpw_test=True)
    np.testing.assert_allclose(box, [10, 20, 0, 0])
    box = process_bbox([700, 20, 100, 50], 640, 480, is_3dpw_test=True)
    assert box is not None


def test_process_bbox_shift_quirk_and_tall_box():
    # A box sticking out on the left is shifted right (x2 starts from the clamped x1).
    assert sanitize_bbox([-10, 0, 50, 40], 640, 480).tolist() == [0, 0, 49, 39]
    # Tall box: width is extended to the square, then 1.25x about the centre.
    box = process_bbox([100, 100, 21, 81], 640, 480)
    centre = (100 + 20 / 2, 100 + 80 / 2)
    np.testing.assert_allclose(box, [centre[0] - 50, centre[1] - 50, 100, 100], atol=1e-5)
    # Other input aspect ratio (W/H = 0.75): a square box becomes taller.
    portrait = GeometryOptions((256, 192), (64, 64, 48), 2.0, 2.5, (5000.0, 5000.0), 2.5)
    assert input_aspect_ratio(portrait) == 0.75
    box = process_bbox([0, 0, 61, 61], 640, 480, aspect_ratio=input_aspect_ratio(portrait))
    np.testing.assert_allclose(box[2:], [60 * 1.25, 80 * 1.25], atol=1e-5)
    np.testing.assert_allclose(box[:2] + box[2:] / 2, [30, 30], atol=1e-5)


def test_get_bbox_from_valid_joints():
    joints = np.array([[10, 20], [30, 60], [1000, -500], [20, 40]], np.float32)
    valid = np.array([1, 1, 0, 1])
    # extent x 10..30 (w 20), y 20..60 (h 40); centre (20, 40); enlarged 1.2x
    np.testing.assert_allclose(get_bbox(joints, valid), [8, 16, 24, 48], atol=1e-5)
    np.testing.assert_allclose(get_bbox(joints, valid[:, None].astype(np.float32)), [8, 16, 24, 48], atol=1e-5)
    with pytest.raises(ValueError, match='no valid joint'):
        get_bbox(joints, np.zeros(4))


def test_compute_iou_hand_cases():
    assert compute_iou([0, 0, 10, 10], [5, 0, 10, 10]) == pytest.approx(50 / (150 + 1e-5))
    assert compute_iou([0, 0, 10, 10], [0, 0, 10, 10]) == pytest.approx(100 / (100 + 1e-5))
    assert compute_iou([0, 0, 10, 10], [10, 0, 5, 5]) == 0.0          # touching
    assert compute_iou([0, 0, 10, 10], [20, 20, 5, 5]) == 0.0         # disjoint
    assert compute_iou([0, 0, 10, 10], [2, 2, 4, 4]) == pytest.approx(16 / (100 + 1e-5))  # contained
    boxes = np.array([[0, 0, 10, 10], [5, 0, 10, 10], [20, 20, 5, 5]], np.float32)
    matrix = compute_iou(boxes[:, None], boxes[None])
    assert matrix.shape == (3, 3)
    assert matrix[0, 1] == pytest.approx(1 / 3, rel=1e-5) and matrix[1, 0] == matrix[0, 1]
    assert matrix[0, 2] == 0.0


# ------------------------------------------------------------------------ crop maps
def closed_form_img2bb(bbox, scale, rot_deg, out_hw, centre_x=None):
    """T(p) = diag(Wo/ws, Ho/hs) Rot(-phi) (p - c) + (Wo/2, Ho/2), as 3x3 (the crop's defining map)."""
    x, y, w, h = bbox
    c = np.array([x + w / 2 if centre_x is None else centre_x, y + h / 2])
    phi = math.radians(rot_deg)
    rot = np.array([[math.cos(-phi), -math.sin(-phi)], [math.sin(-phi), math.cos(-phi)]])
    lin = np.diag([out_hw[1] / (scale * w), out_hw[0] / (scale * h)]) @ rot
    return np.vstack([np.hstack([lin, (np.array([out_hw[1] / 2, out_hw[0] / 2]) - lin @ c)[:, None]]), [0, 0, 1]])


@pytest.mark.parametrize('scale,rot', [(1.0, 0.0), (0.8, 25.0)])
def test_affine_matches_closed_form_and_inverts(scale, rot):
    bbox = [30.5, 12.25, 80.0, 80.0]
    img2bb = gen_trans_from_patch_cv(70.5, 52.25, 80, 80, 256, 256, scale, rot)
    bb2img = gen_trans_from_patch_cv(70.5, 52.25, 80, 80, 256, 256, scale, rot, inv=True)
    assert img2bb.dtype == np.float32 and img2bb.shape == (2, 3)
    np.testing.assert_allclose(to3x3(img2bb), closed_form_img2bb(bbox, scale, rot, (256, 256)), atol=2e-4)
    np.testing.assert_allclose(to3x3(bb2img) @ to3x3(img2bb), np.eye(3), atol=1e-5)


def test_generate_patch_centre_corners_and_content():
    height, width = 48, 64
    # Linear ramp image: channel 0 = column, channel 1 = row, so bilinear sampling is exact.
    cols, rows = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    img = np.stack([cols, rows, np.zeros_like(cols)], axis=2)
    bbox = [10.0, 4.0, 32.0, 32.0]
    patch, img2bb, bb2img = generate_patch_image(img, bbox, 1.0, 0.0, False, (256, 256))
    assert patch.shape == (256, 256, 3) and patch.dtype == np.float32
    np.testing.assert_allclose(apply_affine([[26.0, 20.0]], img2bb), [[128, 128]], atol=1e-4)
    np.testing.assert_allclose(apply_affine([[10.0, 4.0], [42.0, 36.0]], img2bb), [[0, 0], [256, 256]], atol=1e-4)
    # Crop pixel (x, y) shows the source pixel bb2img(x, y) (pixel centres at integers).
    for x, y in [(0, 0), (100, 37), (200, 250), (255, 128)]:
        src = apply_affine([[x, y]], bb2img)[0]
        np.testing.assert_allclose(patch[y, x, :2], src, atol=0.05)


def test_generate_patch_flip_maps_mirrored_pixels():
    height, width = 48, 64
    cols, rows = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    img = np.stack([cols, rows, np.zeros_like(cols)], axis=2)
    bbox = [10.0, 4.0, 32.0, 32.0]
    patch, img2bb, bb2img = generate_patch_image(img, bbox, 1.0, 0.0, True, (256, 256))
    # The box centre is mirrored: c_x -> W - 1 - c_x.
    np.testing.assert_allclose(apply_affine([[width - 1 - 26.0, 20.0]], img2bb), [[128, 128]], atol=1e-4)
    np.testing.assert_allclose(to3x3(img2bb), closed_form_img2bb(bbox, 1.0, 0.0, (256, 256), width - 1 - 26.0),
                               atol=2e-4)
    # Original pixel (u, v) appears in the crop at img2bb(W - 1 - u, v).
    for u, v in [(12.0, 6.0), (30.0, 20.0), (41.0, 33.0)]:
        x, y = apply_affine([[width - 1 - u, v]], img2bb)[0]
        xi, yi = int(round(x)), int(round(y))
        assert abs(x - xi) < 1e-3 and abs(y - yi) < 1e-3
        np.testing.assert_allclose(patch[yi, xi, :2], [u, v], atol=0.05)


def test_flip_helpers():
    joints = np.array([[1, 2, 1], [5, 6, 0], [9, 9, 1]], np.float32)
    flipped = flip_img_joints(joints, 10, [(0, 1)])
    assert flipped.tolist() == [[4, 6, 0], [8, 2, 1], [0, 9, 1]]
    assert joints[0, 0] == 1   # input untouched


def test_in_bounds_mask():
    pts = np.array([[0, 0, 0], [63.9, 63.9, 63.9], [64, 10, 10], [-0.1, 5, 5], [5, 5, 64]], np.float32)
    assert in_bounds_mask(pts, (64, 64, 64)).ravel().tolist() == [1, 1, 0, 0, 1]
    assert in_bounds_mask(pts, (64, 64, 64), check_depth=True).ravel().tolist() == [1, 1, 0, 0, 0]
    # The shape is (D, H, W): x is checked against W, y against H.
    assert in_bounds_mask(np.array([[40.0, 20.0]]), (64, 32, 48)).ravel().tolist() == [1]
    assert in_bounds_mask(np.array([[20.0, 40.0]]), (64, 32, 48)).ravel().tolist() == [0]


# --------------------------------------------------------------------- augmentation
def test_get_aug_config_draw_order_and_formula():
    seed = 123
    for _ in range(20):
        seed += 1
        scale, rot, color, flip = get_aug_config(np.random.default_rng(seed),
                                                   AugmentOptions(0.25, 30, 0.2, False, None))
        ref = np.random.default_rng(seed)
        exp_scale = 1 + 0.25 * min(max(ref.standard_normal(), -1), 1)
        exp_rot = 30 * min(max(ref.standard_normal(), -2), 2) if ref.random() <= 0.6 else 0.0
        exp_color = [0.8 + 0.4 * ref.random() for _ in range(3)]
        exp_flip = ref.random() <= 0.5
        assert scale == pytest.approx(exp_scale) and rot == pytest.approx(exp_rot)
        np.testing.assert_allclose(color, exp_color)
        assert flip == exp_flip


def test_get_aug_config_sgre_defaults():
    rng = np.random.default_rng(0)
    draws = [get_aug_config(rng, SGRE_AUGMENT) for _ in range(2000)]
    assert all(d[0] == 1.0 and d[1] == 0.0 for d in draws)
    colors = np.array([d[2] for d in draws])
    assert colors.min() >= 0.8 and colors.max() < 1.2
    assert 0.45 < np.mean([d[3] for d in draws]) < 0.55


def test_augmentation_train_and_test_split():
    rng = np.random.default_rng(5)
    img = rng.uniform(0, 255, (40, 50, 3)).astype(np.float32)
    bbox = process_bbox([5, 5, 30, 30], 50, 40)
    patch, img2bb, bb2img, rot, flip = augmentation(img, bbox, (256, 256))
    ref_patch, ref_img2bb, _ = generate_patch_image(img, bbox, 1.0, 0.0, False, (256, 256))
    assert rot == 0 and flip is False
    np.testing.assert_array_equal(patch, ref_patch)
    np.testing.assert_array_equal(img2bb, ref_img2bb)
    out1 = augmentation(img, bbox, (256, 256), SGRE_AUGMENT, np.random.default_rng(9))
    out2 = augmentation(img, bbox, (256, 256), SGRE_AUGMENT, np.random.default_rng(9))
    np.testing.assert_array_equal(out1[0], out2[0])
    _, _, color, do_flip = get_aug_config(np.random.default_rng(9), SGRE_AUGMENT)
    crop = generate_patch_image(img, bbox, 1.0, 0.0, do_flip, (256, 256))[0]
    np.testing.assert_allclose(out1[0], np.clip(crop * color, 0, 255), rtol=1e-6)
    assert out1[4] == do_flip
    with pytest.raises(ValueError, match='rng'):
        augmentation(img, bbox, (256, 256), SGRE_AUGMENT, None)


# ------------------------------------------------------------------------ occlusion
def test_voc_palette_known_colours():
    palette = occlusion.voc_palette()
    assert palette[1].tolist() == [128, 0, 0] and palette[2].tolist() == [0, 128, 0]
    assert palette[3].tolist() == [128, 128, 0] and palette[15].tolist() == [192, 128, 128]


def test_occlusion_needs_voc_dir(tmp_path):
    img = np.zeros((40, 40, 3), np.float32)
    bbox = np.array([0, 0, 40, 40], np.float32)
    unset = AugmentOptions(0.0, 0.0, 0.2, use_occlusion=True, voc_dir=None)
    with pytest.raises(ValueError, match='voc_dir'):
        augmentation(img, bbox, (256, 256), unset, np.random.default_rng(0))
    missing = AugmentOptions(0.0, 0.0, 0.2, use_occlusion=True, voc_dir=str(tmp_path / 'VOC2012'))
    with pytest.raises(FileNotFoundError, match='Annotations'):
        augmentation(img, bbox, (256, 256), missing, np.random.default_rng(0))
    # An un-augmented crop never occludes, so it needs no VOC folder.
    augmentation(img, bbox, (256, 256))


def write_tiny_voc(root):
    """One segmented image with a kept object (label 1), a truncated one (label 2)
    and a tiny one (label 3, < 500 px)."""
    for sub in ('Annotations', 'JPEGImages', 'SegmentationObject'):
        (root / sub).mkdir(parents=True)
    img = np.full((80, 100, 3), 40, np.uint8)
    img[10:50, 10:60] = (0, 200, 0)  # BGR green object
    cv2.imwrite(str(root / 'JPEGImages' / 'a.jpg'), img)
    labels = np.zeros((80, 100), np.uint8)
    labels[12:48, 12:58] = 1          # inside its box (10, 10, 60, 50) with a margin
    labels[55:75, 60:95] = 2
    labels[60:70, 5:15] = 3
    labels[9, 10:60] = 255   # void border
    palette = occlusion.voc_palette()
    cv2.imwrite(str(root / 'SegmentationObject' / 'a.png'), palette[labels][:, :, ::-1].copy())
    ann = ET.Element('annotation')
    ET.SubElement(ann, 'filename').text = 'a.jpg'
    ET.SubElement(ann, 'segmented').text = '1'
    for box, truncated in [((10, 10, 60, 50), 0), ((60, 55, 95, 75), 1), ((5, 60, 15, 70), 0)]:
        obj = ET.SubElement(ann, 'object')
        ET.SubElement(obj, 'name').text = 'thing'
        ET.SubElement(obj, 'difficult').text = '0'
        ET.SubElement(obj, 'truncated').text = str(truncated)
        bnd = ET.SubElement(obj, 'bndbox')
        for key, value in zip(('xmin', 'ymin', 'xmax', 'ymax'), box):
            ET.SubElement(bnd, key).text = str(value)
    ET.ElementTree(ann).write(str(root / 'Annotations' / 'a.xml'))


def test_voc_occluders_extracted_and_pasted(tmp_path):
    root = tmp_path / 'VOC2012'
    write_tiny_voc(root)
    occluders = occlusion.get_voc_occluders(str(root))
    assert len(occluders) == 1                      # truncated and tiny objects dropped
    occ = occluders[0]
    assert occ.shape == (20, 25, 4) and occ.dtype == np.uint8   # 40x50 box halved
    # alpha: 0 outside the mask, 192 on its border (8x8 erosion), 255 inside
    assert occ[0, 12, 3] == 0 and occ[1, 12, 3] == 192 and occ[10, 12, 3] == 255
    assert occ[10, 12, 1] > 150 and occ[10, 12, 0] < 60          # RGB order: green
    assert occlusion.get_voc_occluders(str(root)) is occluders   # cached

    img = np.zeros((64, 64, 3), np.float32)
    out1 = occlusion.occlude_with_objects(img, occluders, np.random.default_rng(3))
    out2 = occlusion.occlude_with_objects(img, occluders, np.random.default_rng(3))
    np.testing.assert_array_equal(out1, out2)
    assert out1[..., 1].max() > 150 and img.max() == 0          # pasted into a copy
    # Occluded pixels lie within the central region the centres are drawn from, widened
    # by the largest possible half-size (0.25 * 64).
    ys, xs = np.nonzero(out1[..., 1] > 0)
    assert xs.min() >= 8 - 17 and xs.max() <= 56 + 17

    bbox = np.array([0, 0, 64, 64], np.float32)
    occluding = AugmentOptions(0.0, 0.0, 0.2, use_occlusion=True, voc_dir=str(root))
    patch = augmentation(img, bbox, (64, 64), occluding, np.random.default_rng(1))[0]
    assert patch[..., 1].max() > 100
    assert augmentation(img, bbox, (64, 64), SGRE_AUGMENT, np.random.default_rng(1))[0].max() == 0


# -------------------------------------------------------------------- test-time crop
def test_crop_for_test_maps_box_onto_the_input_and_joints_to_heatmap_units():
    """A square box is scaled onto the 256x256 crop; joints follow (crop px / 4), extra columns kept."""
    rng = np.random.default_rng(2)
    img = rng.uniform(0, 255, (120, 160, 3)).astype(np.float32)
    bbox = np.array([20.0, 10.0, 100.0, 100.0], np.float32)       # centre (70, 60), 2.56 crop px per px
    joints = np.array([[70, 60, 0.9, 7], [20, 10, 0.5, 8], [120, 110, 0.1, 9]], np.float32)
    crop = crop_for_test(img, bbox, joints, GEOMETRY)
    assert isinstance(crop, TestCrop)
    assert crop.patch.shape == (256, 256, 3) and crop.patch.dtype == np.float32
    assert crop.joints_hm.dtype == np.float32 and crop.joints_hm.shape == (3, 4)
    expected_xy = ((joints[:, :2] - [70, 60]) * 2.56 + 128) / 4
    np.testing.assert_allclose(crop.joints_hm[:, :2], expected_xy, atol=1e-3)
    np.testing.assert_array_equal(crop.joints_hm[:, 2:], joints[:, 2:])
    np.testing.assert_allclose(to3x3(crop.bb2img) @ to3x3(crop.img2bb), np.eye(3), atol=1e-4)
    # Crop pixel (128, 128) samples the box centre; a pixel one crop pixel off samples 1/2.56 px away.
    np.testing.assert_allclose(crop.patch[128, 128], img[60, 70], atol=1e-3)
    # The same crop as the un-augmented path of the training code.
    patch, img2bb, _, _, _ = augmentation(img, bbox, (256, 256))
    np.testing.assert_array_equal(crop.patch, patch)
    np.testing.assert_array_equal(crop.img2bb, img2bb)


def test_crop_for_test_heatmap_units_follow_the_geometry():
    img = np.zeros((50, 50, 3), np.float32)
    geometry = GeometryOptions((128, 64), (8, 32, 16), 2.0, 2.5, (5000.0, 5000.0), 2.5)
    bbox = np.array([0.0, 0.0, 20.0, 40.0], np.float32)
    crop = crop_for_test(img, bbox, np.array([[10.0, 20.0], [0.0, 0.0]]), geometry)
    assert crop.patch.shape == (128, 64, 3)
    np.testing.assert_allclose(crop.joints_hm, [[8, 16], [0, 0]], atol=1e-4)   # 64/16 and 128/32 px per cell
