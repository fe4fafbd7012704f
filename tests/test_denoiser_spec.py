"""The denoiser spec in the manifest: written by the backbone adapter, validated by the schema, and the same
spec the runtime reads for an artifact written before it existed."""

import copy

import pytest

from sdopt.contract.artifact import open_artifact
from sdopt.contract.denoiser_spec import input_of, read
from sdopt.contract.errors import SdoptError
from sdopt.contract.manifest import validate


def test_an_sd_artifact_names_each_input_by_role(tiny_fp32):
    manifest = open_artifact(tiny_fp32).manifest
    spec = manifest["pipeline"]["denoiser"]
    roles = {i["name"]: i["role"] for i in spec["inputs"]}
    assert roles == {"sample": "latent", "timestep": "timestep", "encoder_hidden_states": "text"}
    assert (spec["family"], spec["latent"], spec["guidance"]) == ("unet", {"layout": "nchw", "channels": 4},
                                                                  "classifier-free")
    assert (spec["prediction"], spec["scheduler_family"]) == ("epsilon", "ddpm")
    assert [e["graph"] for e in spec["text_encoders"]] == ["text_encoder"]
    assert input_of(spec, "guidance_scale") is None and input_of(spec, "latent")["axes"][0] == "batch"


def test_an_older_artifact_is_read_as_its_unet_convention_implies(tiny_fp32):
    manifest = open_artifact(tiny_fp32).manifest
    older = copy.deepcopy(manifest)
    del older["pipeline"]["denoiser"]
    assert read(older, {"prediction_type": "epsilon", "num_train_timesteps": 1000}) == manifest["pipeline"]["denoiser"]


@pytest.mark.parametrize("key, value", [("guidance", "telepathic"), ("prediction", "x0"),
                                        ("inputs", [{"name": "sample", "role": "latent", "axes": ["B" * 40]}]),
                                        ("timestep_domain", [0]), ("guidance", "embedded"),
                                        ("inputs", [{"name": "sample", "role": "latent", "axes": []},
                                                    {"name": "timestep", "role": "latent", "axes": []}]),
                                        ("text_encoders", [{"graph": "unet", "tokenizer": "tokenizer",
                                                            "kind": "clip", "max_length": 77,
                                                            "output": "last_hidden_state",
                                                            "combine": "concat-features"}])])
def test_a_doctored_spec_is_refused(tiny_fp32, key, value):
    manifest = copy.deepcopy(open_artifact(tiny_fp32).manifest)
    manifest["pipeline"]["denoiser"][key] = value
    with pytest.raises(SdoptError, match="denoiser"):
        validate(manifest, "doctored")


def test_a_spec_input_the_graph_lacks_is_refused_before_work(tiny_fp32, tmp_path):
    import json
    import shutil

    from sdopt.runtime.pipeline import Pipeline

    artifact = tmp_path / "art"
    shutil.copytree(tiny_fp32, artifact)
    manifest = json.loads((artifact / "manifest.json").read_text())
    manifest["pipeline"]["denoiser"]["inputs"].append({"name": "w", "role": "guidance_scale", "axes": ["batch"]})
    manifest["pipeline"]["denoiser"]["guidance"] = "embedded"
    (artifact / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SdoptError, match="its guidance-scale input w must be"):
        Pipeline(artifact)
