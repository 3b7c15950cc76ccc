"""PKU VehicleID: ``image/<name>.jpg`` and the lists in ``train_test_split/`` (name vehicle_id)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from iaa.data.datasets.common import DatasetReader, read_list, require_list

NAME = "vehicleid"
LISTS = {
    "train": "train_test_split/train_list.txt",
    "test-small": "train_test_split/test_list_800.txt",
    "test-medium": "train_test_split/test_list_1600.txt",
    "test-large": "train_test_split/test_list_2400.txt",
}


def read(folder: Path) -> pd.DataFrame:
    # The test lists are nested (small within medium within large): an image listed in
    # several of them gets one row per split, since each is evaluated on its own.
    frames = [
        read_list(require_list(folder, NAME, relpath), NAME, ["name", "label"], ints=["label"]).assign(
            split=split
        )
        for split, relpath in LISTS.items()
    ]
    frame = pd.concat(frames, ignore_index=True)
    frame["path"] = "image/" + frame["name"] + ".jpg"  # names keep their leading zeros (read as text)
    frame["class_name"] = frame["label"].astype(str)
    return frame


READER = DatasetReader(
    name=NAME,
    folder="VehicleID_V1.0",
    layout="image/*.jpg and train_test_split/{train_list,test_list_800,test_list_1600,test_list_2400}.txt",
    source=(
        "request PKU VehicleID from its authors through the PKU page "
        "(https://pkuml.org/resources/pku-vehicleid.html)"
    ),
    # The test lists are defined by their vehicle counts; their image counts are not fixed here.
    official={
        "train": (110_178, 13_134),
        "test-small": (None, 800),
        "test-medium": (None, 1_600),
        "test-large": (None, 2_400),
    },
    read=read,
)
