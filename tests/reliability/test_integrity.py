"""Only verified files are loaded: every file a backend opens is listed with its size and sha256 and lies
inside the artifact; nothing unlisted lies where a backend looks; the graphs' inputs and outputs are the
manifest's."""

import json
import os

import numpy as np
import onnx
import pytest
from reliability_helpers import fails, manifest_of, rehash, write_manifest

from sdopt.contract.limits import MAX_MANIFEST_BYTES


def run_fails(capsys, folder, png) -> str:
    line = fails(capsys, ["run", folder, "--prompt", "x", "--out", png])
    assert not png.exists()
    return line


def test_missing_file(capsys, artifact_copy, png):
    (artifact_copy / "vae_decoder" / "model.onnx").unlink()
    assert "missing file vae_decoder/model.onnx" in run_fails(capsys, artifact_copy, png)


def test_corrupt_file(capsys, artifact_copy, png):
    with open(artifact_copy / "unet" / "model.onnx", "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02")
    assert "unet/model.onnx is corrupt (sha256" in run_fails(capsys, artifact_copy, png)


def test_truncated_file(capsys, artifact_copy, png):
    path = artifact_copy / "unet" / "model.onnx"
    path.write_bytes(path.read_bytes()[:-10])
    assert "unet/model.onnx is corrupt (size" in run_fails(capsys, artifact_copy, png)


def test_sha_in_manifest_changed(capsys, artifact_copy, png):
    manifest = manifest_of(artifact_copy)
    manifest["files"]["tokenizer/tokenizer.json"]["sha256"] = "0" * 64
    write_manifest(artifact_copy, manifest)
    assert "tokenizer/tokenizer.json is corrupt" in run_fails(capsys, artifact_copy, png)


def test_files_entry_removed(capsys, artifact_copy, png):
    manifest = manifest_of(artifact_copy)
    manifest["components"]["unet"]["files"] = {}
    write_manifest(artifact_copy, manifest)
    assert "components.unet.files" in run_fails(capsys, artifact_copy, png)
    manifest["components"]["unet"].pop("files")
    write_manifest(artifact_copy, manifest)
    assert "components.unet: missing key 'files'" in run_fails(capsys, artifact_copy, png)


@pytest.mark.parametrize("extra", ["unet/model.onnx_data", "unet/weights/x.bin", "tokenizer/added_tokens.json",
                                   "scheduler/other.json"])
def test_unlisted_file_where_a_backend_looks(capsys, artifact_copy, png, extra):
    (artifact_copy / extra).parent.mkdir(exist_ok=True)
    (artifact_copy / extra).write_bytes(b"\x00" * 64)
    assert f"{extra} is not listed in the manifest" in run_fails(capsys, artifact_copy, png)


def test_unlisted_file_in_a_listed_build(capsys, artifact_copy, png):
    pytest.importorskip("openvino", reason="the openvino extra is not installed")
    from sdopt.app.cli import main

    assert main(["build", str(artifact_copy), "--format", "openvino"]) == 0
    (artifact_copy / "unet" / "extension.so").write_bytes(b"\x7fELF")
    line = fails(capsys, ["run", artifact_copy, "--prompt", "x", "--out", png, "--backend", "openvino"])
    assert "unet/extension.so is not listed" in line


def test_symlinked_graph_outside(capsys, artifact_copy, tmp_path, png):
    outside = tmp_path / "elsewhere.onnx"
    os.replace(artifact_copy / "unet" / "model.onnx", outside)
    os.symlink(outside, artifact_copy / "unet" / "model.onnx")
    assert "unet/model.onnx resolves outside the artifact folder" in run_fails(capsys, artifact_copy, png)


def test_symlinked_folder_outside(capsys, artifact_copy, tmp_path, png):
    os.replace(artifact_copy / "vae_decoder", tmp_path / "vae_elsewhere")
    os.symlink(tmp_path / "vae_elsewhere", artifact_copy / "vae_decoder")
    assert "resolves outside the artifact folder" in run_fails(capsys, artifact_copy, png)


def test_symlink_inside_is_followed(artifact_copy, tmp_path):
    from sdopt.runtime.pipeline import Pipeline

    os.replace(artifact_copy / "unet" / "model.onnx", artifact_copy / "unet.onnx.blob")
    os.symlink("../unet.onnx.blob", artifact_copy / "unet" / "model.onnx")
    assert Pipeline(artifact_copy)("x", steps=1).image.shape == (64, 64, 3)


def test_external_data_location_outside(capsys, artifact_copy, tmp_path, png):
    """A graph (consistently hashed) whose weights point outside its folder is refused."""
    path = artifact_copy / "vae_decoder" / "model.onnx"
    model = onnx.load(str(path))
    onnx.save_model(model, str(tmp_path / "evil.onnx"), save_as_external_data=True, location="weights.bin",
                    size_threshold=0)
    evil = onnx.load(str(tmp_path / "evil.onnx"), load_external_data=False)
    for init in evil.graph.initializer:
        for entry in init.external_data:
            if entry.key == "location":
                entry.value = "../../weights.bin"
    onnx.save(evil, str(path))
    rehash(artifact_copy, "vae_decoder/model.onnx")
    line = run_fails(capsys, artifact_copy, png)
    assert "vae_decoder/model.onnx: ONNX Runtime cannot load it" in line and "escapes model directory" in line


def test_manifest_size_cap(capsys, artifact_copy, png):
    manifest = manifest_of(artifact_copy)
    manifest["passes"] = [{"padding": "x" * (MAX_MANIFEST_BYTES + 1)}]
    write_manifest(artifact_copy, manifest)
    assert "over the 16 MiB a manifest may have" in run_fails(capsys, artifact_copy, png)


@pytest.mark.parametrize("change, message", [
    (lambda m: m["components"]["unet"]["inputs"][0].update(name="latents"), "unet: the graph's inputs"),
    (lambda m: m["components"]["unet"]["outputs"][0].update(name="noise_pred"), "unet: the graph's outputs"),
    (lambda m: m["components"]["vae_decoder"]["inputs"][0].update(dtype="float16"), "input latent_sample is float32"),
    (lambda m: m["components"]["text_encoder"]["inputs"][0].update(shape=["batch"]), "of rank 2 in the graph"),
])
def test_graph_io_compared_with_manifest(capsys, artifact_copy, png, change, message):
    manifest = manifest_of(artifact_copy)
    change(manifest)
    write_manifest(artifact_copy, manifest)
    assert message in run_fails(capsys, artifact_copy, png)


def test_graph_an_engine_cannot_load(capsys, artifact_copy, png):
    (artifact_copy / "unet" / "model.onnx").write_bytes(b"not a graph" * 10)
    rehash(artifact_copy, "unet/model.onnx")
    line = run_fails(capsys, artifact_copy, png)
    assert "unet/model.onnx: ONNX Runtime cannot load it" in line and "protobuf parsing failed" in line.lower()


def test_old_schema_is_named(capsys, artifact_copy, png):
    manifest = manifest_of(artifact_copy)
    manifest["schema_version"] = 1
    write_manifest(artifact_copy, manifest)
    assert "schema version 1, this sdopt reads 2 and 3" in run_fails(capsys, artifact_copy, png)


@pytest.mark.parametrize("text, message", [
    ("[1, 2]", "top level: expected a mapping"),
    ("{", "invalid JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    ('{"a": NaN}', "NaN is not valid JSON"),
    ('{"a": 1, "a": 2}', "duplicate key"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
])
def test_malformed_manifest(capsys, artifact_copy, png, text, message):
    (artifact_copy / "manifest.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    assert message in run_fails(capsys, artifact_copy, png)


@pytest.mark.parametrize("path, value, message", [
    (("pipeline", "vae_scale_factor"), 0, "pipeline.vae_scale_factor: 0 is outside"),
    (("pipeline", "vae_scale_factor"), 6, "not a power of 2"),
    (("pipeline", "height"), "64", "pipeline.height: expected an integer"),
    (("pipeline", "steps"), True, "pipeline.steps: expected an integer"),
    (("pipeline", "vae_scaling_factor"), 0, "must be > 0"),
    (("pipeline", "max_length"), 1.5, "expected an integer"),
    (("source", "random_weights"), "no", "expected true or false"),
    (("components",), [], "components: expected a mapping"),
    (("pipeline", "kind"), "sd4", "is not one of sd, sdxl, sd3, flux"),
])
def test_manifest_values_checked(capsys, artifact_copy, png, path, value, message):
    manifest = manifest_of(artifact_copy)
    target = manifest
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    write_manifest(artifact_copy, manifest)
    assert message in run_fails(capsys, artifact_copy, png)


@pytest.mark.parametrize("key", ["pipeline", "components", "files", "source", "format"])
def test_manifest_keys_required(capsys, artifact_copy, png, key):
    manifest = manifest_of(artifact_copy)
    manifest.pop(key)
    write_manifest(artifact_copy, manifest)
    assert f"missing key '{key}'" in run_fails(capsys, artifact_copy, png)


@pytest.mark.parametrize("change, message", [
    (lambda c: c.pop("unet"), "0 graphs of role 'denoiser', a sd pipeline has 1"),
    (lambda c: c["vae_encoder"].update(role="denoiser"), "2 graphs of role 'denoiser'"),
    (lambda c: c["text_encoder"].pop("tokenizer"), "a text encoder needs the folder of its listed tokenizer"),
    (lambda c: c["unet"].update(role="Denoiser"), "components.unet.role"),
])
def test_required_roles(capsys, artifact_copy, png, change, message):
    manifest = manifest_of(artifact_copy)
    change(manifest["components"])
    write_manifest(artifact_copy, manifest)
    assert message in run_fails(capsys, artifact_copy, png)


def test_unknown_denoise_strategy(capsys, artifact_copy, png):
    manifest = manifest_of(artifact_copy)
    manifest["pipeline"]["denoise"] = {"strategy": "teleport"}
    write_manifest(artifact_copy, manifest)
    assert "denoise strategy 'teleport' is unknown to this runtime" in run_fails(capsys, artifact_copy, png)


def test_tokenizer_that_is_not_one(capsys, artifact_copy, png):
    (artifact_copy / "tokenizer" / "tokenizer.json").write_text(json.dumps({"version": "1.0"}))
    rehash(artifact_copy, "tokenizer/tokenizer.json")
    assert "tokenizer/tokenizer.json: not a usable tokenizer" in run_fails(capsys, artifact_copy, png)


def test_tokenizer_that_pads_wrong(capsys, artifact_copy, png):
    path = artifact_copy / "tokenizer" / "tokenizer.json"
    data = json.loads(path.read_text())
    data["padding"]["strategy"], data["truncation"]["max_length"] = {"Fixed": 50}, 50
    path.write_text(json.dumps(data))
    rehash(artifact_copy, "tokenizer/tokenizer.json")
    assert "pads prompts to 50 tokens, the text encoder expects 77" in run_fails(capsys, artifact_copy, png)


@pytest.mark.parametrize("config, scheduler, message", [
    ({"use_karras_sigmas": True}, "euler", "does not support use_karras_sigmas=True"),
    ({"num_train_timesteps": "x"}, "ddim", "num_train_timesteps: expected an integer"),
    ({"num_train_timesteps": 10 ** 12}, "ddim", "num_train_timesteps"),
    ({"beta_schedule": "cosine"}, "ddim", "beta_schedule"),
    ({"trained_betas": [0.1, "a"]}, "ddim", "trained_betas"),
    ({"num_train_timesteps": 10}, "ddim", "between 1 and num_train_timesteps=10"),
    ({"_use_default_values": 5}, "ddim", "_use_default_values"),
    ({"steps_offset": 1, "num_train_timesteps": 20}, "ddim", "reaches timestep 20, outside the model's 20"),
])
def test_scheduler_config_checked_before_generating(capsys, artifact_copy, png, config, scheduler, message):
    path = artifact_copy / "scheduler" / "scheduler_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **config}))
    rehash(artifact_copy, "scheduler/scheduler_config.json")
    line = fails(capsys, ["run", artifact_copy, "--prompt", "x", "--out", png, "--scheduler", scheduler,
                          "--steps", "20"])
    assert message in line and "sampling" not in capsys.readouterr().err
    assert not png.exists()


@pytest.mark.parametrize("text", ["[1]", "{", "\xff"])
def test_scheduler_config_not_json(capsys, artifact_copy, png, text):
    (artifact_copy / "scheduler" / "scheduler_config.json").write_bytes(text.encode("latin-1"))
    rehash(artifact_copy, "scheduler/scheduler_config.json")
    assert "scheduler_config.json: not a" in run_fails(capsys, artifact_copy, png)


def test_tensorrt_engine_outside_its_build(capsys, artifact_copy, png):
    manifest = manifest_of(artifact_copy)
    manifest["builds"] = {"tensorrt": {"files": {"tensorrt/unet.plan": {"sha256": "0" * 64, "bytes": 1}},
                                       "components": {"unet": {"engines": ["unet/model.onnx"]}},
                                       "tensorrt_version": "10", "seconds": 1.0}}
    write_manifest(artifact_copy, manifest)
    assert "engine unet/model.onnx is not listed in its files" in run_fails(capsys, artifact_copy, png)


def test_listed_symlink_outside(capsys, artifact_copy, png, tmp_path):
    """A listed file that is a symlink leading outside is refused before anything reads it."""
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(10, dtype=np.uint8).tobytes())
    manifest = manifest_of(artifact_copy)
    manifest["files"]["tokenizer/secret"] = {"sha256": "0" * 64, "bytes": 10}
    write_manifest(artifact_copy, manifest)
    os.symlink(secret, artifact_copy / "tokenizer" / "secret")
    assert "tokenizer/secret resolves outside" in run_fails(capsys, artifact_copy, png)


@pytest.mark.parametrize("low_memory", [True, False])
def test_a_graph_swapped_after_the_artifact_was_opened_is_refused_when_loaded(artifact_copy, tmp_path, low_memory):
    """Each load verifies what it loads: --low-memory loads every generation, so a swap between generations (or
    a folder replaced by a concurrent compress) is caught; without it the load at start is verified."""
    import shutil

    from sdopt.app.cli import main
    from sdopt.contract.errors import SdoptError
    from sdopt.runtime.pipeline import Pipeline

    other = tmp_path / "batched"
    assert main(["compress", "--model", "arch:tiny", "--attention", "batched", "--out", str(other)]) == 0
    pipe = Pipeline(artifact_copy, low_memory=True) if low_memory else None
    if pipe is not None:
        pipe("x", steps=1)
    shutil.copyfile(other / "unet" / "model.onnx", artifact_copy / "unet" / "model.onnx")  # valid, other bytes
    with pytest.raises(SdoptError, match="unet/model.onnx is corrupt"):
        (pipe or Pipeline(artifact_copy))("x", steps=1)


def test_support_files_are_verified_as_read(capsys, artifact_copy, png):
    path = artifact_copy / "scheduler" / "scheduler_config.json"
    config = json.loads(path.read_text())
    config["beta_end"] = 0.02  # valid, but not what the manifest lists
    path.write_text(json.dumps(config)[: path.stat().st_size].ljust(path.stat().st_size))
    assert "scheduler/scheduler_config.json is corrupt" in run_fails(capsys, artifact_copy, png)


@pytest.mark.parametrize("command", ["eval", "bench"])
def test_a_local_folder_named_in_a_manifest_is_never_opened(capsys, artifact_copy, tmp_path, monkeypatch, command):
    """A manifest's source.spec names where the model came from; eval and bench remake a reference or peers
    only from built-in sources, or from a folder the user names again (--model)."""
    from sdopt.reference.families import FAMILIES

    cache = tmp_path / "cache"
    monkeypatch.setenv("SDOPT_CACHE", str(cache))
    manifest = manifest_of(artifact_copy)
    manifest["source"]["spec"] = str(FAMILIES["tiny-shapes"].model_dir)  # a diffusers folder elsewhere
    write_manifest(artifact_copy, manifest)
    argv = [command, artifact_copy] + (["--peers", "ort-fp32", "--runs", "1"] if command == "bench" else [])
    line = fails(capsys, argv)
    assert "give the folder again with --model FOLDER" in line
    assert not cache.exists() or not any(cache.rglob("*.onnx"))
