"""Human3.6M loader (docs/METHOD.md, "Data on disk", "Training samples", "Evaluation").

Train: subjects 1, 5, 6, 7, 8, every 5th frame, all cameras; samples follow the shared
steps of ``data/train_dataset.py`` with the world-frame ("H36M") fit variant.
Test: subjects 9 and 11, every 64th frame, camera 4, only frames with an SMPL fit;
evaluated with MPJPE and PA-MPJPE (mm) on the 14 H36M evaluation joints regressed from
the fit mesh (SGRE's protocol).

Expected layout under ``options.data_dir``::

    Human36M/images/<file_name>
    Human36M/annotations/Human36M_subject{S}_{data,camera,joint_3d,smpl_param}.json
    Human36M/J_regressor_h36m_correct.npy
    Human36M/rootnet_output/bbox_root_human36m_output.json   (test, use_gt_info=False only)
"""
import logging
import os.path as osp
from functools import partial

import numpy as np

from common.utils.joints import COCO17, H36M17, H36M_EVAL_JOINTS, SMPL30, transfer_joints
from common.utils.metrics import joint_error, regress_joints
from common.utils.preprocessing import (crop_for_test, get_bbox, in_bounds_mask, input_aspect_ratio,
                                        process_bbox, read_image)
from common.utils.transforms import cam2pixel, world2cam
from common.utils.required_files import RequiredFile
from data.annotations import (AnnotationError, check_finite, check_finite_number, coco_index,
                              count_missing_fits, finite_array, h36m_regressor_file, image_folder, image_in,
                              json_list_file, json_object_file, parse_bbox, parse_smpl_param, read_json,
                              read_json_object, require_fields)
from data.dataset import resolve_data_options
from data.sample_steps import CropState, input_image
from data.smpl_targets import FITTING_ERROR_THRESHOLD_MM, SmplFit, fitting_error, smpl_fit_targets
from data.train_dataset import MocapTrainDataset

logger = logging.getLogger(__name__)

H36M_COCO_SHARED_IDX = (1, 2, 3, 4, 5, 6, 9, 11, 12, 13, 14, 15, 16)

SPLIT_SUBJECTS = {'train': (1, 5, 6, 7, 8), 'test': (9, 11)}
FRAME_STEP = {'train': 5, 'test': 64}
TEST_CAMERA = 4
ANNOTATION_KINDS = ('data', 'camera', 'joint_3d', 'smpl_param')
IMAGE_FIELDS = ('id', 'file_name', 'width', 'height', 'subject', 'action_idx', 'subaction_idx', 'cam_idx',
                'frame_idx')

LAYOUT_HINT = (
    "<data_dir>/Human36M/annotations/Human36M_subject{S}_{data,camera,joint_3d,smpl_param}.json for "
    "every subject of the split (train: 1,5,6,7,8; test: 9,11), images under <data_dir>/Human36M/images/ "
    "(docs/METHOD.md, \"Data on disk\"; see the README's data section)")

# Where the files come from: the data instructions of the 3DCrowdNet release
# (github.com/hongsukchoi/3DCrowdNet_RELEASE, assets/directory.md).
SOURCE = ("the Human3.6M images and annotations parsed by the I2L-MeshNet/3DCrowdNet authors "
          "(https://drive.google.com/drive/folders/1r0B9I3XxIIW_jsXjYinDpL6NFcxTZart; SMPL fits: "
          "https://drive.google.com/drive/folders/12fCumEgs9PXT-dAaOGq0EDpl9dGKKorF), linked from 3DCrowdNet's "
          "assets/directory.md")
ROOTNET_SOURCE = ("RootNet's Human3.6M test output (github.com/mks0601/3DMPPE_ROOTNET_RELEASE); only needed with "
                  "use_gt_info: False")
KIND_CONTENTS = {'data': 'images and boxes', 'camera': 'cameras', 'joint_3d': '3D joints', 'smpl_param': 'SMPL fits'}
KIND_KEYS = {'camera': 'str(camera index)', 'joint_3d': 'action, subaction, frame',
             'smpl_param': 'action, subaction, frame'}


def annotation_path(data_dir, subject, kind):
    """Path of one per-subject annotation file (kind in ``ANNOTATION_KINDS``)."""
    return osp.join(data_dir, 'Human36M', 'annotations', f'Human36M_subject{subject}_{kind}.json')


def image_dir(data_dir):
    """The folder the ``file_name`` of every Human3.6M image is relative to."""
    return osp.join(data_dir, 'Human36M', 'images')


def reads_frame(data_split, img):
    """Whether the split reads an image record's frame: every ``FRAME_STEP``-th ``frame_idx``;
    test: camera ``TEST_CAMERA`` only.  A field the decision needs that the record lacks raises
    KeyError; a non-numeric one, TypeError."""
    return img['frame_idx'] % FRAME_STEP[data_split] == 0 and (data_split == 'train' or img['cam_idx'] == TEST_CAMERA)


def read_image_path(img_dir, data_split, img):
    """Path of an image record's file when the split reads its frame (``reads_frame``), else None.
    Test frames without an SMPL fit are also skipped by the loader, which this record-only test
    cannot see."""
    return image_in(img_dir, img) if reads_frame(data_split, img) else None


def rootnet_path(data_dir):
    """RootNet's test detections, read only with ``use_gt_info=False``."""
    return osp.join(data_dir, 'Human36M', 'rootnet_output', 'bbox_root_human36m_output.json')


def data_files(options, data_split):
    """``{role: RequiredFile}`` of everything ``Human36M(transform, data_split, options)`` reads.

    Roles: 'images', '<kind>_<subject>' for each annotation kind and subject of the split,
    'h36m_regressor', and 'rootnet' (test split with ``use_gt_info=False`` only).
    """
    data_dir = options.data_dir
    images = image_dir(data_dir)
    files = {'images': image_folder(images, 'Human3.6M images', SOURCE)}
    for subject in SPLIT_SUBJECTS[data_split]:
        what = f'Human3.6M subject {subject} {{}} (JSON)'
        files[f'data_{subject}'] = RequiredFile(annotation_path(data_dir, subject, 'data'),
                                                what.format(KIND_CONTENTS['data']), SOURCE,
                                                validate=read_subject_data,
                                                image_path=partial(read_image_path, images, data_split))
        for kind in ANNOTATION_KINDS[1:]:
            files[f'{kind}_{subject}'] = json_object_file(annotation_path(data_dir, subject, kind),
                                                          what.format(KIND_CONTENTS[kind]), SOURCE, KIND_KEYS[kind])
    files['h36m_regressor'] = h36m_regressor_file(data_dir)
    if data_split == 'test' and not options.use_gt_info:
        files['rootnet'] = json_list_file(rootnet_path(data_dir), 'RootNet Human3.6M boxes and root depths',
                                          ROOTNET_SOURCE, of='{image_id, bbox, root_cam}')
    return files


def read_subject_data(path, layout_hint=LAYOUT_HINT):
    """One ``Human36M_subject{S}_data.json``: a COCO-style object whose top-level values are all
    lists (an empty object is allowed: a subject without frames)."""
    content = read_json(path, layout_hint)
    if not isinstance(content, dict):
        raise AnnotationError(f"{path}: expected a COCO-style object with 'images' and 'annotations' lists.")
    for key, value in content.items():
        if not isinstance(value, list):
            raise AnnotationError(f"{path}: top-level '{key}' must be a list (the subjects' lists are merged).")
    return content


def merge_subject_data(contents, paths):
    """Concatenate the top-level lists of the per-subject data files (``read_subject_data``) key by key.

    The merge starts from the first file with any key; a later file with a key the
    first lacks raises naming the file.
    """
    merged = {}
    for content, path in zip(contents, paths):
        if not merged:
            merged = {key: list(value) for key, value in content.items()}
            continue
        for key, value in content.items():
            if key not in merged:
                raise AnnotationError(f"{path}: top-level key '{key}' is missing from the earlier subject files; "
                                      "all Human36M_subject*_data.json files must share their keys.")
            merged[key].extend(value)
    merged.setdefault('images', [])
    merged.setdefault('annotations', [])
    return merged


def nested_lookup(table, keys, path, what):
    """``table[k0][k1]...`` for string keys; a missing entry raises ``AnnotationError`` naming the file and keys."""
    node = table
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            raise AnnotationError(f"{path}: no {what} entry for [{']['.join(repr(k) for k in keys)}].")
        node = node[key]
    return node


def parse_camera(camera, path, cam_idx):
    """Camera entry (JSON ``R``, ``t``, ``f``, ``c``) -> dict of float32 ``R`` (3,3), ``t`` (3,) mm,
    ``focal`` (2,), ``princpt`` (2,), all finite; a missing or malformed one names file, camera and field."""
    if not isinstance(camera, dict):
        raise AnnotationError(f"{path}: camera {cam_idx!r} must be a JSON object with R, t, f and c.")
    record = f'camera {cam_idx!r}'
    return {'R': finite_array(camera.get('R'), (3, 3), path, record, 'R'),
            't': finite_array(camera.get('t'), (3,), path, record, 't'),
            'focal': finite_array(camera.get('f'), (2,), path, record, 'f'),
            'princpt': finite_array(camera.get('c'), (2,), path, record, 'c')}


class Human36M(MocapTrainDataset):
    """``Human36M(transform, data_split, options=None)`` with ``data_split`` in {'train', 'test'}.

    ``self[i]`` -> ``(inputs, targets, meta_info)`` (docs/METHOD.md, "Training samples"; test:
    ``get_test_sample``).  options: ``DataOptions`` (None: the run configuration's).
    Attributes: ``datalist``, ``h36m_regressor`` (17, 6890), ``skipped_bbox_count``
    (annotations dropped at load time for a degenerate box).
    """

    joint_set = H36M17
    skeleton = H36M17.skeleton
    root_joint_idx = H36M17.root
    eval_joints = H36M_EVAL_JOINTS
    fit_variant = 'H36M'
    synth_shared_idx = H36M_COCO_SHARED_IDX
    data_files = staticmethod(data_files)

    def __init__(self, transform, data_split, options=None):
        if data_split not in SPLIT_SUBJECTS:
            raise ValueError(f"Human36M: unknown data_split '{data_split}'; expected 'train' or 'test'.")
        options = resolve_data_options(options)
        self.img_dir = image_dir(options.data_dir)
        self.skipped_bbox_count = 0
        self.frames_without_fit = 0   # test split: frames dropped for lack of an SMPL fit
        super().__init__(transform, data_split, options)

    def annotation_path(self, subject, kind):
        return annotation_path(self.options.data_dir, subject, kind)

    # ------------------------------------------------------------------ loading
    def load_annotations(self):
        """Read the four files of every subject once.

        Returns (COCO index, {subject: {kind: table}}).
        """
        subjects = SPLIT_SUBJECTS[self.data_split]
        data_paths = [self.annotation_path(s, 'data') for s in subjects]
        contents = [read_subject_data(p) for p in data_paths]
        db = coco_index(merge_subject_data(contents, data_paths), self.data_files_named())
        per_subject = {}
        for subject in subjects:
            per_subject[subject] = {kind: read_json_object(self.annotation_path(subject, kind), LAYOUT_HINT,
                                                           keyed_by=KIND_KEYS[kind])
                                    for kind in ANNOTATION_KINDS[1:]}
        return db, per_subject

    def data_files_named(self, img=None):
        """The data file(s) to name in an error about an image record (or the whole index):
        the subject's ``Human36M_subject{S}_data.json``, or, when the record's subject is
        missing or not one of the split's, every data file of the split."""
        subjects = SPLIT_SUBJECTS[self.data_split]
        subject = None if img is None else img.get('subject')
        if subject in subjects:
            return self.annotation_path(subjects[subjects.index(subject)], 'data')
        return 'Human36M ' + ', '.join(self.annotation_path(s, 'data') for s in subjects)

    def skips_frame(self, img):
        """True for an image record the split does not read (``reads_frame``).  A record whose
        ``frame_idx`` / ``cam_idx`` is missing, non-numeric or non-finite is not skipped: the
        validation of the kept records names it."""
        try:
            return not reads_frame(self.data_split, img) and bool(np.isfinite(img['frame_idx']))
        except (KeyError, TypeError):
            return False

    def load_rootnet(self):
        """RootNet detections ``{image_id: (bbox (4,), root depth mm)}`` (test with use_gt_info=False)."""
        path = rootnet_path(self.options.data_dir)
        if not osp.isfile(path):
            raise FileNotFoundError(
                f"RootNet output not found: {path}\nuse_gt_info=False needs the RootNet Human3.6M result "
                "(a JSON list of {image_id, bbox, root_cam}) in <data_dir>/Human36M/rootnet_output/; "
                "set use_gt_info=True to use the GT boxes instead.")
        entries = read_json(path, 'a JSON list of {image_id, bbox, root_cam}')
        try:
            rootnet = {int(e['image_id']): (np.asarray(e['bbox'], dtype=np.float32).reshape(4),
                                            float(e['root_cam'][2])) for e in entries}
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise AnnotationError(f"{path}: malformed RootNet entry ({err}).") from err
        for image_id, (bbox, depth) in rootnet.items():
            check_finite(np.append(bbox, depth), path, f'image_id {image_id}', 'bbox/root_cam')
        return rootnet

    def load_data(self):
        """The datalist (one entry per kept frame and camera)."""
        db, per_subject = self.load_annotations()
        use_rootnet = self.data_split == 'test' and not self.options.use_gt_info
        aspect_ratio = input_aspect_ratio(self.options.geometry)
        rootnet = self.load_rootnet() if use_rootnet else None
        datalist = []
        for ann_id in db.anns:
            ann = db.anns[ann_id]
            if ann['image_id'] not in db.imgs:
                raise AnnotationError(f"{self.data_files_named()}: annotation id {ann_id} refers to the unknown "
                                      f"image id {ann['image_id']}.")
            img = db.imgs[ann['image_id']]
            if self.skips_frame(img):
                continue
            data_path = self.data_files_named(img)
            require_fields(img, IMAGE_FIELDS, data_path, 'image')
            require_fields(ann, ('bbox',), data_path, 'annotation')
            subject, action, subaction = img['subject'], img['action_idx'], img['subaction_idx']
            frame, cam_idx = img['frame_idx'], img['cam_idx']
            check_finite_number(frame, data_path, f"image id {img['id']}", 'frame_idx')
            if subject not in per_subject:
                raise AnnotationError(f"{data_path}: image id {img['id']} has subject {subject}, which is not one of "
                                      f"the '{self.data_split}' subjects {SPLIT_SUBJECTS[self.data_split]}.")
            tables = per_subject[subject]
            frame_keys = (str(action), str(subaction), str(frame))
            fit_path = self.annotation_path(subject, 'smpl_param')
            fit = tables['smpl_param'].get(frame_keys[0], {}).get(frame_keys[1], {}).get(frame_keys[2])
            # World-frame fit (the translation in metres).
            fit = None if fit is None else parse_smpl_param(fit, fit_path, f'at {list(frame_keys)}')
            if self.data_split == 'test' and fit is None:
                self.frames_without_fit += 1
                continue
            cam_path = self.annotation_path(subject, 'camera')
            cam_param = parse_camera(nested_lookup(tables['camera'], (str(cam_idx),), cam_path, 'camera'),
                                     cam_path, cam_idx)

            joint_path = self.annotation_path(subject, 'joint_3d')
            joint_world = finite_array(nested_lookup(tables['joint_3d'], frame_keys, joint_path, 'joint'),
                                       (len(H36M17), 3), joint_path, f'entry {list(frame_keys)}', 'joints')
            joint_cam = world2cam(joint_world, cam_param['R'], cam_param['t']).astype(np.float32)
            joint_img = cam2pixel(joint_cam, cam_param['focal'], cam_param['princpt']).astype(np.float32)
            joint_valid = np.ones((len(H36M17), 1), dtype=np.float32)

            img_shape = (int(check_finite_number(img['height'], data_path, f"image id {img['id']}", 'height')),
                         int(check_finite_number(img['width'], data_path, f"image id {img['id']}", 'width')))
            tight_bbox = parse_bbox(ann, data_path)
            if use_rootnet:
                if img['id'] not in rootnet:
                    raise AnnotationError(f"RootNet output has no entry for Human36M image id {img['id']}.")
                bbox, root_depth = rootnet[img['id']]
            else:
                bbox = process_bbox(tight_bbox, img_shape[1], img_shape[0], aspect_ratio=aspect_ratio)
                if bbox is None:
                    self.skipped_bbox_count += 1
                    continue
                root_depth = float(joint_cam[H36M17.root, 2])
            datalist.append({
                'img_path': image_in(self.img_dir, img),
                'img_id': img['id'],
                'img_shape': img_shape,
                'bbox': np.asarray(bbox, dtype=np.float32),
                'tight_bbox': tight_bbox,
                'joint_img': joint_img,
                'joint_cam': joint_cam,
                'joint_valid': joint_valid,
                'smpl_param': fit,
                'root_joint_depth': root_depth,
                'cam_param': cam_param,
                'num_overlap': 0,
                'near_joints': np.zeros((1, len(COCO17), 3), dtype=np.float32),
            })
        subjects = ','.join(str(subject) for subject in SPLIT_SUBJECTS[self.data_split])
        fit_files = self.annotation_path(f'{{{subjects}}}', 'smpl_param')
        if self.data_split == 'test' and not datalist and self.frames_without_fit:
            raise AnnotationError(f"{fit_files}: none of the {self.frames_without_fit} Human36M test frames has an "
                                  "SMPL fit (empty, or keyed differently from the joint files).")
        count_missing_fits(f'Human36M {self.data_split}', datalist, fit_files)
        if self.skipped_bbox_count:
            logger.warning('Human36M %s: skipped %d annotations with a degenerate bbox.', self.data_split,
                           self.skipped_bbox_count)
        return datalist

    # ----------------------------------------------------------------- samples
    def fit_is_valid(self, data, fit, gt):
        """Fitting error (mm) of the camera-frame fit against the GT joints <= 25 mm."""
        error = fitting_error(gt['joint_cam_mm'], fit['regressor_joints'])
        return error <= FITTING_ERROR_THRESHOLD_MM

    def get_test_sample(self, idx, data):
        """SGRE's test sample: GT 2D joints as input, crop around them, fit mesh (mm) as target."""
        img_height, img_width = data['img_shape']
        joint_img = data['joint_img']
        bbox = get_bbox(joint_img[:, :2], data['joint_valid'].reshape(-1))
        bbox = process_bbox(bbox, img_width, img_height, is_3dpw_test=True,
                            aspect_ratio=input_aspect_ratio(self.options.geometry))
        geometry = self.options.geometry
        crop = crop_for_test(read_image(data['img_path']), bbox, joint_img, geometry)
        joints_mask = data['joint_valid'] * in_bounds_mask(crop.joints_hm, geometry.output_hm_shape)
        fit = smpl_fit_targets(SmplFit(data['smpl_param'], data['cam_param'], 'H36M'),
                               CropState.unaugmented(crop.img2bb, crop.bb2img, img_width), geometry, self.smpl)
        inputs = {'img': input_image(crop.patch, self.transform),
                  'joints': transfer_joints(crop.joints_hm, H36M17.names, SMPL30.names),
                  'joints_mask': transfer_joints(joints_mask, H36M17.names, SMPL30.names)}
        targets = {'smpl_mesh_cam': fit['mesh_cam'].astype(np.float32)}
        meta_info = {'bb2img_trans': crop.bb2img}
        return inputs, targets, meta_info

    # -------------------------------------------------------------- evaluation
    def evaluate(self, outs, cur_sample_idx):
        """Per-sample MPJPE / PA-MPJPE (mm) of a batch of test outputs, vectorised.

        ``outs``: list of per-sample dicts with ``smpl_mesh_cam`` (6890, 3) predicted mesh,
        metres, and ``smpl_mesh_cam_target`` (6890, 3) the GT fit mesh, mm.  Sample n pairs
        with ``datalist[cur_sample_idx + n]``.  Joints: the 14 H36M evaluation joints
        regressed from the meshes, root-relative.  Returns ``{'mpjpe': [..], 'pa_mpjpe': [..]}``.
        """
        if not outs:
            return {'mpjpe': [], 'pa_mpjpe': []}
        if cur_sample_idx + len(outs) > len(self.datalist):
            raise IndexError(f"Human36M.evaluate: samples {cur_sample_idx}..{cur_sample_idx + len(outs) - 1} "
                             f"exceed the test set of {len(self.datalist)}.")
        target = np.stack([out['smpl_mesh_cam_target'] for out in outs])
        pred = np.stack([out['smpl_mesh_cam'] for out in outs]) * 1000
        gt_joints = regress_joints(self.h36m_regressor, target)
        pred_joints = regress_joints(self.h36m_regressor, pred)
        if 'smpl_mesh_cam_flip' in outs[0]:
            # The original averages with the flipped prediction without un-flipping it (dead code in SGRE).
            flip = np.stack([out['smpl_mesh_cam_flip'] for out in outs]) * 1000
            pred_joints = (pred_joints + regress_joints(self.h36m_regressor, flip)) / 2
        eval_idx = list(self.eval_joints)
        root = H36M17.root
        mpjpe = joint_error(pred_joints, gt_joints, 'root', root=root, subset=eval_idx)
        pa_mpjpe = joint_error(pred_joints, gt_joints, 'procrustes', root=root, subset=eval_idx)
        return {'mpjpe': [float(v) for v in mpjpe], 'pa_mpjpe': [float(v) for v in pa_mpjpe]}

    def summarize(self, eval_result):
        """``{'mpjpe': mean mm, 'pa_mpjpe': mean mm, 'num_samples': n}`` of concatenated evaluate() lists."""
        count = len(eval_result.get('mpjpe', []))
        if count == 0:
            return {'mpjpe': float('nan'), 'pa_mpjpe': float('nan'), 'num_samples': 0}
        return {'mpjpe': float(np.mean(eval_result['mpjpe'])),
                'pa_mpjpe': float(np.mean(eval_result['pa_mpjpe'])),
                'num_samples': count}

    def print_eval_result(self, eval_result):
        """Print the means as the original does."""
        summary = self.summarize(eval_result)
        print('MPJPE: %.2f mm' % summary['mpjpe'])
        print('PA MPJPE: %.2f mm' % summary['pa_mpjpe'])
