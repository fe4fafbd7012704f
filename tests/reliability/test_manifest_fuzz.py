"""Property: a mutated manifest (types, keys, paths, nesting, sizes, raw bytes) never makes the artifact
loader, or the runtime on an artifact the loader accepts, raise anything but sdopt's own error.

SDOPT_FUZZ_EXAMPLES (default 300) and SDOPT_FUZZ_SEED (default 2026) set the run, e.g. 10,000 examples:
    SDOPT_FUZZ_EXAMPLES=10000 pytest tests/reliability/test_manifest_fuzz.py
"""

import copy
import json
import os
import shutil

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from sdopt.contract.artifact import open_artifact
from sdopt.contract.errors import SdoptError
from sdopt.runtime.pipeline import Pipeline

EXAMPLES = int(os.environ.get("SDOPT_FUZZ_EXAMPLES", 300))
SEED = int(os.environ.get("SDOPT_FUZZ_SEED", 2026))

TRICKY_STRINGS = ["../x", "/etc/passwd", "unet/../../x", "model.onnx", "model.onnx_data", "..", "", ".", "unet",
                  "tokenizer/tokenizer.json", "openvino/unet/model.xml",
                  "unet/openvino_model.xml", "a" * 5000, "float32", "batch", "\udcff",
                  "0" * 64, "sdopt-artifact", "sdxl", "C:\\x", "x\x00y"]
leaves = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70),
                   st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                   st.sampled_from(TRICKY_STRINGS), st.integers(-3, 5000))
values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.one_of(st.text(max_size=8), st.sampled_from(TRICKY_STRINGS)), inner,
                                        max_size=4), max_leaves=12)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


def _mutate(manifest, data) -> bytes:
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        path = data.draw(st.sampled_from(list(_paths(manifest))), label="path")
        op = data.draw(st.sampled_from(["replace", "delete", "insert", "wrap", "duplicate"]), label="op")
        if not path:
            if op == "replace":
                manifest = data.draw(values, label="value")
            continue
        parent = manifest
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        if op == "replace":
            parent[key] = data.draw(values, label="value")
        elif op == "delete":
            del parent[key]
        elif op == "wrap":
            parent[key] = [parent[key]] if data.draw(st.booleans()) else {"x": parent[key]}
        elif op == "duplicate" and isinstance(parent, dict):
            parent[data.draw(st.sampled_from(TRICKY_STRINGS), label="new key")] = copy.deepcopy(parent[key])
        elif isinstance(parent[key], dict):
            parent[key][data.draw(st.one_of(st.text(max_size=8), st.sampled_from(TRICKY_STRINGS)))] = \
                data.draw(values)
        elif isinstance(parent[key], list):
            parent[key].append(data.draw(values))
    text = json.dumps(manifest, allow_nan=True, ensure_ascii=data.draw(st.booleans()))
    raw = text.encode("utf-8", "surrogatepass")
    cut = data.draw(st.sampled_from(["none", "none", "none", "truncate", "garble", "deep"]), label="raw")
    if cut == "truncate":
        raw = raw[:data.draw(st.integers(0, len(raw)))]
    elif cut == "garble":
        i = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        raw = raw[:i] + bytes([data.draw(st.integers(0, 255))]) + raw[i + 1:]
    elif cut == "deep":
        depth = data.draw(st.integers(1, 200_000))
        raw = b'{"a": ' + b"[" * depth + b"]" * depth + b", " + raw[1:]
    return raw


@pytest.fixture(scope="module")
def fuzz_folder(tiny_fp32, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz") / "artifact"
    shutil.copytree(tiny_fp32, folder)
    return folder


@pytest.fixture(scope="module")
def newer_folder(tiny_fp32, tmp_path_factory):
    """An artifact holding the fields added since the fuzz was first written, each real: a static OpenVINO build,
    a full decoder beside the default one, the LCM-LoRA file, the attention form, the attention size the runtime
    checks memory with, a scheduler of the model's own."""
    import hashlib

    from sdopt.app.cli import main

    folder = tmp_path_factory.mktemp("fuzz-newer") / "artifact"
    shutil.copytree(tiny_fp32, folder)
    assert main(["build", str(folder), "--format", "openvino", "--static"]) == 0
    m = json.loads((folder / "manifest.json").read_text())
    shutil.copytree(folder / "vae_decoder", folder / "vae_decoder_full")  # graph, config and its IR
    m["components"]["vae_decoder_full"] = {**copy.deepcopy(m["components"]["vae_decoder"]), "role": "vae_decoder_full"}
    ir = m["builds"]["openvino"]["files"]
    ir.update({f"vae_decoder_full/{f}": ir[f"vae_decoder/{f}"] for f in ("openvino_model.xml", "openvino_model.bin")})
    (folder / "lcm_lora").mkdir()
    (folder / "lcm_lora" / "pytorch_lora_weights.safetensors").write_bytes(b"lora")
    m["files"]["lcm_lora/pytorch_lora_weights.safetensors"] = {"sha256": hashlib.sha256(b"lora").hexdigest(),
                                                               "bytes": 4}
    m["components"]["unet"]["attention"] = "head-sliced"
    m["pipeline"].update(scheduler="euler", attention_downsample=1)
    (folder / "manifest.json").write_text(json.dumps(m))
    return folder


@pytest.mark.parametrize("fields", ["as written", "with the newer fields"])
def test_mutated_manifests_raise_only_sdopt_errors(request, fuzz_folder, fields):
    source = request.getfixturevalue("tiny_fp32" if fields == "as written" else "newer_folder")
    original = json.loads((source / "manifest.json").read_text())
    folder = fuzz_folder if fields == "as written" else source
    outcomes = {"refused": 0, "accepted": 0}

    @seed(SEED)
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def check(data):
        (folder / "manifest.json").write_bytes(_mutate(copy.deepcopy(original), data))
        backend = data.draw(st.sampled_from(["onnxruntime", "openvino"]), label="backend") \
            if folder != fuzz_folder else "onnxruntime"
        try:
            open_artifact(folder, verify=False)
            Pipeline(folder, backend, verify=False)("x", steps=1)
        except SdoptError:
            outcomes["refused"] += 1
            return
        outcomes["accepted"] += 1

    check()
    print(f"{EXAMPLES} mutated manifests (seed {SEED}): {outcomes['refused']} refused with sdopt's error, "
          f"{outcomes['accepted']} accepted and run")
    assert outcomes["refused"] > 0
