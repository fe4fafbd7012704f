"""`sdopt build DIR --format openvino`: the artifact's graphs as OpenVINO IR, in the Q/DQ form OpenVINO
computes correctly.

The artifact's int8 activations are symmetric (zero point 0), the form TensorRT needs. OpenVINO's CPU
plugin miscomputes some of those patterns (Concat -> int8 Q/DQ -> Conv); the same grid written as uint8
with zero point 128 is exact there. Both grids hold the same values: q_u8 = q_s8 + 128, so the build
rewrites every int8 activation zero point and leaves scales and weights alone.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import onnx

from sdopt.errors import SdoptError
from sdopt.export.rewrite import rewritten_copy, to_uint8_activations

BUILD_DIR = "openvino"


def _convert(onnx_path: Path, out_xml: Path) -> int:
    """ONNX (with its external data) -> IR files; returns the number of rewritten zero points."""
    import openvino as ov

    model = onnx.load(str(onnx_path), load_external_data=False)
    rewritten = to_uint8_activations(model)
    with rewritten_copy(onnx_path, model) as path:
        converted = ov.convert_model(str(path))
        out_xml.parent.mkdir(parents=True, exist_ok=True)
        ov.save_model(converted, str(out_xml), compress_to_fp16=False)
    return rewritten


def build(folder: Path, progress=None) -> dict:
    """Write DIR/openvino/<component>/model.xml + .bin and record them in the manifest."""
    try:
        import openvino as ov
    except ImportError as err:
        raise SdoptError("building for OpenVINO needs the openvino package: pip install 'sdopt[openvino]'") from err
    from sdopt.artifact import load_manifest, record_build

    folder = Path(folder)
    manifest = load_manifest(folder)
    start = time.perf_counter()
    staging = Path(tempfile.mkdtemp(prefix=f".{BUILD_DIR}.partial-", dir=folder))
    try:
        rewritten = {}
        names = list(manifest["components"])
        for name in (progress(names) if progress else names):
            rewritten[name] = _convert(folder / name / "model.onnx", staging / name / "model.xml")
        files = [f"{BUILD_DIR}/{p.relative_to(staging)}" for p in sorted(staging.rglob("*")) if p.is_file()]
        record = {"files": files, "activation_zero_point": 128 if any(rewritten.values()) else None,
                  "uint8_activation_quantizers": rewritten, "openvino_version": ov.get_version(),
                  "seconds": round(time.perf_counter() - start, 1)}
        return record_build(folder, BUILD_DIR, staging, record)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
