"""Image datasets behind one LightningDataModule: a learnable synthetic set, fast.ai's Imagewoof/Imagenette
archives, CIFAR, Stanford Dogs and any ImageFolder (ImageNet), all fed through timm's train/val transforms. One file
a job: errors, transforms, synthetic, folders, archives, dogs (Stanford Dogs' own layout and split), cache (decoded
images), pool (a batch loaded by several processes), datamodule."""
from roadmap.data.archives import FASTAI_ARCHIVES, extract_once, fastai_folder
from roadmap.data.cache import DecodedImages
from roadmap.data.datamodule import DATASETS, FOLDER_DATASETS, ImageDataModule, usable_cores
from roadmap.data.dogs import breed, dogs_folders
from roadmap.data.errors import BadImageError, DataError
from roadmap.data.folders import (SkipBadImages, best_represented, image_folder, keep_classes, load_rgb,
                                  stratified_subset)
from roadmap.data.pool import BatchPool
from roadmap.data.synthetic import SyntheticShapes, synthesize
from roadmap.data.transforms import CLASSIC_AUGMENT, BatchNormalize, build_transforms

__all__ = ["BadImageError", "BatchNormalize", "BatchPool", "CLASSIC_AUGMENT", "DATASETS", "DataError",
           "DecodedImages", "FASTAI_ARCHIVES", "FOLDER_DATASETS", "ImageDataModule", "SkipBadImages",
           "SyntheticShapes", "best_represented", "breed", "build_transforms", "dogs_folders", "extract_once",
           "fastai_folder", "image_folder", "keep_classes", "load_rgb", "stratified_subset", "synthesize",
           "usable_cores"]
