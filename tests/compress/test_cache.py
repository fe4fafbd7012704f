"""The cache pass: the shallow/full split reproduces the UNet, the exported graphs and the runtime's schedules
do what DeepCache does, and the pass composes with int8 and the OpenVINO / TensorRT builds."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from sdopt.app.cli import main
from sdopt.app.evaluate import psnr
from sdopt.backbones.unet.convention import run_unet
from sdopt.backbones.unet.deepcache import FullUNet, ShallowUNet, boundary
from sdopt.runtime import caching
from sdopt.runtime.pipeline import Pipeline
from sdopt.sources.source import load_source

PROMPT = "a large red circle in the top left"


def _relative_error(a, b) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("model", ["arch:tiny", "tiny-shapes", "sd21_folder", "sdxl_folder", "sd_inpaint_folder"])
def test_split_reproduces_the_unet_for_every_branch(request, model):
    spec = str(request.getfixturevalue(model)) if model.endswith("_folder") else model
    source = load_source(spec)
    unet, sdxl = source.pipeline.unet, source.kind == "sdxl"
    inputs = source.example_inputs(latent_hw=(8, 16))
    with torch.no_grad():
        reference = run_unet(unet, inputs)
        for branch in range(3 * len(unet.up_blocks)):
            where = boundary(unet, branch)
            out, feature = FullUNet(unet, where, sdxl)(*inputs.values())
            shallow = ShallowUNet(unet, where, sdxl)(*inputs.values(), feature)
            assert _relative_error(out, reference) <= 1e-5, branch
            assert _relative_error(shallow, reference) <= 1e-5, branch
    with pytest.raises(Exception, match="past this UNet"):
        boundary(unet, 3 * len(unet.up_blocks))


def test_branch_numbering_follows_deepcache():
    from diffusers import UNet2DConditionModel

    # SD's layout: 2 resnets per down block, 3 per up block
    unet = UNet2DConditionModel(block_out_channels=(32, 64), layers_per_block=2, norm_num_groups=8,
                                cross_attention_dim=16, attention_head_dim=4,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    names = [(boundary(unet, b).name, boundary(unet, b).skips) for b in range(4)]
    assert names == [("up_blocks.1.resnets.2", 1), ("up_blocks.1.resnets.1", 2), ("up_blocks.1.resnets.0", 3),
                     ("up_blocks.0.resnets.2", 4)]


@pytest.fixture(scope="module")
def cached_artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("cache") / "tiny-cache"
    assert main(["compress", "--model", "tiny-shapes", "--recipe", "cache", "--out", str(out)]) == 0
    return out


def _session(folder, name):
    return ort.InferenceSession(str(folder / name / "model.onnx"), providers=["CPUExecutionProvider"])


def test_exported_graphs_reproduce_the_plain_unet(cached_artifact, tinyshapes_fp32):
    rng = np.random.default_rng(0)
    feeds = {"sample": rng.standard_normal((2, 4, 8, 12), dtype=np.float32),
             "timestep": np.full(2, 321.0, np.float32),
             "encoder_hidden_states": rng.standard_normal((2, 77, 128), dtype=np.float32)}
    plain = _session(tinyshapes_fp32, "unet").run(None, feeds)[0]
    full, feature = _session(cached_artifact, "unet").run(None, feeds)
    shallow = _session(cached_artifact, "unet_shallow").run(None, {**feeds, "cache_feature": feature})[0]
    for out in (full, shallow):
        assert np.abs(out - plain).max() / np.abs(plain).max() <= 1e-5
    manifest = json.loads((cached_artifact / "manifest.json").read_text())
    assert manifest["pipeline"]["denoise"] == {"strategy": "feature_cache", "params": {
        "schedule": "uniform", "interval": 3, "threshold": 0.05, "pow": 1.4, "center": 15}}
    record = manifest["passes"][-1]
    assert record["boundary"] == "up_blocks.2.resnets.1" and record["shallow_parameters"] < record["unet_parameters"]
    sizes = {name: sum(f["bytes"] for f in c["files"].values()) for name, c in manifest["components"].items()}
    assert sizes["unet_shallow"] < 0.1 * sizes["unet"]


def test_refreshing_every_step_gives_the_plain_image(cached_artifact, tinyshapes_fp32):
    plain = Pipeline(tinyshapes_fp32)(PROMPT, seed=3, steps=8, guidance=2.0)
    for overrides in ({"interval": 1}, {"strategy": "plain"}):
        pipe = Pipeline(cached_artifact, denoise_overrides=overrides)
        result = pipe(PROMPT, seed=3, steps=8, guidance=2.0)
        assert psnr(result.image, plain.image) >= 60 and result.stats["full"] == 8
    cached = Pipeline(cached_artifact)(PROMPT, seed=3, steps=8, guidance=2.0)
    assert cached.stats == {"full": 3, "shallow": 5}
    assert 30 < psnr(cached.image, plain.image) < 60


def test_schedules():
    assert caching.full_steps("uniform", 20, 3) == [0, 3, 6, 9, 12, 15, 18]
    assert caching.full_steps("uniform", 5, 1) == [0, 1, 2, 3, 4]
    nonuniform = caching.full_steps("nonuniform", 50, 5, pow=1.4, center=15)
    assert len(nonuniform) == 10 and nonuniform[0] == 0
    gaps = np.diff(nonuniform)
    assert gaps[np.argmin(np.abs(np.array(nonuniform[1:]) - 15))] <= gaps.max() - 2  # dense around the centre


@pytest.mark.parametrize("steps,interval,center,pow", [(50, 5, 15, 1.4), (20, 3, 10, 1.4), (25, 2, 12, 1.2)])
def test_nonuniform_schedule_is_deepcaches(steps, interval, center, pow):
    import ast
    import importlib.util
    import warnings
    from pathlib import Path

    # DeepCache's own schedule function, read from its pipeline module (which the installed diffusers can no
    # longer import as a whole)
    path = Path(importlib.util.find_spec("DeepCache").submodule_search_locations[0]) / "sd" / \
        "pipeline_stable_diffusion.py"
    tree = ast.parse(path.read_text())
    function = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "sample_from_quad_center")
    namespace = {"np": np}
    exec(compile(ast.Module([function], []), str(path), "exec"), namespace)
    sample_from_quad_center = namespace["sample_from_quad_center"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numpy warns as it drops the imaginary parts, as DeepCache relies on
        expected, _ = sample_from_quad_center(steps, -(-steps // interval), center=center, pow=pow)
    assert caching.full_steps("nonuniform", steps, interval, pow, center) == sorted(int(i) for i in expected)


def test_adaptive_schedule_follows_the_threshold(cached_artifact):
    counts = []
    for threshold in (0.001, 0.05, 50.0):
        pipe = Pipeline(cached_artifact, denoise_overrides={"schedule": "adaptive", "threshold": threshold,
                                                            "interval": 4})
        counts.append(pipe(PROMPT, seed=1, steps=20, guidance=2.0).stats["full"])
    assert counts[0] == 10  # every change passes a tiny threshold: full, shallow, full, ...
    assert counts[0] >= counts[1] >= counts[2] == 5  # a huge one: only the interval cap refreshes


def test_same_images_as_the_deepcache_package(cached_artifact):
    from DeepCache import DeepCacheSDHelper

    pipe = load_source("tiny-shapes").pipeline
    ours = Pipeline(cached_artifact)
    noise = ours.initial_noise(5, 32, 32)
    helper = DeepCacheSDHelper(pipe=pipe)
    helper.set_params(cache_interval=3, cache_branch_id=0)
    helper.enable()
    try:
        with torch.no_grad():
            theirs = pipe(PROMPT, num_inference_steps=10, guidance_scale=2.0, height=32, width=32,
                          latents=torch.from_numpy(noise), output_type="np").images[0]
    finally:
        helper.disable()
    image = ours(PROMPT, seed=5, steps=10, guidance=2.0, noise=noise).image
    assert psnr(image, (theirs * 255).round().astype(np.uint8)) >= 45


def test_int8_and_cache_compose_and_build_for_openvino(tmp_path):
    out = tmp_path / "int8cache"
    assert main(["compress", "--recipe", "int8+cache", "--calib-num-prompts", "2", "--calib-steps", "4",
                 "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    for name in ("unet", "unet_shallow"):
        assert manifest["components"][name]["ops"]["QuantizeLinear"] > 0
    assert main(["build", str(out), "--format", "openvino"]) == 0
    image = tmp_path / "a.png"
    assert main(["run", str(out), "--prompt", PROMPT, "--out", str(image), "--backend", "openvino"]) == 0
    assert image.stat().st_size > 0


def test_tensorrt_profiles_cover_the_cached_feature(tmp_path):
    from sdopt.export.tensorrt import TensorrtConfig, input_profiles

    out = tmp_path / "tiny-cache"
    assert main(["compress", "--model", "arch:tiny", "--recipe", "cache", "--set", "cache.branch=3",
                 "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    info, shallow = manifest["pipeline"], manifest["components"]["unet_shallow"]
    feature = next(i for i in shallow["inputs"] if i["name"] == "cache_feature")
    assert feature["shape"][2:] == ["height/2", "width/2"]
    profiles = input_profiles("unet_shallow", shallow, info, TensorrtConfig(batch=(1, 1, 2), height=(64, 128, 256)))
    f = info["vae_scale_factor"]
    assert profiles["cache_feature"][2] == (4, feature["shape"][1], 256 // f // 2, info["width"] // f // 2)
    assert profiles["sample"][0][0] == 2  # guidance batch


@pytest.mark.parametrize("args,message", [
    (["--set", "cache.branch=9"], "branch 9 is past this UNet's 3 blocks"),
    (["--set", "cache.schedule=sometimes"], "schedule 'sometimes'"),
    (["--set", "cache.interval=0"], "interval 0 must be an integer"),
    (["--set", "cache.threshold=-1"], "threshold -1.0 must be a number"),
])
def test_bad_cache_options_are_refused_before_work(capsys, tmp_path, args, message):
    out = tmp_path / "never"
    assert main(["compress", "--recipe", "cache", *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and not out.exists()


def test_bad_denoise_overrides_are_one_line(capsys, cached_artifact, tinyshapes_fp32, tmp_path):
    png = tmp_path / "x.png"
    for folder, flag, message in ((cached_artifact, "branch=2", "the cache branch is fixed"),
                                  (cached_artifact, "schedule=often", "schedule 'often'"),
                                  (cached_artifact, "strategy=teleport", "unknown to this runtime"),
                                  (tinyshapes_fp32, "interval=2", "plain takes no parameters"),
                                  (tinyshapes_fp32, "strategy=feature_cache", "needs one graph of role")):
        assert main(["run", str(folder), "--prompt", PROMPT, "--out", str(png), "--denoise", flag]) == 2
        assert message in capsys.readouterr().err and not png.exists()


@pytest.mark.parametrize("edit,message", [
    (lambda m: m["pipeline"]["denoise"].update(params=[1]), "its params must be a mapping"),
    (lambda m: m["pipeline"]["denoise"]["params"].update(interval="3"), "interval '3' must be an integer"),
    (lambda m: m["components"]["unet"]["outputs"].pop(), "needs output cache_feature of the unet graph"),
    (lambda m: m["components"]["unet_shallow"].update(role="denoiser_extra"), "one graph of role 'denoiser_shallow'"),
])
def test_a_damaged_cache_manifest_is_refused_in_one_line(capsys, cached_artifact, tmp_path, edit, message):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(cached_artifact, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    edit(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    png = tmp_path / "x.png"
    assert main(["run", str(folder), "--prompt", PROMPT, "--out", str(png)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and len([line for line in err if "error" in line]) == 1 and not png.exists()
