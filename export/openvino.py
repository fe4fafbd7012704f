"""`sdopt build DIR --format openvino`: the artifact's graphs as OpenVINO IR, in the Q/DQ form OpenVINO
computes correctly.

The artifact's int8 activations are symmetric (zero point 0), the form TensorRT needs. OpenVINO's CPU
plugin miscomputes some of those patterns (Concat -> int8 Q/DQ -> Conv); the same grid written as uint8
with zero point 128 is exact there. Both grids hold the same values: q_u8 = q_s8 + 128, so the build
rewrites every int8 activation zero point and leaves scales and weights alone.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import onnx

from sdopt.contract.errors import SdoptError
from sdopt.contract.manifest import GRAPH_FOLDER_BUILDS
from sdopt.export.rewrite import rewritten_copy, to_uint8_activations

BUILD_DIR = "openvino"
IR_FILE = GRAPH_FOLDER_BUILDS[BUILD_DIR][0]  # <graph>/openvino_model.xml (+ .bin): where optimum-intel loads IR


def static_shapes(name: str, component: dict, info: dict, static: dict) -> dict[str, tuple]:
    """{input: shape} of a component at `static` = {batch, height, width}: the denoiser at twice the batch when
    guidance runs as a batch (a denoiser with the guidance scale embedded runs it once)."""
    from sdopt.export.tensorrt import TensorrtConfig, input_profiles

    guided = "timestep_cond" not in [i["name"] for i in component["inputs"]]
    config = TensorrtConfig(batch=(static["batch"],) * 3, height=(static["height"],) * 3,
                            width=(static["width"],) * 3, static=True, guidance=guided)
    return {io: shapes[1] for io, shapes in input_profiles(name, component, info, config).items()}


def _convert(onnx_path: Path, out_xml: Path, shapes: dict | None = None) -> int:
    """ONNX (with its external data) -> IR files, reshaped to `shapes` ({input: shape}) when given; returns the
    number of rewritten zero points."""
    import openvino as ov

    from sdopt.contract.engine_messages import engine_message

    model = onnx.load(str(onnx_path), load_external_data=False)
    rewritten = to_uint8_activations(model)
    with rewritten_copy(onnx_path, model) as path:
        try:
            converted = ov.convert_model(str(path))
            if shapes:
                converted.reshape({io: ov.PartialShape(list(shape)) for io, shape in shapes.items()})
            out_xml.parent.mkdir(parents=True, exist_ok=True)
            ov.save_model(converted, str(out_xml), compress_to_fp16=False)
        except Exception as err:  # OpenVINO raises its own types; its message's last line says what went wrong
            raise SdoptError(f"{onnx_path}: OpenVINO cannot convert it ({engine_message(err)})") from err
    return rewritten


def build(folder: Path, progress=None, static: dict | None = None) -> dict:
    """Write DIR/<component>/openvino_model.xml + .bin and record them in the manifest. `static` = {batch,
    height, width}: every graph fixed to the shapes of that generation (OpenVINO then plans its memory and
    kernels once, and the runtime refuses other sizes)."""
    try:
        import openvino as ov
    except ImportError as err:
        raise SdoptError("building for OpenVINO needs the openvino package: pip install 'sdopt[openvino]'") from err
    from sdopt.contract.artifact import open_artifact, record_build
    from sdopt.contract.safe_io import staging_folder

    artifact = open_artifact(folder, verify=False)  # each graph is verified as it is converted
    start = time.perf_counter()
    staging = staging_folder(artifact.folder, BUILD_DIR)
    try:
        rewritten = {}
        names = list(artifact.components)
        for name in (progress(names) if progress else names):
            shapes = static and static_shapes(name, artifact.components[name], artifact.pipeline, static)
            artifact.verify(*(f"{name}/{f}" for f in artifact.components[name]["files"] if f.startswith("model.onnx")))
            rewritten[name] = _convert(artifact.path(f"{name}/model.onnx"), staging / name / IR_FILE, shapes)
        files = [p.relative_to(staging).as_posix() for p in sorted(staging.rglob("*"))
                 if p.is_file() and p.parent != staging]
        record = {"files": files, "activation_zero_point": 128 if any(rewritten.values()) else None,
                  "uint8_activation_quantizers": rewritten, "openvino_version": ov.get_version(),
                  "static": static,
                  "seconds": round(time.perf_counter() - start, 1)}
        return record_build(artifact, BUILD_DIR, staging, record)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
