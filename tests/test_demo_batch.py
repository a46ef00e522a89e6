"""The demo over many pictures: batched inference equal to one picture at a time, drawing at a
bounded size on very large images, and video in / video out."""
import json
import os

import cv2
import numpy as np
import pytest
import torch

from tests.test_demo import GEOMETRY, SquareNetwork, person, write_json
from tests.test_demo_sources import write_video

pytestmark = pytest.mark.usefixtures('cfg_state')


def quiet(*args):
    pass


class BigSquareNetwork(SquareNetwork):
    """SquareNetwork with a 0.5 m square 10 m away: 250 px wide through focal 5000."""

    def forward(self, inputs, targets, meta_info, mode, render=False):
        out = super().forward(inputs, targets, meta_info, mode, render)
        out['mesh_cam_render'] = out['mesh_cam_render'] * torch.tensor([5.0, 5.0, 1.0])
        return out


def coco_picture(folder, name, size, centres, rng, height_px=150):
    """Write a flat grey picture and return its COCO-results entries (image_id from the name)."""
    cv2.imwrite(str(folder / f'{name}.png'), np.full((size[0], size[1], 3), 60, np.uint8))
    return [{'image_id': int(name), 'keypoints': person(c, height_px, rng).ravel().tolist(), 'score': 0.9}
            for c in centres]


# ------------------------------------------------------------------------------ batching
@pytest.fixture(scope='module')
def random_network(synthetic_smpl_dir):
    """The real network, randomly initialised, small input geometry, eval mode, on the CPU."""
    from common.options import BodyModelPaths, GeometryOptions, ModelOptions
    from common.utils.smpl import SMPL
    from main.model import get_model
    geometry = GeometryOptions(input_img_shape=(128, 96), output_hm_shape=(32, 32, 24), bbox_3d_size=2,
                               camera_3d_size=2.5, focal=(5000, 4000), sigma=2.5)
    options = ModelOptions(geometry=geometry, body_model=BodyModelPaths(synthetic_smpl_dir, synthetic_smpl_dir),
                           resnet_type=50, imagenet_weights=None)
    torch.manual_seed(0)
    model = get_model(6890, 30, 'test', SMPL(options.body_model), options).eval()
    return model, geometry


class BatchRecorder(torch.nn.Module):
    """Wraps a network and records the batch size of every forward pass."""

    def __init__(self, model):
        super().__init__()
        self.model, self.sizes, self.mesh_face = model, [], model.mesh_face

    def forward(self, inputs, targets, meta_info, mode, render=False):
        self.sizes.append(inputs['img'].shape[0])
        return self.model(inputs, targets, meta_info, mode, render=render)

    def camera_translation(self, *args, **kwargs):
        return self.model.camera_translation(*args, **kwargs)


@pytest.mark.slow
def test_batched_outputs_equal_one_picture_at_a_time(tmp_path, random_network):
    from common.demo_inputs import iter_frames
    from common.demo_poses import pose_source
    from common.demo_run import OutputOptions, iter_demo, run_demo
    network, geometry = random_network
    rng = np.random.default_rng(0)
    folder = tmp_path / 'photos'
    folder.mkdir()
    entries = (coco_picture(folder, '1', (180, 260), [(70, 90), (190, 95)], rng)
               + coco_picture(folder, '2', (150, 200), [(100, 75)], rng)
               + coco_picture(folder, '3', (200, 240), [(60, 100), (170, 100)], rng))
    results = write_json(tmp_path / 'results.json', entries)
    source = pose_source(results, 'folder', str(folder))
    model = BatchRecorder(network)
    items = ((f, source.detections(f), source.origin(f)) for f in iter_frames(folder))
    batched = list(iter_demo(items, tmp_path / 'batched', model, geometry, OutputOptions(), batch_size=2,
                             log=quiet))
    # Picture 1 (2 people) fills a batch alone; pictures 2 and 3 wait together (3 people) and
    # run in chunks of 2 and 1, so picture 3's people land in different network passes.
    assert model.sizes == [2, 2, 1]
    assert [r.name for r in batched] == ['1', '2', '3']
    for result in batched:
        alone_dir = tmp_path / f'alone_{result.name}'
        alone = run_demo(str(folder / f'{result.name}.png'), results, alone_dir, network, geometry, log=quiet)
        together, single = json.load(open(result.paths['json'])), json.load(open(alone['json']))
        assert len(together['people']) == len(single['people']) > 0
        for a, b in zip(together['people'], single['people']):
            assert a['bbox'] == b['bbox'] and a['render_camera'] == b['render_camera']
            for key in ('smpl_pose', 'smpl_shape', 'cam_trans'):
                np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-5)
        for a, b in zip(result.paths['obj'], alone['obj']):
            np.testing.assert_allclose(np.loadtxt(a, usecols=(1, 2, 3), max_rows=6890),
                                       np.loadtxt(b, usecols=(1, 2, 3), max_rows=6890), atol=1e-5)
        rendered = cv2.imread(result.paths['render']).astype(int)
        assert np.abs(rendered - cv2.imread(alone['render']).astype(int)).mean() < 0.5


# ------------------------------------------------------------------------------ bounded drawing
def person_mask(picture, color):
    """Pixels whose chromaticity is the (shaded) person colour's."""
    picture = picture.astype(float)
    chroma = picture / np.maximum(picture.sum(2, keepdims=True), 1)
    return (np.abs(chroma - color / color.sum()).max(2) < 0.02) & (picture.sum(2) > 100)


def test_large_picture_is_drawn_on_a_bounded_canvas_and_the_meshes_still_align(tmp_path):
    """A 2000x1500 picture drawn at 400 px: the square of each person lands where the scaled
    camera puts it (centre (c + 0.5) s - 0.5, 250 px -> 50 px), and the same as the full-size
    drawing reduced afterwards."""
    from common.utils import vis
    rng = np.random.default_rng(1)
    height, width = 1500, 2000
    img_path = str(tmp_path / 'big.png')
    cv2.imwrite(img_path, np.full((height, width, 3), 60, np.uint8))
    poses = [person((600, 750), 900, rng), person((1400, 750), 900, rng)]
    pose_path = write_json(tmp_path / 'big.json', [{'image_id': 1, 'keypoints': p.ravel().tolist(), 'score': 0.9}
                                                   for p in poses])
    def draw(max_side, out):
        from common.demo import read_pose_file
        from common.demo_inputs import Frame
        from common.demo_run import OutputOptions, iter_demo
        from common.utils.preprocessing import read_image
        item = (Frame('big', read_image(img_path), img_path), read_pose_file(pose_path), pose_path)
        result = next(iter_demo([item], tmp_path / out, BigSquareNetwork(), GEOMETRY,
                                OutputOptions(render_max_side=max_side), log=quiet))
        return result.paths, result.rendered        # the drawing before JPEG compression

    small, rendered = draw(400, 'small')
    full, full_rendered = draw(0, 'full')
    assert rendered.shape == (300, 400, 3) and cv2.imread(small['pose_2d']).shape == (300, 400, 3)
    assert full_rendered.shape == (height, width, 3) and cv2.imread(full['render']).shape == (height, width, 3)
    summary = json.load(open(small['json']))
    assert summary['render_scale'] == [0.2, 0.2] and 'render_scale' not in json.load(open(full['json']))
    assert summary['people'] == json.load(open(full['json']))['people']      # parameters do not depend on it
    reduced_full = cv2.resize(full_rendered, (400, 300), interpolation=cv2.INTER_AREA)
    colors = vis.person_colors(2)
    for k, entry in enumerate(summary['people']):
        cx, cy = (np.asarray(entry['render_camera']['princpt']) + 0.5) * 0.2 - 0.5
        mask = person_mask(rendered, colors[k])
        ys, xs = np.nonzero(mask)
        assert abs(xs.min() - (cx - 25)) <= 1.5 and abs(xs.max() - (cx + 25)) <= 1.5
        assert abs(ys.min() - (cy - 25)) <= 1.5 and abs(ys.max() - (cy + 25)) <= 1.5
        assert mask.sum() > 0.95 * 50 * 50
        # The full-size drawing, reduced afterwards, has the square at the same place.
        ref_ys, ref_xs = np.nonzero(person_mask(reduced_full, colors[k]))
        # (one border row more or less on one side moves the centroid by 0.5 px)
        assert abs(xs.mean() - ref_xs.mean()) <= 0.6 and abs(ys.mean() - ref_ys.mean()) <= 0.6
        assert abs(xs.mean() - cx) < 0.5 and abs(ys.mean() - cy) < 0.5
    # The drawn 2D poses land where the scaled joints are.
    drawn = cv2.cvtColor(cv2.imread(small['pose_2d']), cv2.COLOR_BGR2RGB).astype(int)
    changed = np.abs(drawn - 60).sum(2) > 60
    for pose in poses:
        hits = [changed[int(round((y + 0.5) * 0.2 - 0.5)), int(round((x + 0.5) * 0.2 - 0.5))] for x, y, _ in pose]
        assert np.mean(hits) > 0.8


def test_a_picture_without_people_is_drawn_as_its_rgb_pixels_reduced(tmp_path):
    """The drawing of a frame with nobody in it is the file's picture in RGB, area-reduced to the
    bounded size (reference: OpenCV's own read, colour conversion and INTER_AREA resize of the
    RGB picture), and the picture itself at full size."""
    from common.demo_inputs import iter_frames
    from common.demo_run import OutputOptions, iter_demo
    rgb = np.random.default_rng(5).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    path = tmp_path / 'noise.png'
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    for max_side, expected in ((40, cv2.resize(rgb, (40, 30), interpolation=cv2.INTER_AREA)), (0, rgb)):
        items = [(frame, [], 'none') for frame in iter_frames(path)]
        (result,) = iter_demo(items, tmp_path / f'out{max_side}', None, GEOMETRY,
                              OutputOptions(render_max_side=max_side, write_pose_image=False), log=quiet)
        np.testing.assert_array_equal(result.rendered, expected)


def test_bounded_size_keeps_the_aspect_and_small_pictures():
    from common.utils import vis
    assert vis.bounded_size(4000, 6000, 1920) == (1280, 1920)
    assert vis.bounded_size(6000, 4000, 1920) == (1920, 1280)
    assert vis.bounded_size(1080, 1920, 1920) == (1080, 1920)
    assert vis.bounded_size(5000, 5000, 0) == (5000, 5000)
    focal, princpt = vis.resized_camera((5000, 5000), (99.5, 9.5), (0.5, 0.25))
    np.testing.assert_allclose(focal, [2500, 1250])
    np.testing.assert_allclose(princpt, [49.5, 2.0])      # (c + 0.5) s - 0.5


# ------------------------------------------------------------------------------ video
def test_video_in_rendered_frames_and_video_out(tmp_path):
    """A 3-frame video with OpenPose's per-frame files: per frame a render and a JSON (no OBJ
    or 2D-pose picture by default), one mp4 of the rendered frames, people where the poses are."""
    from main.demo import build_parser, check_inputs, run
    from common.utils import vis
    rng = np.random.default_rng(2)
    frames = [np.full((120, 160, 3), 60, np.uint8) for _ in range(3)]
    video = write_video(tmp_path / 'walk.mp4', frames, fps=8.0)
    poses_dir = tmp_path / 'openpose'
    poses_dir.mkdir()
    centres = [(50, 60), (80, 60), (110, 60)]
    for i, centre in enumerate(centres):
        pose = person(centre, 90, rng)
        people = [{'pose_keypoints_2d': pose.ravel().tolist()}] if i != 1 else []   # nobody in frame 1
        write_json(poses_dir / f'walk_{i:012d}_keypoints.json', {'people': people})
    out_dir = tmp_path / 'out'
    args = build_parser().parse_args(['--img', video, '--pose', str(poses_dir), '--model', 'unused.pth',
                                      '--batch_size', '2'])
    kind, source = check_inputs(args, 'cpu')
    paths = run(args, kind, source, SquareNetwork(), str(out_dir))
    names = [f'walk_{i:012d}' for i in range(3)]
    assert sorted(os.listdir(out_dir)) == sorted(
        [f'{n}_render.jpg' for n in names] + [f'{n}_smpl.json' for n in names] + ['walk_render.mp4'])
    assert paths['frames'] == 3 and paths['video'] == str(out_dir / 'walk_render.mp4')
    capture = cv2.VideoCapture(paths['video'])
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(8.0)
    decoded = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        decoded.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    capture.release()
    assert len(decoded) == 3 and decoded[0].shape == (120, 160, 3)
    color = vis.person_colors(1)[0]
    for i, name in enumerate(names):
        summary = json.load(open(out_dir / f'{name}_smpl.json'))
        assert summary['frame'] == i and summary['image'] == video
        assert summary['pose_file'] == str(poses_dir / f'{name}_keypoints.json')
        assert len(summary['people']) == (0 if i == 1 else 1)
        rendered = cv2.cvtColor(cv2.imread(str(out_dir / f'{name}_render.jpg')), cv2.COLOR_BGR2RGB)
        for picture in (rendered, decoded[i]):
            if i == 1:
                assert not person_mask(picture, color).any()
                continue
            x, y = np.rint(summary['people'][0]['render_camera']['princpt']).astype(int)
            assert person_mask(picture[y - 15:y + 15, x - 15:x + 15], color).mean() > 0.8
            assert summary['people'][0]['obj'] is None


def test_video_extras_write_objs_and_pose_pictures(tmp_path):
    from main.demo import build_parser, check_inputs, run
    rng = np.random.default_rng(3)
    video = write_video(tmp_path / 'clip.avi', [np.full((100, 100, 3), 60, np.uint8)] * 2)
    results = write_json(tmp_path / 'res.json', [
        {'image_id': i, 'keypoints': person((50, 50), 70, rng).ravel().tolist(), 'score': 0.9} for i in (0, 1)])
    args = build_parser().parse_args(['--img', video, '--pose', results, '--model', 'unused.pth', '--video_extras'])
    kind, source = check_inputs(args, 'cpu')
    run(args, kind, source, SquareNetwork(), str(tmp_path / 'out'))
    files = sorted(os.listdir(tmp_path / 'out'))
    for i in (0, 1):
        assert {f'clip_{i:012d}_2dpose.jpg', f'clip_{i:012d}_person0.obj'} <= set(files)
    assert 'clip_render.mp4' in files


def test_image_id_is_for_one_image(tmp_path):
    from main.demo import build_parser, check_inputs
    folder = tmp_path / 'photos'
    folder.mkdir()
    cv2.imwrite(str(folder / '1.png'), np.zeros((8, 8, 3), np.uint8))
    results = write_json(tmp_path / 'res.json', [])
    args = build_parser().parse_args(['--img', str(folder), '--pose', results, '--image_id', '1', '--model', 'm'])
    with pytest.raises(ValueError, match='--image_id picks the entries of one image.*is a folder'):
        check_inputs(args, 'cpu')
