"""LoRA fusing on tiny-shapes: a LoRA this test trains (prompts saying "red", images drawn blue) is fused
by `sdopt compress --lora`; the detector sees the change in the fused artifact, and int8 of the fused model
keeps it. The same LoRA in kohya's key format fuses to the same model."""

import json

import numpy as np
import pytest
import torch

from sdopt.app.cli import main
from sdopt.reference.tinyshapes.detect import detect
from sdopt.reference.tinyshapes.grammar import caption_from, parse, sample_pairs
from sdopt.reference.tinyshapes.render import render
from sdopt.runtime.pipeline import Pipeline

RED = [caption_from(dict(parse(c), color="red")) for c, _ in sample_pairs(12, seed=9)]
GREEN = [caption_from(dict(parse(c), color="green")) for c, _ in sample_pairs(6, seed=10)]


@pytest.fixture(scope="module")
def red_to_blue(tmp_path_factory):
    """(diffusers-format file, kohya-format file) of a rank-8 LoRA on the UNet's attention projections."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_kohya
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    from sdopt.sources.source import load_source

    torch.manual_seed(0)
    pipe = load_source("tiny-shapes").pipeline
    unet, scheduler = pipe.unet, pipe.scheduler
    for module in (unet, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False)
    unet.add_adapter(LoraConfig(r=8, lora_alpha=8, init_lora_weights="gaussian",
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    pairs = [(c, s) for c, s in sample_pairs(4000, seed=5) if parse(c)["color"] == "red"][:256]
    images = np.stack([render(caption_from(dict(parse(c), color="blue")), seed=s) for c, s in pairs])
    with torch.no_grad():
        pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
        latents = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
        ids = pipe.tokenizer([c for c, _ in pairs], padding="max_length", max_length=77, return_tensors="pt").input_ids
        embeddings = pipe.text_encoder(ids)[0]
    optimizer = torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad], lr=1e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(200):
        batch = torch.randint(0, len(pairs), (32,), generator=g)
        z, noise = latents[batch], torch.randn(latents[batch].shape, generator=g)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (32,), generator=g)
        target = scheduler.get_velocity(z, noise, t)  # tiny-shapes predicts v
        loss = torch.nn.functional.mse_loss(unet(scheduler.add_noise(z, noise, t), t, embeddings[batch]).sample, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    folder = tmp_path_factory.mktemp("lora")
    layers = get_peft_model_state_dict(unet)
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=layers, weight_name="red_to_blue.safetensors")
    peft_keys = {f"unet.{k}": v for k, v in layers.items()}
    save_file(convert_state_dict_to_kohya(peft_keys), str(folder / "red_to_blue_kohya.safetensors"))
    return folder / "red_to_blue.safetensors", folder / "red_to_blue_kohya.safetensors"


def _colours(artifact, prompts):
    pipe = Pipeline(artifact)
    return [detect(pipe(p, seed=i, steps=25, guidance=2.0).image)["color"] for i, p in enumerate(prompts)]


@pytest.fixture(scope="module")
def fused(red_to_blue, tmp_path_factory):
    out = tmp_path_factory.mktemp("fused") / "lora"
    assert main(["compress", "--model", "tiny-shapes", "--lora", str(red_to_blue[0]), "--out", str(out)]) == 0
    return out


def test_fused_lora_turns_red_into_blue(fused, tinyshapes_fp32):
    assert _colours(tinyshapes_fp32, RED).count("red") >= 11
    assert _colours(fused, RED).count("blue") >= 11
    assert _colours(fused, GREEN).count("green") >= 5  # other colours stay theirs
    manifest = json.loads((fused / "manifest.json").read_text())
    (record,) = [r for r in manifest["passes"] if r["pass"] == "lora"]
    assert record["file"] == "red_to_blue.safetensors" and len(record["sha256"]) == 64
    assert record["fused_layers"]["unet"] > 0 and record["fused_layers"]["text_encoder"] == 0


def test_int8_of_the_fused_model_keeps_it(red_to_blue, tmp_path):
    out = tmp_path / "lora-int8"
    assert main(["compress", "--model", "tiny-shapes", "--recipe", "int8", "--lora", f"{red_to_blue[0]}:1.0",
                 "--calib-num-prompts", "2", "--out", str(out)]) == 0
    assert [p["pass"] for p in json.loads((out / "manifest.json").read_text())["recipe"]["passes"]] == \
        ["lora", "quantize"]
    assert _colours(out, RED).count("blue") >= 11


def test_kohya_format_fuses_to_the_same_model(red_to_blue, fused, tmp_path):
    out = tmp_path / "kohya"
    assert main(["compress", "--model", "tiny-shapes", "--lora", str(red_to_blue[1]), "--out", str(out)]) == 0
    ours, theirs = Pipeline(out), Pipeline(fused)
    for i, prompt in enumerate(RED[:3]):
        a, b = ours(prompt, seed=i, steps=10, guidance=2.0), theirs(prompt, seed=i, steps=10, guidance=2.0)
        np.testing.assert_allclose(a.latents, b.latents, atol=1e-3)


@pytest.mark.parametrize("name, content, message", [
    ("lora.bin", b"\x80\x02", "from .safetensors files only"), ("missing.safetensors", None, "no such file"),
])
def test_lora_files_refused(capsys, tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    assert main(["compress", "--model", "arch:tiny", "--lora", str(path), "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_lora_of_another_model_refused(capsys, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"lora_unet_no_such_block_to_q.lora_down.weight": torch.zeros(4, 8),
               "lora_unet_no_such_block_to_q.lora_up.weight": torch.zeros(8, 4)}, str(path))
    assert main(["compress", "--model", "arch:tiny", "--lora", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "lora" in capsys.readouterr().err


def test_lora_comes_first_in_a_recipe(capsys, tmp_path, red_to_blue):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"passes:\n  - pass: quantize\n  - pass: lora\n    file: {red_to_blue[0]}\n")
    assert main(["compress", "--model", "tiny-shapes", "--recipe", str(recipe), "--out", str(tmp_path / "o")]) == 2
    assert "lora must come before quantize" in capsys.readouterr().err
