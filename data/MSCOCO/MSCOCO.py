"""MSCOCO 2017 keypoints with NeuralAnnot SMPL fits (docs/METHOD.md, "Data on disk", "Evaluation").

``MSCOCO(transform, 'train', options=None)`` is a 2D training set; ``MSCOCO(transform, 'val')`` is the
original's 101-sample debug split (GT joints as input, no targets, no metrics).

Expected layout under ``options.data_dir``::

    MSCOCO/images/train2017/<file_name>, MSCOCO/images/val2017/<file_name>
    MSCOCO/annotations/person_keypoints_train2017.json
    MSCOCO/annotations/person_keypoints_val2017.json      ('val' split only)
    MSCOCO/annotations/MSCOCO_train_SMPL_NeuralAnnot.json ('train' split only)
"""
import logging
import os.path as osp
from functools import partial

import numpy as np

from common.utils.joints import COCO17, COCO18, SMPL30, add_pelvis, transfer_joints
from common.utils.preprocessing import crop_for_test, in_bounds_mask, input_aspect_ratio, process_bbox, read_image
from data.annotations import (IMAGE_FIELDS, AnnotationError, NeuralAnnotFiles, coco_file, count_missing_fits,
                              image_folder, image_in, json_object_file, load_neuralannot_people, parse_bbox,
                              parse_keypoints, read_coco, require_fields, split_validity)
from data.dataset import resolve_data_options
from data.sample_steps import input_image
from data.train_dataset import TrainDataset

logger = logging.getLogger(__name__)

VAL_SAMPLE_LIMIT = 101
ANNOTATION_FIELDS = ('bbox', 'keypoints', 'iscrowd', 'num_keypoints')
LAYOUT_HINT = ("<data_dir>/MSCOCO/annotations/{person_keypoints_train2017.json, person_keypoints_val2017.json, "
               "MSCOCO_train_SMPL_NeuralAnnot.json} and images under MSCOCO/images/{train2017,val2017}/ "
               "(README 'Datasets'; docs/METHOD.md, \"Data on disk\")")

SOURCE = "MSCOCO 2017 (https://cocodataset.org/#download: 2017 train/val images, 2017 train/val annotations)"
NEURALANNOT_SOURCE = ("NeuralAnnot's SMPL fits for MSCOCO (https://github.com/mks0601/NeuralAnnot_RELEASE, as "
                      "3DCrowdNet's assets/directory.md says)")
SPLIT_FILES = {'train': ('train2017', 'person_keypoints_train2017.json'),
               'val': ('val2017', 'person_keypoints_val2017.json')}


def data_files(options, data_split):
    """``{role: RequiredFile}`` of everything ``MSCOCO(transform, data_split, options)`` reads:
    'images' (the split's folder), 'annotations' and, for 'train', 'smpl_fits'."""
    if data_split not in SPLIT_FILES:
        raise ValueError(f"MSCOCO has the splits 'train' and 'val' (debug), not '{data_split}'.")
    root = osp.join(options.data_dir, 'MSCOCO')
    folder, annotations = SPLIT_FILES[data_split]
    images = osp.join(root, 'images', folder)
    files = {
        'images': image_folder(images, f'MSCOCO {folder} images', SOURCE),
        'annotations': coco_file(osp.join(root, 'annotations', annotations),
                                 f'MSCOCO {folder} person keypoints (COCO JSON)', SOURCE,
                                 image_path=partial(image_in, images)),
    }
    if data_split == 'train':
        files['smpl_fits'] = json_object_file(osp.join(root, 'annotations', 'MSCOCO_train_SMPL_NeuralAnnot.json'),
                                              'MSCOCO train SMPL fits (NeuralAnnot JSON)', NEURALANNOT_SOURCE)
    return files


def is_single_person_with_keypoints(ann):
    """The loaders skip crowd annotations and those without any labelled keypoint."""
    return not ann['iscrowd'] and ann['num_keypoints'] != 0


class MSCOCO(TrainDataset):
    """``MSCOCO(transform, data_split, options=None)`` with ``data_split`` in {'train', 'val'}."""

    joint_set = COCO18
    is_3d = False
    fit_variant = 'NeuralAnnot'
    synth_joints_name = COCO18.names
    synth_shared_idx = tuple(range(17))   # the appended pelvis keeps the clean hip midpoint
    data_files = staticmethod(data_files)

    def __init__(self, transform, data_split, options=None):
        options = resolve_data_options(options)
        self.files = data_files(options, data_split)
        super().__init__(transform, data_split, options)

    def load_data(self):
        if self.data_split == 'train':
            return self._load_train()
        return self._load_val()

    def _person_joints(self, ann, path):
        """COCO-17 keypoints + pelvis -> (joint_img (18, 3) with validity column, joint_valid (18, 1))."""
        return split_validity(add_pelvis(parse_keypoints(ann, len(COCO17), path), COCO17.names))

    def _load_train(self):
        annot_path = self.files['annotations'].path
        files = NeuralAnnotFiles(annot_path, self.files['smpl_fits'].path, self.files['images'].path,
                                 ANNOTATION_FIELDS, LAYOUT_HINT)
        datalist, degenerate = load_neuralannot_people(
            files, lambda ann: self._person_joints(ann, annot_path), keep_annotation=is_single_person_with_keypoints,
            aspect_ratio=input_aspect_ratio(self.options.geometry))
        count_missing_fits('MSCOCO train', datalist, files.fit_path)
        if degenerate:
            logger.warning('MSCOCO train: skipped %d annotation(s) with a degenerate bbox.', degenerate)
        return datalist

    def _load_val(self):
        annot_path = self.files['annotations'].path
        db = read_coco(annot_path, LAYOUT_HINT)
        aspect_ratio = input_aspect_ratio(self.options.geometry)
        datalist, degenerate = [], 0
        for ann in db.anns.values():
            require_fields(ann, ANNOTATION_FIELDS, annot_path, 'annotation')
            if not is_single_person_with_keypoints(ann):
                continue
            if ann['image_id'] not in db.imgs:
                raise AnnotationError(f"{annot_path}: annotation id {ann['id']} refers to the unknown image id "
                                      f"{ann['image_id']}.")
            img = db.imgs[ann['image_id']]
            require_fields(img, IMAGE_FIELDS, annot_path, 'image')
            annotated_bbox = parse_bbox(ann, annot_path, dtype=np.float64)
            bbox = process_bbox(annotated_bbox, img['width'], img['height'], aspect_ratio=aspect_ratio)
            if bbox is None:
                degenerate += 1
                continue
            joint_img, joint_valid = self._person_joints(ann, annot_path)
            datalist.append({
                'img_path': image_in(self.files['images'].path, img),
                'img_id': ann['image_id'], 'ann_id': ann['id'], 'img_shape': (img['height'], img['width']),
                'bbox': bbox, 'tight_bbox': annotated_bbox.astype(np.float32),
                'joint_img': joint_img, 'joint_valid': joint_valid,
            })
            if len(datalist) >= VAL_SAMPLE_LIMIT:
                break
        if degenerate:
            logger.warning('MSCOCO val: skipped %d annotation(s) with a degenerate bbox.', degenerate)
        return datalist

    # ------------------------------------------------------------------ 'val' samples
    def get_test_sample(self, idx, data):
        """Debug sample: the crop, GT joints as input (30, 3) with validity in column 2, bbox."""
        geometry = self.options.geometry
        crop = crop_for_test(read_image(data['img_path']), data['bbox'], data['joint_img'], geometry)
        joints_mask = data['joint_valid'] * in_bounds_mask(crop.joints_hm, geometry.output_hm_shape)
        inputs = {
            'img': input_image(crop.patch, self.transform),
            'joints': transfer_joints(crop.joints_hm, self.joints_name, SMPL30.names),
            'joints_mask': transfer_joints(joints_mask, self.joints_name, SMPL30.names),
        }
        return inputs, {}, {'bbox': np.asarray(data['bbox'], dtype=np.float32)}

    def evaluate(self, outs, cur_sample_idx):
        """The debug split has no metrics (the original only showed renders in a window)."""
        return {}

    def summarize(self, eval_result):
        return {}

    def print_eval_result(self, eval_result):
        print('MSCOCO val is a debug split without metrics.')
