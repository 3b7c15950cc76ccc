"""Readers of the five downloadable benchmarks' datasets, by name (SPEC 4).

``READERS[name].read(folder)`` lists a dataset's images; :func:`prepare_dataset` checks
them and writes the same manifest the built-in synth benchmark writes.
"""

from __future__ import annotations

from iaa.data.datasets import cars196, cub200, inshop, sop, vehicleid
from iaa.data.datasets.common import DatasetReader, prepare_dataset
from iaa.errors import IAAError

READERS: dict[str, DatasetReader] = {
    m.READER.name: m.READER for m in (cub200, cars196, sop, inshop, vehicleid)
}


def get_reader(name: str) -> DatasetReader:
    try:
        return READERS[name]
    except KeyError:
        raise IAAError(f"no reader for dataset {name!r}; known: {', '.join(sorted(READERS))}") from None


__all__ = ["READERS", "DatasetReader", "get_reader", "prepare_dataset"]
