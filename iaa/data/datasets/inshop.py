"""DeepFashion In-Shop: ``img/...`` and ``list_eval_partition.txt`` (in the root or in ``Eval/``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from iaa.data.datasets.common import DatasetReader, read_list
from iaa.errors import IAAError

NAME = "inshop"
LIST = "list_eval_partition.txt"
SPLITS = ("train", "query", "gallery")


def find_list(folder: Path) -> Path:
    # The DeepFashion archive keeps it in Eval/; many preprocessed copies move it to the root.
    for path in (folder / LIST, folder / "Eval" / LIST):
        if path.is_file():
            return path
    raise IAAError(f"{NAME}: list file {LIST} not found in {folder} or {folder / 'Eval'}")


def read(folder: Path) -> pd.DataFrame:
    path = find_list(folder)
    # Two header lines: the image count, then the column names.
    frame = read_list(path, NAME, ["path", "class_name", "split"], skiprows=2)
    unknown = sorted(set(frame["split"]) - set(SPLITS))
    if unknown:
        expected = ", ".join(SPLITS)
        raise IAAError(f"{NAME}: {path} has evaluation status {unknown[0]!r}; expected one of {expected}")
    # item ids look like id_00000001: the number is the label, shared by query and gallery.
    digits = frame["class_name"].str.extract(r"(\d+)$", expand=False)
    if digits.isna().any():
        bad = frame["class_name"][digits.isna()].iloc[0]
        raise IAAError(f"{NAME}: item id {bad!r} in {path} does not end in a number (like id_00000001)")
    frame["label"] = digits.astype("int64")
    return frame


READER = DatasetReader(
    name=NAME,
    folder="InShop",
    layout="img/<gender>/<category>/<item id>/*.jpg and list_eval_partition.txt (in InShop/ or InShop/Eval/)",
    source=(
        "download the In-shop Clothes Retrieval Benchmark from the DeepFashion site "
        "(https://mmlab.ie.cuhk.edu.hk/projects/DeepFashion/InShopRetrieval.html)"
    ),
    official={"train": (25_882, 3_997), "query": (14_218, 3_985), "gallery": (12_612, 3_985)},
    read=read,
)
