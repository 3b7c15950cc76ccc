"""Stanford Online Products: ``Ebay_train.txt`` and ``Ebay_test.txt`` (header; id class super path)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from iaa.data.datasets.common import DatasetReader, read_list, require_list

NAME = "sop"
COLUMNS = ["image_id", "class_id", "super_class_id", "path"]
LISTS = {"train": "Ebay_train.txt", "test": "Ebay_test.txt"}


def read(folder: Path) -> pd.DataFrame:
    frames = []
    for split, relpath in LISTS.items():
        path = require_list(folder, NAME, relpath)
        table = read_list(path, NAME, COLUMNS, skiprows=1, ints=["class_id", "super_class_id"])
        frames.append(table.assign(split=split))
    frame = pd.concat(frames, ignore_index=True).rename(columns={"class_id": "label"})
    # e.g. bicycle_final/111085122871_0.JPG, class 1 -> "bicycle_1"
    category = frame["path"].str.split("/").str[0].str.removesuffix("_final")
    frame["class_name"] = category + "_" + frame["label"].astype(str)
    return frame


READER = DatasetReader(
    name=NAME,
    folder="Stanford_Online_Products",
    layout="Ebay_train.txt, Ebay_test.txt and the <category>_final/ image folders",
    source=(
        "download Stanford_Online_Products.zip from cvgl.stanford.edu "
        "(https://cvgl.stanford.edu/projects/lifted_struct/)"
    ),
    official={"train": (59_551, 11_318), "test": (60_502, 11_316)},
    read=read,
)
