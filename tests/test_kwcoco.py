"""COCO files written by another tool: kwcoco writes absolute file_names into its own bundle folder. Those that
resolve inside the image folder or the annotation file's folder tree are read; one outside is refused, naming
the path and the folders it left. A kwcoco-written split trains and evaluates for one epoch."""

import json
import os
import shutil

import pytest
from test_detection import TINY, _cfg

from inceptionnext.tasks.detection.data import AnnotationError, check_annotations
from inceptionnext.tasks.detection.scenes import ensure_demo_data, split_paths
from inceptionnext.train import fit

kwcoco = pytest.importorskip("kwcoco")


def _rewrite_with_kwcoco(images: str, annotations: str) -> None:
    """Read a COCO file into kwcoco, make its file names absolute (kwcoco's reroot), and let kwcoco write it."""
    dset = kwcoco.CocoDataset(json.load(open(annotations)), bundle_dpath=images)
    dset.reroot(absolute=True)
    dset.fpath = annotations
    dset.dump()


@pytest.fixture(scope="module")
def kwcoco_data(tmp_path_factory):
    root = ensure_demo_data(str(tmp_path_factory.mktemp("kw") / "digits"), TINY)
    for split in ("train", "val"):
        _rewrite_with_kwcoco(*split_paths(root, split))
    return root


def test_kwcoco_writes_absolute_file_names_and_they_are_read(kwcoco_data):
    images, annotations = split_paths(kwcoco_data, "train")
    data = json.load(open(annotations))
    assert all(os.path.isabs(img["file_name"]) for img in data["images"])  # kwcoco's own absolute paths
    checked = check_annotations(data, annotations, images)
    assert len(checked["images"]) == TINY.train_images


def test_absolute_names_in_the_annotation_files_folder_tree_are_read_and_others_refused(kwcoco_data, tmp_path):
    images, annotations = split_paths(kwcoco_data, "val")
    bundle = tmp_path / "bundle"
    shutil.copytree(images, bundle / "assets")  # the images beside the annotation file, not in the image folder
    dset = kwcoco.CocoDataset(json.load(open(annotations)), bundle_dpath=images)
    dset.reroot(absolute=True)
    dset.reroot(old_prefix=os.path.realpath(images), new_prefix=str(bundle / "assets"), absolute=True)
    dset.fpath = str(bundle / "data.kwcoco.json")
    dset.dump()
    data = json.load(open(dset.fpath))
    assert check_annotations(data, dset.fpath, str(tmp_path / "elsewhere"))["images"]
    # the same file read from another folder: its absolute names leave both folders
    moved = tmp_path / "moved" / "data.kwcoco.json"
    moved.parent.mkdir()
    shutil.copy(dset.fpath, moved)
    outside = data["images"][0]["file_name"]
    with pytest.raises(AnnotationError) as e:
        check_annotations(json.load(open(moved)), str(moved), images)
    said = str(e.value)
    assert (
        f"is an absolute path ({os.path.realpath(outside)}) outside the image folder {os.path.realpath(images)}" in said
    )
    assert f"and the annotation file's folder {os.path.realpath(moved.parent)}" in said


def test_a_kwcoco_written_set_trains_and_evaluates_one_epoch(kwcoco_data, tmp_path):
    res = fit(_cfg(str(tmp_path), kwcoco_data, epochs=1))
    assert res.epochs_done == 1 and res.history[0]["val_map"] >= 0.0
    assert os.path.isfile(res.best_checkpoint)
