"""Latent consistency distillation: the student starts as the teacher, trains, exports with its guidance as an
input, samples with the LCM scheduler and no negative batch, composes with int8 and refuses cache; the LCM-LoRA
form fuses into the artifact and saves a LoRA file that the lora pass fuses into the plain model."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from sdopt.app.cli import main
from sdopt.backbones.unet.convention import run_unet
from sdopt.calibration.trajectory import CalibrationConfig
from sdopt.compress.lcm import EMBEDDING_DIM, LORA_FILE, guidance_student, lora_student
from sdopt.contract.errors import SdoptError
from sdopt.contract.sampling import guidance_embedding
from sdopt.recipes.recipe import parse_set, resolve
from sdopt.runtime.pipeline import Pipeline
from sdopt.sources.source import load_source

PROMPT = "a large red circle in the top left"
SHORT = ["--set", "lcm.train_steps=6", "--set", "lcm.batch=4", "--set", "lcm.seeds=1",
         "--set", "lcm.calibration.num_prompts=3"]


def _manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


@pytest.fixture(scope="module")
def lcm_artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("lcm") / "lcm"
    assert main(["compress", "--recipe", "lcm", *SHORT, "--out", str(out)]) == 0
    return out


def test_the_student_starts_as_the_teacher():
    source = load_source("tiny-shapes")
    teacher = source.pipeline.unet
    student = guidance_student(teacher)
    inputs = source.example_inputs(latent_hw=(8, 8))
    cond = torch.from_numpy(guidance_embedding([1.0, 3.0], EMBEDDING_DIM))
    with torch.no_grad():
        torch.testing.assert_close(run_unet(student, {**inputs, "timestep_cond": cond}), run_unet(teacher, inputs))


def test_the_lora_student_starts_as_the_teacher():
    source = load_source("tiny-shapes")
    inputs = source.example_inputs(latent_hw=(8, 8))
    with torch.no_grad():
        before = run_unet(source.pipeline.unet, inputs)
        student = lora_student(source.pipeline.unet, 4, seed=0)
        assert all(("lora_" in name) == p.requires_grad for name, p in student.named_parameters())
        torch.testing.assert_close(run_unet(student, inputs), before)


def test_the_lcm_lora_file_fuses_into_the_plain_model_as_in_the_artifact(tmp_path):
    from safetensors.torch import load_file

    out, fused = tmp_path / "lcm-lora", tmp_path / "fused"
    assert main(["compress", "--recipe", "lcm-lora", *SHORT, "--set", "lcm.lora_rank=4", "--out", str(out)]) == 0
    manifest = _manifest(out)
    record = next(r for r in manifest["passes"] if r["pass"] == "lcm")
    assert (record["lora_rank"], record["lora_file"]) == (4, LORA_FILE) and LORA_FILE in manifest["files"]
    assert (manifest["pipeline"]["scheduler"], manifest["pipeline"]["guidance"]) == ("lcm", 1.0)
    assert "timestep_cond" not in {i["name"] for i in manifest["components"]["unet"]["inputs"]}
    weights = load_file(out / LORA_FILE)
    assert len(weights) == 2 * record["lora_fused_layers"]
    assert max(float(v.abs().max()) for k, v in weights.items() if "lora_B" in k) > 0  # it trained
    assert main(["compress", "--recipe", "fp32", "--lora", str(out / LORA_FILE), "--out", str(fused)]) == 0
    inputs = {k: v.numpy() for k, v in load_source("tiny-shapes").example_inputs(latent_hw=(8, 8)).items()}
    a, b = (ort.InferenceSession(str(f / "unet" / "model.onnx"), providers=["CPUExecutionProvider"])
            .run(None, inputs)[0] for f in (out, fused))
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    result = Pipeline(out)(PROMPT, steps=4, guidance=1.0, scheduler="lcm")
    assert np.isfinite(result.image).all()


def test_lcm_artifact_samples_in_few_steps_without_the_negative_batch(lcm_artifact, tmp_path):
    manifest = _manifest(lcm_artifact)
    info, record = manifest["pipeline"], next(r for r in manifest["passes"] if r["pass"] == "lcm")
    assert (info["scheduler"], info["steps"], info["guidance"]) == ("lcm", 4, 2.0)
    assert record["train_steps"] == 6 and record["guidance_range"] == [1.0, 3.0]
    unet_inputs = {i["name"]: i["shape"] for i in manifest["components"]["unet"]["inputs"]}
    assert unet_inputs["timestep_cond"][1] == EMBEDDING_DIM
    # the runtime calls the UNet once per step with batch 1 and the embedded guidance
    pipe = Pipeline(lcm_artifact)
    unet, batches = pipe.models["unet"], []
    run = unet.run
    unet.run = lambda feeds: (batches.append((feeds["sample"].shape[0], feeds["timestep_cond"].copy())), run(feeds))[1]
    result = pipe(PROMPT, steps=4, guidance=2.0, scheduler="lcm")
    assert [b for b, _ in batches] == [1] * 4
    np.testing.assert_allclose(batches[0][1], guidance_embedding([2.0], EMBEDDING_DIM), rtol=0, atol=0)
    assert np.isfinite(result.latents).all()
    png = tmp_path / "a.png"
    assert main(["run", str(lcm_artifact), "--prompt", PROMPT, "--out", str(png)]) == 0 and png.stat().st_size


def test_lcm_graph_matches_the_torch_student(lcm_artifact):
    from sdopt.compress.lcm import LcmConfig, apply

    source = load_source("tiny-shapes")
    config = LcmConfig(train_steps=6, batch=4, seeds=1, calibration=CalibrationConfig(num_prompts=3))
    student = apply(source, config).pipeline.unet  # resumes the fixture's finished checkpoint
    inputs = {k: v.numpy() for k, v in source.example_inputs(latent_hw=(8, 8)).items()}
    session = ort.InferenceSession(str(lcm_artifact / "unet" / "model.onnx"), providers=["CPUExecutionProvider"])
    ours = session.run(None, inputs)[0]
    with torch.no_grad():
        expected = run_unet(student, {k: torch.from_numpy(v) for k, v in inputs.items()}).numpy()
    assert np.abs(ours - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max())


def test_eval_compares_with_the_reference_at_its_own_sampling(lcm_artifact):
    from sdopt.app.evaluate import EvalSettings, evaluate

    result = evaluate(lcm_artifact, None, [(PROMPT, 0), (PROMPT, 1)], EvalSettings(2, 2.0, "lcm"))
    assert result["reference_settings"] == {"steps": 25, "guidance": 2.0, "scheduler": "ddim"}
    assert result["steps"] == 2 and 0 <= result["alignment"] <= 1


def test_lcm_composes_with_int8_and_refuses_cache(tmp_path):
    out = tmp_path / "lcm-int8"
    assert main(["compress", "--recipe", "lcm+int8", *SHORT, "--calib-num-prompts", "2", "--out", str(out)]) == 0
    manifest = _manifest(out)
    assert manifest["pipeline"]["scheduler"] == "lcm"
    assert "int8" in manifest["components"]["unet"]["activation_format"]
    assert np.isfinite(Pipeline(out)(PROMPT, steps=4, guidance=2.0, scheduler="lcm").latents).all()
    with pytest.raises(SdoptError, match="lcm and cache do not compose"):
        resolve("lcm+int8+cache")


def test_two_processes_follow_the_one_process_loss_curve(loss_curves):
    curves = loss_curves(["--recipe", "lcm", *SHORT, "--set", "lcm.resume=false"], "lcm")
    for one, two in zip(curves[1], curves[2]):
        assert two == pytest.approx(one, rel=1e-3)


def test_bench_runs_it_at_its_own_sampling_and_the_peer_at_the_models(lcm_artifact):
    from sdopt.app.bench import BenchRequest, bench, prepare

    request = BenchRequest([lcm_artifact], None, "onnxruntime", "ort-fp32", None, None, None, 1, 0, None, None,
                           None, None)
    targets, settings, spec, random_weights, _ = prepare(request)
    assert targets[0].sampling == {"steps": 4, "scheduler": "lcm", "guidance": 2.0}
    assert (settings.steps, targets[1].sampling) == (25, {})
    rows = bench(targets, settings, spec, random_weights)["rows"]
    assert [len(r["raw_runs"][0]["unet"]) for r in rows] == [4, 25]


def test_the_defaults_train_a_fixed_step_count_at_the_students_learning_rate():
    """The same student on any CPU: a step count unless a time budget is asked for, never both; the whole UNet
    trains at 1e-5, LCM-LoRA adapters at 1e-4."""
    from sdopt.compress.lcm import DEFAULT_TRAIN_STEPS, LcmConfig, learning_rate
    from sdopt.compress.tiny_vae import TinyVaeConfig
    from sdopt.training.loop import fixed_steps

    config = LcmConfig()
    assert fixed_steps(config.train_steps, config.minutes, DEFAULT_TRAIN_STEPS) == DEFAULT_TRAIN_STEPS
    assert fixed_steps(None, 25.0, DEFAULT_TRAIN_STEPS) is None and fixed_steps(7, None, DEFAULT_TRAIN_STEPS) == 7
    for make in (LcmConfig, TinyVaeConfig):
        with pytest.raises(SdoptError, match="give train_steps or minutes, not both"):
            make(train_steps=10, minutes=5.0)
    recipe = resolve("lcm-lora", [parse_set("lcm.lr=2e-4")])
    assert learning_rate(recipe.passes[0][1]) == 2e-4
    assert (learning_rate(LcmConfig()), learning_rate(LcmConfig(lora_rank=8))) == (1e-5, 1e-4)
