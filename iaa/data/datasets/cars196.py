"""Stanford Cars (Cars196): ``car_ims/*.jpg`` and the MATLAB file ``cars_annos.mat``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from iaa.data.datasets.common import DatasetReader, check_range, require_list, split_by_class
from iaa.errors import IAAError

NAME = "cars196"
ANNOTATIONS = "cars_annos.mat"


def _load(path: Path) -> dict:
    from scipy.io import loadmat  # imported here: only this reader needs scipy

    try:
        return loadmat(path, squeeze_me=True)
    except NotImplementedError:  # MATLAB v7.3 files are HDF5, which loadmat does not read
        raise IAAError(f"{NAME}: {path} is a MATLAB v7.3 file; use the original cars_annos.mat") from None
    except Exception as err:  # scipy raises ValueError, TypeError, ... for a damaged file
        raise IAAError(f"{NAME}: cannot read {path}: {' '.join(str(err).split())}") from None


def read(folder: Path) -> pd.DataFrame:
    mat_path = require_list(folder, NAME, ANNOTATIONS)
    mat = _load(mat_path)
    ann = np.atleast_1d(mat.get("annotations", np.array([])))
    names = ann.dtype.names or ()
    if "relative_im_path" not in names or "class" not in names:
        raise IAAError(f"{NAME}: {mat_path} lacks the struct array 'annotations' (relative_im_path, class)")
    frame = pd.DataFrame(
        {
            # relative_im_path is e.g. car_ims/000001.jpg, relative to the Cars196 folder.
            "path": [str(p) for p in ann["relative_im_path"]],
            "label": np.asarray(ann["class"], dtype=np.int64),
        }
    )
    check_range(frame, NAME, mat_path, 1, 196)
    class_names = np.atleast_1d(mat.get("class_names", np.array([])))
    if class_names.size >= int(frame["label"].max()):
        frame["class_name"] = class_names.astype(str)[frame["label"].to_numpy() - 1]
    else:  # a trimmed file without the names table
        frame["class_name"] = frame["label"].astype(str)
    # The file's own ``test`` flag is the classification split; DML splits by class.
    frame["split"] = split_by_class(frame["label"], last_train=98)
    return frame


READER = DatasetReader(
    name=NAME,
    folder="Cars196",
    layout="car_ims/*.jpg and cars_annos.mat",
    source=(
        "download car_ims.tgz and cars_annos.mat from the Stanford AI Lab Cars dataset page "
        "(https://ai.stanford.edu/~jkrause/cars/car_dataset.html)"
    ),
    official={"train": (8_054, 98), "test": (8_131, 98)},
    read=read,
)
