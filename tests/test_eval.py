"""`sdopt eval`: fidelity metrics against a reference, table and JSON output."""

import json

import numpy as np
import pytest

from sdopt.app.cli import main
from sdopt.app.evaluate import psnr, ssim


def test_metrics_on_known_images():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert psnr(a, a) == float("inf") and ssim(a, a) == pytest.approx(1.0)
    b = np.clip(a.astype(int) + 8, 0, 255).astype(np.uint8)
    assert 28 < psnr(a, b) < 31  # MSE <= 64 -> PSNR >= 30.1 dB, minus clipping
    assert ssim(a, b) < ssim(a, a)
    assert ssim(a, 255 - a) < 0


@pytest.mark.parametrize("shape", [(11 + 1, 40, 3), (32, 32, 3), (96, 64, 3)])
def test_ssim_is_scikit_images(shape):
    """The same figure as scikit-image's structural_similarity with Wang et al.'s settings, on noisy and on
    smooth images."""
    metrics = pytest.importorskip("skimage.metrics", reason="scikit-image (the test extra)")
    rng = np.random.default_rng(shape[0])
    smooth = np.linspace(0, 255, shape[0] * shape[1] * 3).reshape(shape)
    for a in (rng.integers(0, 256, shape).astype(np.uint8), smooth.astype(np.uint8)):
        b = np.clip(a + rng.normal(0, 12, shape), 0, 255).astype(np.uint8)
        expected = metrics.structural_similarity(a, b, channel_axis=-1, data_range=255, gaussian_weights=True,
                                                 sigma=1.5, use_sample_covariance=False)
        assert ssim(a, b) == pytest.approx(expected, abs=1e-9)


def test_ssim_refuses_images_smaller_than_its_window():
    from sdopt.contract.errors import SdoptError

    with pytest.raises(SdoptError, match="over 10 pixels a side"):
        ssim(np.zeros((10, 40, 3)), np.zeros((10, 40, 3)))


def test_eval_json_against_self_and_int8(tiny_fp32, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SDOPT_CACHE", str(tmp_path / "cache"))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square\n")
    assert main(["eval", str(tiny_fp32), "--reference", str(tiny_fp32), "--prompts", str(prompts),
                 "--steps", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)  # stdout holds the JSON object only
    assert result["n_images"] == 2 and result["psnr"] == 100.0
    assert result["ssim"] == pytest.approx(1.0) and result["latent_cosine"] == pytest.approx(1.0)
    assert "alignment" not in result  # not a tiny-shapes model
    assert result["reference_rendered"].startswith("once")  # the same graphs: generated once

    int8 = tmp_path / "int8"
    assert main(["compress", "--model", "arch:tiny", "--recipe", "int8", "--out", str(int8),
                 "--calib-steps", "2", "--calib-num-prompts", "1"]) == 0
    capsys.readouterr()
    assert main(["eval", str(int8), "--prompts", str(prompts), "--steps", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)  # reference: the fp32 export, made on the fly
    assert result["recipe"] == "int8" and 15 < result["psnr"] < 100 and 0.5 < result["latent_cosine"] < 1
    assert "reference_rendered" not in result
    assert (tmp_path / "cache" / "reference").is_dir()

    grid = tmp_path / "grid.png"
    assert main(["eval", str(int8), "--prompts", str(prompts), "--steps", "3", "--grid", str(grid)]) == 0
    table = capsys.readouterr().out
    assert "PSNR vs reference" in table and "random weights" in table and "fp32 (reference)" in table
    from PIL import Image

    assert Image.open(grid).size[1] >= 2 * 128  # two prompts, enlarged


def test_eval_rejects_reference_of_another_model(tiny_fp32, sd21_folder, tmp_path, capsys):
    other = tmp_path / "other"
    assert main(["compress", "--model", str(sd21_folder), "--out", str(other)]) == 0
    assert main(["eval", str(tiny_fp32), "--reference", str(other), "--steps", "2"]) == 2
    assert "was made from" in capsys.readouterr().err


def test_an_artifact_of_a_local_folder_is_evaluated_against_the_folder_named_again(sd21_folder, tmp_path, capsys):
    """The manifest says which folder the model came from, but eval opens it only when the user names it."""
    artifact = tmp_path / "art"
    assert main(["compress", "--model", str(sd21_folder), "--out", str(artifact)]) == 0
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\n")
    capsys.readouterr()
    assert main(["eval", str(artifact), "--prompts", str(prompts), "--steps", "2"]) == 2
    assert "give the folder again with --model FOLDER" in capsys.readouterr().err
    assert main(["eval", str(artifact), "--model", str(sd21_folder), "--prompts", str(prompts), "--steps", "2",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["psnr"] == 100.0  # the same fp32 export


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A random-weight CLIP model folder with its processor (tokenizer + image processor)."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from sdopt.sources.source import stand_in_tokenizer

    torch.manual_seed(0)
    tokenizer = stand_in_tokenizer()
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=77,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    folder = tmp_path_factory.mktemp("clip")
    CLIPModel(config).save_pretrained(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def test_clip_score_is_the_cosine_of_clip_embeddings(tiny_clip):
    import torch
    from transformers import CLIPModel, CLIPProcessor

    from sdopt.app.evaluate import clip_score

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    prompts = ["a red circle", "a blue square", "a green triangle"]
    model, processor = CLIPModel.from_pretrained(tiny_clip), CLIPProcessor.from_pretrained(tiny_clip)
    with torch.no_grad():
        img = model.get_image_features(**processor(images=images, return_tensors="pt"))
        txt = model.get_text_features(**processor(text=prompts, return_tensors="pt", padding=True))
    img, txt = (getattr(e, "pooler_output", e) for e in (img, txt))
    expected = (100 * torch.cosine_similarity(img, txt).clamp(min=0)).mean().item()
    assert clip_score(tiny_clip, prompts, images) == pytest.approx(expected, rel=1e-5)


def test_eval_clip_flag(tiny_fp32, tiny_clip, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n")
    args = ["eval", str(tiny_fp32), "--reference", str(tiny_fp32), "--prompts", str(prompts), "--steps", "2",
            "--clip", str(tiny_clip)]
    assert main(args + ["--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["clip_score"] == pytest.approx(result["reference_clip_score"])  # same images
    assert main(args) == 0 and "CLIP score" in capsys.readouterr().out
    assert main(args[:-1] + [str(tmp_path)]) == 2  # not a model folder
    assert "--clip" in capsys.readouterr().err


def test_the_cached_reference_follows_a_folder_retrained_in_place(tmp_path):
    """The fp32 reference and the bench peers are cached by a key of their source: a folder whose weights change
    in place (retrained, edited) must get a new key, or eval would compare with the old model's images."""
    import os

    from sdopt.contract.cache import source_key
    from sdopt.reference.families import FAMILIES, source_folder

    folder = tmp_path / "model"
    (folder / "unet").mkdir(parents=True)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(b"0" * 64)
    before = source_key(str(folder), "1.0")
    assert source_key(str(folder), "1.0") == before
    weights.write_bytes(b"1" * 64)
    os.utime(weights, ns=(1, 1))  # same size, another time: rewritten
    assert source_key(str(folder), "1.0") != before
    assert source_folder("tiny-shapes") == FAMILIES["tiny-shapes"].model_dir
    assert source_key("tiny-shapes", "1.0", folder=source_folder("tiny-shapes")) != source_key("tiny-shapes", "1.0")
    assert source_folder("arch:tiny") is None
