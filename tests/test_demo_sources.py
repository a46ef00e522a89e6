"""The demo's inputs: image folders and video frames, OpenPose folders, COCO results of many
pictures, and the optional rtmlib estimator (driven by tiny ONNX models built here)."""
import json
import os

import cv2
import numpy as np
import pytest

from tests.test_demo import COCO17_TO_SMPL30, GEOMETRY, SquareNetwork, person, ref_bbox, ref_smpl30, write_json

pytestmark = pytest.mark.usefixtures('cfg_state')


def write_video(path, frames, fps=10.0):
    """Write uint8 RGB frames with OpenCV's mp4v encoder; returns the path as str."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'mp4v'), fps, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return str(path)


def grey_frames(count, height=48, width=64):
    return [np.full((height, width, 3), 30 + 40 * i, np.uint8) for i in range(count)]


# ------------------------------------------------------------------------------ pictures
def test_folder_frames_in_name_order_and_clashing_stems(tmp_path):
    from common.demo_inputs import InputError, check_input, input_kind, iter_frames
    folder = tmp_path / 'photos'
    folder.mkdir()
    cv2.imwrite(str(folder / 'b.png'), np.full((6, 8, 3), 200, np.uint8))
    cv2.imwrite(str(folder / 'a.jpg'), np.full((5, 7, 3), 100, np.uint8))
    (folder / 'notes.txt').write_text('not a picture')
    assert input_kind(folder) == 'folder' and input_kind(folder / 'a.jpg') == 'image'
    assert input_kind(tmp_path / 'clip.MP4') == 'video'
    assert check_input(folder) == 'folder'
    frames = list(iter_frames(folder))
    assert [(f.name, f.img.shape, f.index) for f in frames] == [('a', (5, 7, 3), None), ('b', (6, 8, 3), None)]
    assert frames[1].source == str(folder / 'b.png') and abs(frames[1].img.pixels.mean() - 200) < 1
    cv2.imwrite(str(folder / 'a.png'), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(InputError, match='a.jpg / a.png'):
        check_input(folder)
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(InputError, match='No images'):
        check_input(empty)


def test_video_frames_are_named_like_openpose(tmp_path):
    from common.demo_inputs import check_input, iter_frames, video_fps
    path = write_video(tmp_path / 'clip.mp4', grey_frames(4), fps=12.0)
    assert check_input(path) == 'video' and video_fps(path) == pytest.approx(12.0)
    frames = list(iter_frames(path))
    assert [f.name for f in frames] == [f'clip_{i:012d}' for i in range(4)]
    assert [f.index for f in frames] == [0, 1, 2, 3]
    for i, frame in enumerate(frames):
        assert frame.img.shape == (48, 64, 3) and frame.img.pixels.dtype == np.uint8
        assert abs(frame.img.pixels.mean() - (30 + 40 * i)) < 4        # lossy codec: close, not equal


def test_pictures_are_kept_as_decoded_bgr_pixels(tmp_path):
    """An image frame holds exactly the file's pixels in OpenCV's BGR order; a video frame of a
    red picture (RGB 220, 30, 30) holds it BGR too: red is the last channel."""
    from common.demo_inputs import iter_frames
    from common.utils.preprocessing import BGRImage
    bgr = np.random.default_rng(2).integers(0, 256, (9, 13, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / 'noise.png'), bgr)                 # PNG: lossless
    (picture,) = iter_frames(tmp_path / 'noise.png')
    assert isinstance(picture.img, BGRImage)
    np.testing.assert_array_equal(picture.img.pixels, bgr)
    red = np.zeros((48, 64, 3), np.uint8) + np.array([220, 30, 30], np.uint8)
    for frame in iter_frames(write_video(tmp_path / 'red.mp4', [red] * 2)):
        assert isinstance(frame.img, BGRImage)
        blue, _, r = frame.img.pixels.reshape(-1, 3).mean(0)
        assert abs(r - 220) < 10 and abs(blue - 30) < 10


def test_unreadable_video_is_named(tmp_path):
    from common.errors import ImageFileError
    from common.demo_inputs import check_input
    broken = tmp_path / 'broken.mp4'
    broken.write_bytes(b'not a video at all')
    with pytest.raises(ImageFileError, match='broken.mp4'):
        check_input(broken)


def test_video_output_temporaries_are_per_writer_and_a_dead_writers_is_cleaned_up(tmp_path):
    """Two writers into one folder get different temporary files, both ending in .mp4 and
    owned by this process; a killed run's leftover is removed by the next writer, another
    live writer's is kept, and the finished video holds the frames written."""
    from common.demo_inputs import VideoOutput
    from common.utils.files import temp_owner_pid
    from tests.test_files import dead_pid
    target = tmp_path / 'walk_render.mp4'
    first, second = VideoOutput(target, 8.0), VideoOutput(target, 8.0)
    assert first.tmp != second.tmp and first.tmp.parent == tmp_path
    for writer in (first, second):
        assert writer.tmp.name.startswith('.walk_render.mp4.tmp-') and writer.tmp.suffix == '.mp4'
        assert temp_owner_pid(writer.tmp.name) == os.getpid()
    killed = tmp_path / f'.walk_render.mp4.tmp-{dead_pid()}-0a1b2c3d.mp4'
    live = tmp_path / f'.walk_render.mp4.tmp-{os.getppid()}-00ff00ff.mp4'
    for leftover in (killed, live):
        leftover.write_bytes(b'half a video')
    for image in grey_frames(3):
        first.write(image)
    assert not killed.exists() and live.exists()
    assert first.close() == str(target) and not first.tmp.exists()
    second.abort()
    capture = cv2.VideoCapture(str(target))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 3
    capture.release()


# ------------------------------------------------------------------------------ pose sources
def frame(name, index=None, source=None):
    from common.demo_inputs import Frame
    from common.utils.preprocessing import BGRImage
    return Frame(name, BGRImage(np.zeros((4, 4, 3), np.uint8)), source or f'{name}.jpg', index)


def test_openpose_folder_reads_each_pictures_file(tmp_path):
    from common.demo import PoseFileError
    from common.demo_poses import OpenPoseFolder, pose_source
    rng = np.random.default_rng(0)
    pose = person((50, 50), 60, rng)
    write_json(tmp_path / 'clip_000000000001_keypoints.json',
               {'people': [{'pose_keypoints_2d': pose.ravel().tolist()}]})
    source = pose_source(str(tmp_path), 'video', 'clip.mp4')
    assert isinstance(source, OpenPoseFolder)
    dets = source.detections(frame('clip_000000000001', 1, 'clip.mp4'))
    np.testing.assert_array_equal(dets[0].joints, pose)
    assert source.origin(frame('clip_000000000001', 1)) == str(tmp_path / 'clip_000000000001_keypoints.json')
    with pytest.raises(PoseFileError, match='clip_000000000002_keypoints.json .*frame 2'):
        source.detections(frame('clip_000000000002', 2, 'clip.mp4'))


def test_coco_results_map_ids_by_numeric_stem_or_frame_number(tmp_path):
    from common.demo import PoseFileError
    from common.demo_poses import CocoResults, pose_source
    rng = np.random.default_rng(1)
    poses = [person((40 + 10 * i, 50), 60, rng) for i in range(4)]
    path = write_json(tmp_path / 'res.json', [
        {'image_id': iid, 'keypoints': p.ravel().tolist(), 'score': 0.9} for iid, p in zip((7, '7', 3, 12), poses)])
    source = pose_source(path, 'folder', str(tmp_path))
    assert isinstance(source, CocoResults)
    # '000007' -> 7: both the integer and the string id 7 belong to it, in file order.
    dets = source.detections(frame('000007'))
    assert [d.index for d in dets] == [0, 1] and {d.layout for d in dets} == {'coco-results'}
    np.testing.assert_array_equal(dets[1].joints, poses[1])
    assert [d.index for d in source.detections(frame('clip_000000000003', 3, 'clip.mp4'))] == [2]
    with pytest.raises(PoseFileError, match='not a number.*--coco_images'):
        source.detections(frame('holiday'))
    with pytest.raises(PoseFileError, match='no entry with image_id 5'):
        source.detections(frame('5'))


def test_coco_results_map_ids_by_image_list(tmp_path):
    from common.demo import PoseFileError
    from common.demo_poses import pose_source
    rng = np.random.default_rng(2)
    poses = [person((40, 50), 60, rng), person((60, 50), 60, rng)]
    path = write_json(tmp_path / 'res.json', [
        {'image_id': 101, 'keypoints': poses[0].ravel().tolist(), 'score': 0.9},
        {'image_id': 102, 'keypoints': poses[1].ravel().tolist(), 'score': 0.9}])
    images = write_json(tmp_path / 'images.json', {'images': [
        {'id': 101, 'file_name': 'val/holiday.jpg'}, {'id': 102, 'file_name': 'beach.png'},
        {'id': 103, 'file_name': 'empty.jpg'}, {'id': 104, 'file_name': 'twice.jpg'},
        {'id': 105, 'file_name': 'other/twice.jpg'}]})
    source = pose_source(path, 'folder', str(tmp_path), coco_images=images)
    assert [d.index for d in source.detections(frame('holiday'))] == [0]
    assert [d.index for d in source.detections(frame('beach'))] == [1]
    assert source.detections(frame('empty')) == []               # listed, nobody detected
    with pytest.raises(PoseFileError, match='no image named unknown'):
        source.detections(frame('unknown'))
    with pytest.raises(PoseFileError, match='2 times'):
        source.detections(frame('twice'))


def test_one_image_pose_file_for_many_pictures_is_refused(tmp_path):
    from common.demo import PoseFileError
    from common.demo_poses import SingleFile, pose_source
    path = write_json(tmp_path / 'p.json', {'people': []})
    with pytest.raises(PoseFileError, match='one image.*folder'):
        pose_source(path, 'folder', 'photos')
    assert isinstance(pose_source(path, 'image', 'a.jpg'), SingleFile)


# ------------------------------------------------------------------------------ estimator
DET_HW = (64, 96)                  # detector input (H, W)
POSE_HW = (32, 24)                 # pose input (H, W); SimCC bins are twice as many
DET_BOXES = [[10.0, 4.0, 34.0, 36.0, 0.9],     # x1, y1, x2, y2 in detector pixels, score
             [50.0, 8.0, 68.0, 32.0, 0.8],
             [0.0, 0.0, 5.0, 5.0, 0.1]]        # below rtmlib's 0.3: dropped
PEAKS_X = np.array([4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34, 36])
PEAKS_Y = np.array([60, 56, 52, 48, 44, 40, 36, 32, 28, 24, 20, 16, 12, 8, 6, 4, 2])


def constant_onnx(path, input_hw, outputs):
    """An ONNX model with one image input (1, 3, H, W) that returns fixed tensors.

    Each output is ``constant + 0 * sum(input)``, so onnxruntime runs the input through the graph.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    nodes = [helper.make_node('ReduceSum', ['input'], ['total'], keepdims=0),
             helper.make_node('Mul', ['total', 'zero'], ['nothing'])]
    inits = [numpy_helper.from_array(np.zeros((), np.float32), 'zero')]
    values = []
    for name, array in outputs.items():
        inits.append(numpy_helper.from_array(array.astype(np.float32), f'{name}_value'))
        nodes.append(helper.make_node('Add', [f'{name}_value', 'nothing'], [name]))
        values.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(array.shape)))
    graph = helper.make_graph(nodes, 'fixed', [helper.make_tensor_value_info(
        'input', TensorProto.FLOAT, [1, 3, *input_hw])], values, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def tiny_estimator_models(folder, keypoints=17):
    """A detector giving ``DET_BOXES`` (with NMS built in: rows of x1, y1, x2, y2, score) and a
    SimCC pose model whose peaks sit at ``PEAKS_X`` / ``PEAKS_Y`` for every person."""
    det = constant_onnx(folder / 'det.onnx', DET_HW, {'dets': np.array([DET_BOXES])})
    simcc_x = np.zeros((1, keypoints, 2 * POSE_HW[1]))
    simcc_y = np.zeros((1, keypoints, 2 * POSE_HW[0]))
    simcc_x[0, np.arange(17), PEAKS_X] = 0.8
    simcc_y[0, np.arange(17), PEAKS_Y] = 0.6
    pose = constant_onnx(folder / 'pose.onnx', POSE_HW, {'simcc_x': simcc_x, 'simcc_y': simcc_y})
    return det, pose


def expected_keypoints(img_hw):
    """COCO-17 poses the tiny models must give on a picture of ``img_hw``, worked out from
    the top-down recipe: detector boxes scaled back by the letterbox ratio; box centre, size
    x1.25, widened or heightened to the pose input's aspect; SimCC bin / 2 in input pixels."""
    ratio = min(DET_HW[0] / img_hw[0], DET_HW[1] / img_hw[1])
    poses = []
    for x1, y1, x2, y2, score in DET_BOXES:
        if score <= 0.3:
            continue
        x1, y1, x2, y2 = np.array([x1, y1, x2, y2]) / ratio
        centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
        w, h = (x2 - x1) * 1.25, (y2 - y1) * 1.25
        aspect = POSE_HW[1] / POSE_HW[0]
        w, h = (w, w / aspect) if w > h * aspect else (h * aspect, h)
        xy = np.stack([PEAKS_X / 2 / POSE_HW[1] * w, PEAKS_Y / 2 / POSE_HW[0] * h], 1) + centre - [w / 2, h / 2]
        poses.append(np.concatenate([xy, np.full((17, 1), 0.7)], 1))
    return np.array(poses)


@pytest.fixture
def rtmlib_available():
    for name in ('onnx', 'onnxruntime', 'rtmlib'):
        pytest.importorskip(name)


def test_estimator_plumbing_with_fixed_output_onnx_models(tmp_path, rtmlib_available):
    """Proves the plumbing, not detection quality: rtmlib's YOLOX and RTMPose tools, fed two
    ONNX models that return fixed boxes and fixed SimCC peaks, give exactly the COCO-17 poses
    that follow from those numbers, and the demo turns them into people like COCO results."""
    from common.demo import select_people
    from common.demo_poses import ESTIMATOR_LAYOUT, EstimatorPoses
    from common.demo_run import OutputOptions, iter_demo
    from common.pose_estimator import load_estimator
    det, pose = tiny_estimator_models(tmp_path)
    estimator = load_estimator(det, pose, 'cpu', cache_dir=tmp_path / 'no_cache')
    from common.utils.preprocessing import BGRImage
    img = np.random.default_rng(3).integers(0, 255, (120, 200, 3)).astype(np.uint8)
    expected = expected_keypoints(img.shape[:2])
    np.testing.assert_allclose(estimator(img), expected, atol=1e-3)

    source = EstimatorPoses(estimator)
    picture = frame('street')
    picture.img = BGRImage(img)
    dets = source.detections(picture)
    assert [d.layout for d in dets] == [ESTIMATOR_LAYOUT] * 2
    assert 'det.onnx' in source.origin(picture) and 'pose.onnx' in source.origin(picture)
    people, skipped = select_people(dets, 200, 120, GEOMETRY)
    assert skipped == [] and len(people) == 2
    for k, p in enumerate(people):
        ref = ref_smpl30(expected[k], COCO17_TO_SMPL30, False)
        np.testing.assert_allclose(p.joints_img, ref, atol=1e-3)
        np.testing.assert_allclose(p.bbox, ref_bbox(ref, 200, 120), atol=1e-2)
    result = next(iter_demo([(picture, dets, source.origin(picture))], tmp_path / 'out', SquareNetwork(), GEOMETRY,
                            OutputOptions(), log=lambda *a: None))
    summary = json.load(open(result.paths['json']))
    assert summary['pose_layouts'] == [ESTIMATOR_LAYOUT] and len(summary['people']) == 2


def test_estimator_reads_the_decoded_bgr_pixels_themselves(tmp_path):
    """rtmlib's detector and pose tools (stand-ins recording what they get) receive the very
    pixels the frame holds, equal to the file's BGR pixels: no converted copy on the way."""
    from types import SimpleNamespace
    from common.demo_inputs import iter_frames
    from common.demo_poses import EstimatorPoses
    from common.pose_estimator import Rtmlib2DPose
    seen = []

    class Tool:
        def __init__(self, path, **options):
            self.session = SimpleNamespace(get_inputs=lambda: [SimpleNamespace(shape=[1, 3, 64, 48])])

    class Detector(Tool):
        def __call__(self, image):
            seen.append(image)
            return np.array([[2.0, 3.0, 10.0, 8.0]])

    class Pose(Tool):
        def __call__(self, image, bboxes):
            seen.append(image)
            return np.full((len(bboxes), 17, 2), 5.0), np.full((len(bboxes), 17), 0.8)

    bgr = np.random.default_rng(4).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / 'noise.png'), bgr)
    (picture,) = iter_frames(tmp_path / 'noise.png')
    estimator = Rtmlib2DPose('det.onnx', 'pose.onnx', rtmlib=SimpleNamespace(YOLOX=Detector, RTMPose=Pose))
    (detection,) = EstimatorPoses(estimator).detections(picture)
    np.testing.assert_array_equal(detection.joints, np.tile([5.0, 5.0, 0.8], (17, 1)))
    assert len(seen) == 2 and all(image is picture.img.pixels for image in seen)
    np.testing.assert_array_equal(seen[0], bgr)


def test_whole_body_models_keep_the_17_body_keypoints(tmp_path, rtmlib_available):
    from common.pose_estimator import load_estimator
    det, pose = tiny_estimator_models(tmp_path, keypoints=133)
    estimator = load_estimator(det, pose, 'cpu')
    out = estimator(np.zeros((120, 200, 3), np.uint8))
    np.testing.assert_allclose(out, expected_keypoints((120, 200)), atol=1e-3)


def test_estimator_found_in_rtmlibs_cache(tmp_path, rtmlib_available, monkeypatch):
    import rtmlib
    from common.pose_estimator import EstimatorUnavailable, find_cached_models, load_estimator
    cache = tmp_path / 'rtmlib' / 'hub' / 'checkpoints'
    cache.mkdir(parents=True)
    monkeypatch.delenv('TORCH_HOME', raising=False)
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
    with pytest.raises(EstimatorUnavailable, match=f'--det_model and --pose_model, or put .*yolox.*{cache}'):
        load_estimator()
    det, pose = tiny_estimator_models(tmp_path)
    # rtmlib stores a downloaded archive's model as <archive name before the first dot>.onnx.
    mode = rtmlib.Body.MODE['lightweight']
    for url, model in ((mode['det'], det), (mode['pose'], pose)):
        os.replace(model, cache / (os.path.basename(url).split('.')[0] + '.onnx'))
    found_det, found_pose, _ = find_cached_models(rtmlib)
    assert found_det.parent == cache and found_det.name.startswith('yolox_tiny')
    assert found_pose.name.startswith('rtmpose-s')
    np.testing.assert_allclose(load_estimator()(np.zeros((120, 200, 3), np.uint8)), expected_keypoints((120, 200)),
                               atol=1e-3)


def test_estimator_without_rtmlib_says_what_to_install(monkeypatch, tmp_path):
    import sys
    from common.pose_estimator import EstimatorUnavailable, load_estimator
    from main.demo import run_cli
    monkeypatch.setitem(sys.modules, 'rtmlib', None)          # import rtmlib -> ImportError
    with pytest.raises(EstimatorUnavailable, match='pip install --no-deps rtmlib && pip install onnxruntime'):
        load_estimator()
    img = str(tmp_path / 'a.png')
    cv2.imwrite(img, np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(SystemExit, match='ERROR: The built-in 2D pose estimator needs .*pip install --no-deps rtmlib'):
        run_cli(['--img', img, '--model', str(tmp_path / 'missing.pth.tar')])


def test_given_model_file_must_exist(tmp_path, rtmlib_available):
    from common.pose_estimator import EstimatorUnavailable, load_estimator
    with pytest.raises(EstimatorUnavailable, match='--pose_model .*nothing.onnx: no such file'):
        load_estimator(None, str(tmp_path / 'nothing.onnx'))


@pytest.mark.parametrize('device, with_cuda, without_cuda', [
    ('cpu', 'cpu', 'cpu'), ('cuda', 'cuda:0', 'cpu'), ('cuda:0', 'cuda:0', 'cpu'), ('cuda:1', 'cuda:1', 'cpu'),
    (('cpu',), 'cpu', 'cpu'), (('cuda',), 'cuda:0', 'cpu'), (('cuda', 1), 'cuda:1', 'cpu')])
def test_onnx_device_from_a_device_name_or_a_torch_device(monkeypatch, device, with_cuda, without_cuda):
    """Names and ``torch.device`` s (a tuple here: its arguments) give the same onnxruntime
    device; CUDA only where onnxruntime has its CUDA provider."""
    import sys
    import types
    import torch
    from common.pose_estimator import onnx_device
    device = torch.device(*device) if isinstance(device, tuple) else device
    for providers, expected in ((['CUDAExecutionProvider', 'CPUExecutionProvider'], with_cuda),
                                (['CPUExecutionProvider'], without_cuda)):
        fake = types.SimpleNamespace(get_available_providers=lambda providers=providers: providers)
        monkeypatch.setitem(sys.modules, 'onnxruntime', fake)
        assert onnx_device(device) == expected
