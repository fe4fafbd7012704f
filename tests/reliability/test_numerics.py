"""No picture from non-finite numbers: a component that produces NaN or Inf stops the run with one line
naming the step and the component, exit code 2, no PNG; eval's JSON is strict (null where a figure has
no finite value)."""

import json

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from reliability_helpers import fails, rehash

from sdopt.app.cli import main
from sdopt.contract.schema import json_safe


def poison(folder, component: str, value: float) -> None:
    """Multiply the component's first output by `value` inside its graph (and re-hash it)."""
    path = folder / component / "model.onnx"
    model = onnx.load(str(path))
    output = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [f"{output}_raw" if o == output else o for o in node.output]
    model.graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), "poison"))
    model.graph.node.append(helper.make_node("Mul", [f"{output}_raw", "poison"], [output]))
    onnx.save(model, str(path))
    rehash(folder, f"{component}/model.onnx")


@pytest.mark.parametrize("component, value, where", [
    ("unet", np.nan, "step 1/3 (timestep"), ("unet", np.inf, "step 1/3 (timestep"),
    ("vae_decoder", np.nan, "decoding the latents"), ("text_encoder", np.inf, "encoding the prompt")])
def test_non_finite_component_output_stops_the_run(capsys, artifact_copy, png, component, value, where):
    poison(artifact_copy, component, value)
    line = fails(capsys, ["run", artifact_copy, "--prompt", "x", "--out", png, "--steps", "3"])
    assert where in line and f"the {component} produced non-finite values" in line
    assert not png.exists()


def test_guidance_beyond_its_range_is_refused_before_work(capsys, tiny_fp32, png):
    line = fails(capsys, ["run", tiny_fp32, "--prompt", "x", "--out", png, "--steps", "2", "--guidance", "3e38"])
    assert "--guidance: 3e38 is over the limit of 100" in line and "sampling" not in capsys.readouterr().err
    assert not png.exists()


@pytest.mark.parametrize("guidance", ["inf", "-inf", "nan", "1e999", "x"])
def test_guidance_must_be_finite(capsys, tiny_fp32, png, guidance):
    line = fails(capsys, ["run", tiny_fp32, "--prompt", "x", "--out", png, f"--guidance={guidance}"])
    assert "--guidance" in line
    assert not png.exists()


def test_eval_of_a_nan_artifact_is_an_error_not_a_score(capsys, artifact_copy, tiny_fp32, tmp_path):
    poison(artifact_copy, "unet", np.nan)
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\n")
    line = fails(capsys, ["eval", artifact_copy, "--reference", tiny_fp32, "--prompts", prompts, "--steps", "2",
                          "--json"])
    assert "non-finite" in line
    assert capsys.readouterr().out == ""


def test_eval_json_is_strict(capsys, tiny_fp32, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\n")
    assert main(["eval", str(tiny_fp32), "--reference", str(tiny_fp32), "--prompts", str(prompts), "--steps", "2",
                 "--json"]) == 0

    def refuse(name):
        raise ValueError(f"{name} in strict JSON")

    result = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert result["psnr"] == 100.0  # identical images: PSNR capped at 100 dB, as documented


def test_json_safe_writes_null_for_undefined_figures():
    value = json_safe({"a": float("nan"), "b": [float("inf"), 1.5, np.float32(2.0)], "c": np.float64("-inf")})
    assert value == {"a": None, "b": [None, 1.5, 2.0], "c": None}
    json.dumps(value, allow_nan=False)
