"""`.npz` files that numpy alone reads, with a JSON `index` entry describing every other array.

The layout behind the internals file (`io.internals`) and the denoising file (`io.denoising`):
the index is a JSON text with the file's `schema` name, whatever header the writer adds (model,
image, sizes) and, under "arrays", each array's shape, dtype, shape legend and meaning::

    import json, numpy as np
    with np.load(path) as f:                  # allow_pickle stays False
        index = json.loads(str(f["index"]))
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def array_entries(arrays: dict[str, np.ndarray], meanings: dict[str, tuple[str, str]]) -> dict[str, dict]:
    """The index's "arrays" part: per array its shape, dtype and, from `meanings` (name: (meaning,
    shape legend)), its legend and meaning."""
    return {name: {"shape": list(array.shape), "dtype": str(array.dtype), "legend": meanings[name][1],
                   "meaning": meanings[name][0]} for name, array in arrays.items()}


def write_indexed(path: str | Path, index: dict, arrays: dict[str, np.ndarray]) -> Path:
    """Write `arrays` and the JSON `index` to `path` (.npz, uncompressed); returns the path."""
    if "index" in arrays:
        raise ValueError("an array may not be called 'index'")
    path = Path(path)
    with path.open("wb") as file:
        np.savez(file, index=np.array(json.dumps(index, indent=1)), **arrays)
    return path


def read_indexed(path: str | Path, schema: str, kind: str) -> tuple[dict, dict[str, np.ndarray]]:
    """(index, arrays) of a file `write_indexed` wrote with `schema`; ValueError for anything else
    (`kind` names the file in the message: "internals", "denoising")."""
    with np.load(path, allow_pickle=False) as file:
        if "index" not in file.files:
            raise ValueError(f"{path} holds no {kind} index")
        index = json.loads(str(file["index"]))
        if index.get("schema") != schema:
            raise ValueError(f"{path} is not a {schema} file (schema {index.get('schema')!r})")
        return index, {name: file[name] for name in file.files if name != "index"}
