"""Graph rewrites that turn the artifact's ONNX into the form a deployment backend wants.

The artifact keeps one form (symmetric int8 Q/DQ, interval scales gathered by timestep); builds for
OpenVINO and TensorRT derive theirs from it without touching the artifact's own files.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from sdopt.contract.artifact import SCRATCH
from sdopt.contract.errors import SdoptError
from sdopt.contract.safe_io import staging_folder
from sdopt.export.qdq import INTERVAL_INDEX, INTERVAL_PREFIX


def to_uint8_activations(model: onnx.ModelProto) -> int:
    """Rewrite the int8 zero points of activation QuantizeLinear nodes to uint8 (+128), in place: the same
    grid (q_u8 = q_s8 + 128). Returns how many were rewritten; weight DequantizeLinears keep int8."""
    initializers = {init.name: init for init in model.graph.initializer}
    activation_zero_points = {node.input[2] for node in model.graph.node
                              if node.op_type == "QuantizeLinear" and len(node.input) > 2}
    rewritten = 0
    for name in sorted(activation_zero_points):
        init = initializers.get(name)
        if init is None or init.data_type != onnx.TensorProto.INT8:
            continue
        shifted = numpy_helper.to_array(init).astype(np.int16) + 128
        init.CopyFrom(numpy_helper.from_array(shifted.astype(np.uint8), name))
        rewritten += 1
    return rewritten


def interval_count(model: onnx.ModelProto) -> int:
    """K of a graph whose activation scales are gathered per timestep interval, else 1."""
    tables = [i for i in model.graph.initializer if i.name.endswith("_scale_table")]
    return int(tables[0].dims[0]) if tables else 1


def interval_per_timestep(model: onnx.ModelProto) -> float | None:
    """K / T of the graph's interval index (interval = clip(floor(t * K / T), 0, K - 1))."""
    for init in model.graph.initializer:
        if init.name == f"{INTERVAL_PREFIX}per_timestep":
            return float(numpy_helper.to_array(init))
    return None


def constant_interval_scales(model: onnx.ModelProto, interval: int) -> int:
    """Replace each Gather(scale_table, interval index) by that interval's constant scale and drop the
    index nodes, in place: the constant-scale graph TensorRT needs, one per interval. Returns how many
    scales became constants."""
    graph = model.graph
    tables = {i.name: numpy_helper.to_array(i) for i in graph.initializer if i.name.endswith("_scale_table")}
    keep, constants = [], []
    for node in graph.node:
        if node.op_type == "Gather" and node.input[0] in tables and node.input[1] == INTERVAL_INDEX:
            constants.append(numpy_helper.from_array(tables[node.input[0]][interval].astype(np.float32),
                                                     node.output[0]))
        elif not node.name.startswith(INTERVAL_PREFIX):
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)
    dropped = set(tables) | {i.name for i in graph.initializer if i.name.startswith(INTERVAL_PREFIX)}
    remaining = [i for i in graph.initializer if i.name not in dropped]
    del graph.initializer[:]
    graph.initializer.extend(remaining + constants)
    return len(constants)


def external_data_files(model: onnx.ModelProto) -> set[str]:
    """Locations of the external data files the graph's initializers name."""
    return {entry.value for init in model.graph.initializer for entry in init.external_data if entry.key == "location"}


@contextlib.contextmanager
def rewritten_copy(onnx_path: Path, model: onnx.ModelProto):
    """Yield the path of `model` (a graph loaded from `onnx_path` without its external data, then
    rewritten) saved in a scratch folder inside the artifact, beside hard links to the external data files
    it names. Engines refuse external data reached through a symlink that leads out of the graph's folder;
    a hard link is an ordinary file there (a copy where the file system has no hard links)."""
    onnx_path = Path(onnx_path)
    folder = staging_folder(onnx_path.parent.parent, SCRATCH)
    try:
        for name in sorted(external_data_files(model)):
            source = onnx_path.parent / name
            if Path(name).name != name or not source.is_file():
                raise SdoptError(f"{onnx_path}: external data '{name}' is not a file beside the graph")
            try:
                os.link(source, folder / name)
            except OSError:
                shutil.copyfile(source, folder / name)
        path = folder / onnx_path.name
        onnx.save(model, str(path))
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)
