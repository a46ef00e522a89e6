"""MPII Human Pose with NeuralAnnot SMPL fits (docs/METHOD.md, "Data on disk"): a 2D training set.

As in the original, the split argument does not change the data (always ``train.json``);
it only switches augmentation off for splits other than 'train'.

Expected layout under ``options.data_dir``::

    MPII/data/annotations/train.json
    MPII/data/annotations/MPII_train_SMPL_NeuralAnnot.json
    MPII/data/<file_name>            (released file names start with 'images/')
"""
import logging
import os.path as osp
from functools import partial

from common.utils.joints import COCO18, MPII16, transfer_joints
from common.utils.preprocessing import input_aspect_ratio
from data.annotations import (NeuralAnnotFiles, coco_file, count_missing_fits, image_folder, image_in,
                              json_object_file, load_neuralannot_people, parse_keypoints, split_validity)
from data.dataset import resolve_data_options
from data.train_dataset import TrainDataset

logger = logging.getLogger(__name__)

LAYOUT_HINT = ("<data_dir>/MPII/data/annotations/{train.json, MPII_train_SMPL_NeuralAnnot.json} and images "
               "under MPII/data/<file_name> (README 'Datasets'; docs/METHOD.md, \"Data on disk\")")

SOURCE = ("the MPII images and annotations parsed by the I2L-MeshNet/3DCrowdNet authors "
          "(https://drive.google.com/drive/folders/1zQZpfNu0s19tA7Z1SmulP1cDaVfNDDd3), linked from 3DCrowdNet's "
          "assets/directory.md")
NEURALANNOT_SOURCE = ("NeuralAnnot's SMPL fits for MPII (https://github.com/mks0601/NeuralAnnot_RELEASE, as "
                      "3DCrowdNet's assets/directory.md says)")


def data_files(options, data_split='train'):
    """``{role: RequiredFile}`` of everything ``MPII(transform, data_split, options)`` reads (every split
    reads the training files): 'images' (the folder file names are relative to), 'annotations', 'smpl_fits'."""
    root = osp.join(options.data_dir, 'MPII', 'data')
    return {
        'images': image_folder(root, 'MPII images (file names start with images/)', SOURCE),
        'annotations': coco_file(osp.join(root, 'annotations', 'train.json'), 'MPII annotations (COCO-style JSON)',
                                 SOURCE, image_path=partial(image_in, root)),
        'smpl_fits': json_object_file(osp.join(root, 'annotations', 'MPII_train_SMPL_NeuralAnnot.json'),
                                      'MPII SMPL fits (NeuralAnnot JSON)', NEURALANNOT_SOURCE),
    }


class MPII(TrainDataset):
    """``MPII(transform, data_split, options=None)``; every split reads the training annotations."""

    joint_set = MPII16
    is_3d = False
    fit_variant = 'NeuralAnnot'
    synth_joints_name = COCO18.names
    # Joints shared with COCO-18; Thorax, Neck and Head_top keep their clean positions.
    synth_shared_idx = (0, 1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 14, 15)
    data_files = staticmethod(data_files)

    def __init__(self, transform, data_split, options=None):
        options = resolve_data_options(options)
        self.files = data_files(options, data_split)
        super().__init__(transform, data_split, options)

    def load_data(self):
        annot_path = self.files['annotations'].path
        files = NeuralAnnotFiles(annot_path, self.files['smpl_fits'].path, self.files['images'].path,
                                 ('bbox', 'keypoints'), LAYOUT_HINT)
        datalist, degenerate = load_neuralannot_people(
            files, lambda ann: split_validity(parse_keypoints(ann, len(MPII16), annot_path)),
            # Neighbours are stored in COCO-18 (face joints zero) for the synthesiser.
            lambda joint_img: transfer_joints(joint_img, MPII16.names, COCO18.names),
            aspect_ratio=input_aspect_ratio(self.options.geometry))
        count_missing_fits('MPII', datalist, files.fit_path)
        if degenerate:
            logger.warning('MPII: skipped %d annotation(s) with a degenerate bbox.', degenerate)
        return datalist

    def get_test_sample(self, idx, data):
        """Any other split: the training pipeline without augmentation (the original's behaviour)."""
        return self.get_train_sample(data, self.sample_rng(idx), augment=False)
