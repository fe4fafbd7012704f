"""Edge deployment: low-memory generation, engine threads, static OpenVINO builds, fp16 graphs."""

import json
import shutil

import numpy as np
import onnx
import pytest

from sdopt.app.cli import main
from sdopt.app.memory import StagePeaks
from sdopt.contract.errors import SdoptError
from sdopt.runtime.pipeline import Pipeline


def test_low_memory_loads_each_graph_for_its_stage_only(tiny_fp32):
    reference = Pipeline(tiny_fp32)("a red circle", seed=3, steps=3, guidance=5.0)
    pipe = Pipeline(tiny_fp32, low_memory=True)
    assert pipe.models.loaded == {}
    seen = []  # graphs loaded at the moment each graph runs

    def record(name, model):
        run = model.run
        model.run = lambda feeds: (seen.append((name, sorted(pipe.models.loaded))), run(feeds))[1]
        return model
    pipe.models.wrap(record)
    got = pipe("a red circle", seed=3, steps=3, guidance=5.0)
    np.testing.assert_array_equal(got.image, reference.image)  # the same graphs, the same numbers
    assert pipe.models.loaded == {}
    assert {(name, tuple(loaded)) for name, loaded in seen} == {
        ("text_encoder", ("text_encoder",)), ("unet", ("unet",)), ("vae_decoder", ("vae_decoder",))}
    again = pipe("a red circle", seed=3, steps=3, guidance=5.0)  # loaded again for the next image
    np.testing.assert_array_equal(again.image, reference.image)


def test_stage_peaks_see_what_a_stage_allocates():
    peaks = StagePeaks()
    if not peaks.per_stage:
        pytest.skip("this kernel does not let a process reset its peak resident memory")
    with peaks.stage("big"):
        block = np.ones(200_000_000 // 8)
        del block
    with peaks.stage("small"):
        np.ones(10)
    measured = peaks.take()
    assert measured["big"] - measured["small"] > 150e6
    assert peaks.peak() >= measured["big"]


def test_cli_threads_and_low_memory(tiny_fp32, tmp_path, capsys):
    out = tmp_path / "a.png"
    assert main(["run", str(tiny_fp32), "--prompt", "a red circle", "--steps", "2", "--threads", "1",
                 "--low-memory", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    assert main(["run", str(tiny_fp32), "--prompt", "x", "--backend", "tensorrt", "--threads", "2",
                 "--out", str(tmp_path / "b.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--threads applies to the CPU engines" in err[0]
    assert not (tmp_path / "b.png").exists()


def test_static_openvino_build(tiny_fp32, tmp_path, capsys):
    pytest.importorskip("openvino", reason="the openvino extra is not installed")
    artifact = tmp_path / "static"
    shutil.copytree(tiny_fp32, artifact)
    info = json.loads((artifact / "manifest.json").read_text())["pipeline"]
    bad = [(["--height", "64"], "with --static"), (["--static", "--batch", "2"], "--batch applies"),
           (["--static", "--height", "60"], "multiple of"), (["--static", "--width", "x"], "one positive")]
    for argv, message in bad:
        assert main(["build", str(artifact), "--format", "openvino", *argv]) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (argv, err)
    assert main(["build", str(artifact), "--format", "openvino", "--static"]) == 0
    build = json.loads((artifact / "manifest.json").read_text())["builds"]["openvino"]
    assert build["static"] == {"batch": 1, "height": info["height"], "width": info["width"]}
    import openvino as ov

    unet = ov.Core().read_model(str(artifact / "unet" / "openvino_model.xml"))
    assert all(port.get_partial_shape().is_static for port in unet.inputs)
    assert unet.input("sample").get_shape()[0] == 2  # the guidance batch
    static = Pipeline(artifact, "openvino", precision="f32")("a red circle", seed=3, steps=2, guidance=5.0)
    dynamic = Pipeline(tiny_fp32, "openvino", precision="f32")("a red circle", seed=3, steps=2, guidance=5.0)
    np.testing.assert_allclose(static.latents, dynamic.latents, rtol=1e-3, atol=1e-3)
    pipe = Pipeline(artifact, "openvino")
    for request in ({"height": info["height"] * 2}, {"guidance": 1.0}):
        with pytest.raises(SdoptError, match="static for one guided"):
            pipe("a red circle", steps=2, **{"guidance": 5.0, **request})
    with pytest.raises(SdoptError, match="decodes whole images only"):
        Pipeline(artifact, "openvino", vae_tile=32)


def test_float16_export(tiny_fp32, tmp_path):
    out = tmp_path / "fp16"
    assert main(["compress", "--model", "arch:tiny", "--float16", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    fp32_manifest = json.loads((tiny_fp32 / "manifest.json").read_text())
    for name, component in manifest["components"].items():
        assert component["float_precision"] == "fp16"
        assert component["inputs"] == fp32_manifest["components"][name]["inputs"]  # float32 in and out
        weights = onnx.load(str(out / name / "model.onnx")).graph.initializer
        floats = [w for w in weights if w.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
        assert sum(w.data_type == onnx.TensorProto.FLOAT16 for w in floats) > 0.9 * len(floats)
    half = Pipeline(out)("a red circle", seed=3, steps=3, guidance=5.0)
    full = Pipeline(tiny_fp32)("a red circle", seed=3, steps=3, guidance=5.0)
    error = np.abs(half.image_float - full.image_float).max()
    assert 0 < error < 0.05  # fp16 rounding, nothing more
