"""The runtimes an exported file runs in, behind one small interface (no torch on this path).

`open_session(path, runtime, precision, threads)` gives a `Session`: the file's input and output
names, its metadata properties and `run(feeds) -> [arrays in output order]`.

- "onnxruntime": ONNX Runtime's CPU execution provider, float32.
- "openvino": OpenVINO's CPU plugin (`pip install openvino`). Its precision hint is always set:
  "f32" for float32 (the plugin otherwise picks bfloat16 by itself on CPUs with native bfloat16,
  AVX-512 BF16 or AMX), "bf16" for `precision="bfloat16"`. On a CPU without native bfloat16 the
  plugin keeps float32 whatever the hint: `Session.precision` says what it compiled for.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RUNTIMES = ("onnxruntime", "openvino")
PRECISIONS = ("float32", "bfloat16")
_OPENVINO_HINTS = {"float32": "f32", "bfloat16": "bf16"}


@dataclass(frozen=True)
class Session:
    """One file loaded in one runtime.

    runtime: "onnxruntime" or "openvino"; precision: what the runtime computes in ("float32", or
    "bfloat16" where OpenVINO's CPU plugin runs it); inputs / outputs: the graph's names, in order;
    properties: the file's metadata properties; run: feeds (name -> array) -> outputs, in order.
    """

    runtime: str
    precision: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    properties: dict[str, str]
    run: Callable[[dict[str, np.ndarray]], list[np.ndarray]]


def open_session(path: str | os.PathLike, runtime: str = "onnxruntime", precision: str = "float32",
                 threads: int | None = None) -> Session:
    """`path` loaded in `runtime` on the CPU; ValueError for an unknown runtime or precision, a
    runtime that is not installed, or a file the runtime cannot load."""
    path = Path(path)
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if not path.is_file():
        raise ValueError(f"no such ONNX file: {path}")
    if runtime == "onnxruntime":
        if precision != "float32":
            raise ValueError("ONNX Runtime runs these files in float32; bfloat16 is OpenVINO's (--runtime openvino)")
        return _onnxruntime(path, threads)
    return _openvino(path, precision, threads)


def _onnxruntime(path: Path, threads: int | None) -> Session:
    try:
        import onnxruntime as ort
        from onnxruntime.capi import onnxruntime_pybind11_state as errors
    except ImportError as error:
        raise ValueError(f"ONNX Runtime is not installed here ({error}): pip install onnxruntime") from None
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    load_errors = (errors.Fail, errors.InvalidProtobuf, errors.InvalidGraph, errors.InvalidArgument, errors.NoSuchFile,
                   errors.NotImplemented)
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except load_errors as error:
        raise ValueError(f"{path.name} is not an ONNX model ONNX Runtime can load ({_first_line(error)})") from None
    return Session(runtime="onnxruntime", precision="float32",
                   inputs=tuple(i.name for i in session.get_inputs()),
                   outputs=tuple(o.name for o in session.get_outputs()),
                   properties=dict(session.get_modelmeta().custom_metadata_map),
                   run=lambda feeds: session.run(None, feeds))


def _openvino(path: Path, precision: str, threads: int | None) -> Session:
    try:
        import openvino as ov
    except ImportError as error:
        raise ValueError(f"OpenVINO is not installed here ({error}): pip install openvino") from None
    core = ov.Core()
    try:
        model = core.read_model(str(path))
    except RuntimeError as error:
        raise ValueError(f"{path.name} is not an ONNX model OpenVINO can load ({_first_line(error)})") from None
    info = model.get_rt_info()
    framework = info["framework"] if "framework" in info.keys() else {}  # where ONNX metadata_props land
    properties = {str(key): value.astype(str) if hasattr(value, "astype") else str(value)
                  for key, value in dict(framework).items()}
    config = {"INFERENCE_PRECISION_HINT": _OPENVINO_HINTS[precision]}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    compiled = core.compile_model(model, "CPU", config)
    ran = compiled.get_property("INFERENCE_PRECISION_HINT")  # an ov.Type: what the plugin compiled for
    request = compiled.create_infer_request()
    outputs = compiled.outputs

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        results = request.infer(feeds)
        return [np.asarray(results[port]) for port in outputs]

    return Session(runtime="openvino", precision="bfloat16" if ran == ov.Type.bf16 else "float32",
                   inputs=tuple(port.get_any_name() for port in compiled.inputs),
                   outputs=tuple(port.get_any_name() for port in outputs), properties=properties, run=run)


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:200]
