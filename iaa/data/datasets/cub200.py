"""CUB-200-2011: ``images.txt`` (id path) and ``image_class_labels.txt`` (id class)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from iaa.data.datasets.common import DatasetReader, check_range, read_list, require_list, split_by_class
from iaa.errors import IAAError

NAME = "cub200"


def read(folder: Path) -> pd.DataFrame:
    images_txt = require_list(folder, NAME, "images.txt")
    labels_txt = require_list(folder, NAME, "image_class_labels.txt")
    images = read_list(images_txt, NAME, ["image_id", "path"], ints=["image_id"])
    labels = read_list(labels_txt, NAME, ["image_id", "label"], ints=["image_id", "label"])
    for table, source in ((images, images_txt), (labels, labels_txt)):
        dup = table["image_id"][table["image_id"].duplicated()]
        if len(dup):
            raise IAAError(f"{NAME}: image id {int(dup.iloc[0])} appears twice in {source}")
    frame = images.merge(labels, on="image_id", how="left")
    unlabelled = frame["image_id"][frame["label"].isna()]
    if len(unlabelled):
        first = int(unlabelled.iloc[0])
        raise IAAError(f"{NAME}: image id {first} of {images_txt} has no class in {labels_txt}")
    frame["label"] = frame["label"].astype("int64")
    check_range(frame, NAME, labels_txt, 1, 200)
    # images.txt paths are relative to images/; the class folder (e.g. 001.Black_footed_Albatross) names it.
    frame["class_name"] = frame["path"].str.split("/").str[0]
    frame["path"] = "images/" + frame["path"]
    frame["split"] = split_by_class(frame["label"], last_train=100)
    return frame


READER = DatasetReader(
    name=NAME,
    folder="CUB_200_2011",
    layout="images/<class>/*.jpg, images.txt and image_class_labels.txt",
    source="download CUB_200_2011.tgz from the Caltech Vision Lab (https://www.vision.caltech.edu/datasets/cub_200_2011/)",
    official={"train": (5_864, 100), "test": (5_924, 100)},
    read=read,
)
