"""Crops that convert only the pixels they read (common/utils/warp_source.py) give the very patches
of the whole-image path, bit for bit: on random images with boxes inside, across and outside the
border, mirrored, rotated and scaled, and on every loader's samples of the synthetic trees."""
import cv2
import numpy as np
import pytest

from common.options import GeometryOptions
from common.utils import preprocessing, warp_source
from common.utils.preprocessing import BGRImage, crop_for_test, gen_trans_from_patch_cv, generate_patch_image
from tool.bench.data_loading import whole_image_generate_patch

GEOMETRY = GeometryOptions(input_img_shape=(256, 256), output_hm_shape=(64, 64, 64), bbox_3d_size=2.0,
                           camera_3d_size=2.5, focal=(5000.0, 5000.0), sigma=2.5)


def whole_image_patch(bgr, bbox, scale, rot, do_flip, out_shape):
    """The straightforward crop: convert the whole image to float32 RGB, mirror all of it, warp."""
    img = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32)
    x, y, w, h = (float(v) for v in bbox)
    c_x, c_y = x + 0.5 * w, y + 0.5 * h
    if do_flip:
        img = img[:, ::-1].copy()
        c_x = img.shape[1] - c_x - 1
    out_h, out_w = out_shape
    img2bb = gen_trans_from_patch_cv(c_x, c_y, w, h, out_w, out_h, scale, rot)
    return cv2.warpAffine(img, img2bb, (out_w, out_h), flags=cv2.INTER_LINEAR).astype(np.float32), img2bb


def same_bits(first, second):
    """Equal shape, dtype and bytes (0.0 and -0.0 differ, NaN never equals a number)."""
    first, second = np.ascontiguousarray(first), np.ascontiguousarray(second)
    return first.shape == second.shape and first.dtype == second.dtype and first.tobytes() == second.tobytes()


@pytest.fixture
def nan_canvas(monkeypatch):
    """Unset canvas pixels are NaN (255 for integer images), so a pixel the warp read without it being
    filled shows up in the patch."""
    def canvas(shape, dtype):
        return np.full(shape, np.nan if np.issubdtype(dtype, np.floating) else 255, dtype=dtype)
    monkeypatch.setattr(warp_source, 'uninitialised_canvas', canvas)


def random_crops(rng, width, height, count):
    """(bbox, scale, rot, do_flip) draws: boxes inside, across the border and wholly outside."""
    for _ in range(count):
        size = rng.uniform(0.05, 1.6) * max(width, height)
        aspect = rng.uniform(0.5, 2.0)
        c_x = rng.uniform(-0.4, 1.4) * width
        c_y = rng.uniform(-0.4, 1.4) * height
        bbox = np.array([c_x - size / 2, c_y - size * aspect / 2, size, size * aspect], np.float32)
        scale = float(rng.choice([1.0, rng.uniform(0.5, 1.6)]))
        rot = float(rng.choice([0.0, rng.uniform(-180.0, 180.0)]))
        yield bbox, scale, rot, bool(rng.random() < 0.5)


@pytest.mark.parametrize('width, height', [(1920, 1080), (1080, 1920), (640, 480), (97, 131)])
def test_region_crop_equals_whole_image_crop(width, height, nan_canvas):
    rng = np.random.default_rng(width * 7 + height)
    bgr = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    for bbox, scale, rot, do_flip in random_crops(rng, width, height, 60):
        for out_shape in ((256, 256), (256, 192)):
            expected, img2bb = whole_image_patch(bgr, bbox, scale, rot, do_flip, out_shape)
            patch, got_img2bb, _ = generate_patch_image(BGRImage(bgr), bbox, scale, rot, do_flip, out_shape)
            assert same_bits(got_img2bb, img2bb)
            assert same_bits(patch, expected), (bbox, scale, rot, do_flip, out_shape)


def test_boxes_touching_each_border_and_the_corners(nan_canvas):
    rng = np.random.default_rng(3)
    height, width = 300, 400
    bgr = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    size = 120.0
    for x in (-size, -size / 2, 0.0, width - size, width - size / 2, width - 1.0, float(width)):
        for y in (-size, 0.0, height - size, height - 1.0):
            for do_flip in (False, True):
                bbox = np.array([x, y, size, size], np.float32)
                expected, _ = whole_image_patch(bgr, bbox, 1.0, 0.0, do_flip, (256, 256))
                patch = generate_patch_image(BGRImage(bgr), bbox, 1.0, 0.0, do_flip, (256, 256))[0]
                assert same_bits(patch, expected), (x, y, do_flip)


def test_float_source_mirrored_through_the_canvas_equals_the_mirrored_image(nan_canvas):
    rng = np.random.default_rng(5)
    for dtype, shape in ((np.float32, (90, 150, 3)), (np.float64, (90, 150, 3)), (np.uint8, (90, 150, 3)),
                         (np.float32, (90, 150, 1)), (np.float32, (90, 150))):
        img = (rng.random(shape) * 255).astype(dtype)
        bbox = np.array([100.0, 20.0, 80.0, 60.0], np.float32)
        x, y, w, h = (float(v) for v in bbox)
        img2bb = gen_trans_from_patch_cv(img.shape[1] - (x + 0.5 * w) - 1, y + 0.5 * h, w, h, 64, 64, 1.2, 30.0)
        expected = cv2.warpAffine(np.ascontiguousarray(img[:, ::-1]), img2bb, (64, 64),
                                  flags=cv2.INTER_LINEAR).astype(np.float32)
        patch = generate_patch_image(img, bbox, 1.2, 30.0, True, (64, 64))[0]
        assert same_bits(patch, expected.reshape(64, 64, -1)), (dtype, shape)


def test_sampled_region_bounds():
    # Identity-scale 32x32 crop at (10, 20): output pixels map to columns 10..41 and rows 20..51,
    # and bilinear sampling also reads column 42 and row 52 (half-open ends 43, 53), plus the margin,
    # clipped to the image.
    img2bb = np.array([[1.0, 0.0, -10.0], [0.0, 1.0, -20.0]])
    assert warp_source.sampled_region(img2bb, (32, 32), 100, 100, margin=0) == (20, 53, 10, 43)
    assert warp_source.sampled_region(img2bb, (32, 32), 100, 100, margin=2) == (18, 55, 8, 45)
    assert warp_source.sampled_region(img2bb, (32, 32), 40, 30, margin=2) == (18, 40, 8, 30)
    outside = np.array([[1.0, 0.0, 500.0], [0.0, 1.0, 0.0]])      # the crop lies left of the image
    row0, row1, col0, col1 = warp_source.sampled_region(outside, (32, 32), 100, 100)
    assert col1 <= col0
    singular = np.zeros((2, 3))
    assert warp_source.sampled_region(singular, (32, 32), 100, 120) == (0, 100, 0, 120)


def test_crop_for_test_from_decoded_image_equals_float_image(nan_canvas):
    rng = np.random.default_rng(11)
    bgr = rng.integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    joints = rng.uniform(0, 600, size=(17, 3)).astype(np.float32)
    bbox = np.array([500.0, -40.0, 300.0, 300.0], np.float32)
    expected = crop_for_test(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32), bbox, joints, GEOMETRY)
    got = crop_for_test(BGRImage(bgr), bbox, joints, GEOMETRY)
    for first, second in zip(got, expected):
        assert same_bits(first, second)


def test_load_img_is_the_converted_read_image(tmp_path):
    rng = np.random.default_rng(2)
    path = tmp_path / 'photo.jpg'
    cv2.imwrite(str(path), rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8))
    decoded = preprocessing.read_image(path)
    assert decoded.pixels.dtype == np.uint8 and decoded.shape == (40, 50, 3)
    assert same_bits(decoded.pixels, cv2.imread(str(path)))
    assert same_bits(preprocessing.load_img(path), cv2.imread(str(path))[..., ::-1].astype(np.float32))


# ------------------------------------------------------------------ loaders on the synthetic trees
TRAIN_SETS = ('Human36M', 'MuCo', 'MSCOCO', 'MPII')
TEST_SETS = (('PW3D', 'test'), ('Human36M', 'test'), ('MSCOCO', 'val'))


def loader_samples(dataset_names, split_of):
    """Every sample of the named loaders (ToTensor inputs, seeded draws), flattened to arrays."""
    import torchvision.transforms as T
    from data.registry import dataset_class
    out = []
    for name in dataset_names:
        dataset = dataset_class(name)(T.ToTensor(), split_of(name))
        for index in range(len(dataset)):
            for part in dataset[index]:
                out.extend((key, np.asarray(value)) for key, value in sorted(part.items()))
    return out


def assert_loaders_match_whole_image_path(monkeypatch):
    """Samples of the current loaders equal those with the whole-image crop, bit for bit."""
    import data.sample_steps
    import data.Human36M.Human36M
    import data.MSCOCO.MSCOCO
    import data.PW3D.PW3D
    split = dict(TEST_SETS)
    current_train = loader_samples(TRAIN_SETS, lambda name: 'train')
    current_test = loader_samples([name for name, _ in TEST_SETS], split.get)
    for module in (data.sample_steps, data.Human36M.Human36M, data.MSCOCO.MSCOCO, data.PW3D.PW3D):
        monkeypatch.setattr(module, 'read_image', preprocessing.load_img)
    monkeypatch.setattr(preprocessing, 'generate_patch_image', whole_image_generate_patch)
    reference_train = loader_samples(TRAIN_SETS, lambda name: 'train')
    reference_test = loader_samples([name for name, _ in TEST_SETS], split.get)
    for current, reference in ((current_train, reference_train), (current_test, reference_test)):
        assert len(current) == len(reference) > 0
        for (key, value), (ref_key, ref_value) in zip(current, reference):
            assert key == ref_key and same_bits(value, ref_value), key


def test_loader_samples_unchanged_on_the_small_tree(data_cfg, monkeypatch, nan_canvas):
    data_cfg.seed = 0
    assert_loaders_match_whole_image_path(monkeypatch)


@pytest.mark.slow
def test_loader_samples_unchanged_on_the_full_size_tree(cfg_state, synthetic_smpl_dir, full_size_data_root,
                                                        monkeypatch, nan_canvas):
    cfg_state.smpl_model_dir = str(synthetic_smpl_dir)
    cfg_state.data_dir = str(full_size_data_root)
    cfg_state.seed = 0
    assert_loaders_match_whole_image_path(monkeypatch)


def test_reused_canvas_buffer_never_leaks_into_a_later_crop():
    """Two crops in a row share the thread's canvas buffer; the second is still the whole-image crop."""
    rng = np.random.default_rng(8)
    big = rng.integers(0, 256, size=(700, 900, 3), dtype=np.uint8)
    small = rng.integers(0, 256, size=(300, 400, 3), dtype=np.uint8)
    bbox_big = np.array([100.0, 50.0, 600.0, 600.0], np.float32)
    bbox_small = np.array([-50.0, -20.0, 200.0, 250.0], np.float32)   # sticks out: border pixels stay black
    generate_patch_image(BGRImage(big), bbox_big, 1.0, 10.0, True, (256, 256))
    patch = generate_patch_image(BGRImage(small), bbox_small, 1.0, 0.0, True, (256, 256))[0]
    assert same_bits(patch, whole_image_patch(small, bbox_small, 1.0, 0.0, True, (256, 256))[0])
    canvas = warp_source.uninitialised_canvas((10, 20, 3), np.float32)
    assert canvas.shape == (10, 20, 3) and canvas.dtype == np.float32


def test_released_canvas_buffer_is_not_reused():
    first = warp_source.uninitialised_canvas((10, 20, 3), np.float32)
    assert np.shares_memory(first, warp_source.uninitialised_canvas((5, 5, 3), np.float32))    # reused
    warp_source.release_canvas()
    again = warp_source.uninitialised_canvas((10, 20, 3), np.float32)
    assert again.shape == (10, 20, 3) and not np.shares_memory(first, again)
