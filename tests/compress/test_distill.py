"""Distillation of a pruned UNet: the loss falls, a resumed run continues the same curve, two processes under
accelerate (gloo, CPU) follow the one-process curve, and the result exports, runs and composes."""

import json

import pytest

from sdopt.app.cli import main

PROMPT = "a large red circle in the top left"
SHORT = ["--set", "distill.steps=24", "--set", "distill.batch=8", "--set", "distill.calibration.num_prompts=4",
         "--set", "distill.calibration.steps=6"]


def _record(folder, name):
    manifest = json.loads((folder / "manifest.json").read_text())
    return next(r for r in manifest["passes"] if r["pass"] == name), manifest


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    out = tmp_path_factory.mktemp("distill") / "small"
    assert main(["compress", "--recipe", "prune-small", *SHORT, "--out", str(out)]) == 0
    return out


def test_distillation_lowers_the_loss_and_records_sizes(distilled):
    record, manifest = _record(distilled, "distill")
    assert record["steps"] == 24 and record["loss_last"] < 0.5 * record["loss_first"]
    prune, _ = _record(distilled, "prune")
    assert prune["after"]["parameters"] < prune["before"]["parameters"]
    assert prune["after"]["macs"] < prune["before"]["macs"]
    png = distilled.parent / "a.png"
    assert main(["run", str(distilled), "--prompt", PROMPT, "--out", str(png)]) == 0 and png.stat().st_size


def test_a_rerun_resumes_from_the_finished_checkpoint(distilled, tmp_path):
    out = tmp_path / "again"
    assert main(["compress", "--recipe", "prune-small", *SHORT, "--out", str(out)]) == 0
    first, _ = _record(distilled, "distill")
    again, _ = _record(out, "distill")
    assert again["steps"] == first["steps"] and again["seconds"] == pytest.approx(first["seconds"], abs=5)
    assert (out / "unet" / "model.onnx").read_bytes() == (distilled / "unet" / "model.onnx").read_bytes()


def test_two_processes_follow_the_one_process_loss_curve(loss_curves):
    curves = loss_curves(["--recipe", "prune-small", *SHORT, "--set", "distill.resume=false"], "distill")
    for one, two in zip(curves[1], curves[2]):
        assert two == pytest.approx(one, rel=1e-3)


def test_pruned_distilled_composes_with_int8_and_cache(tmp_path):
    out = tmp_path / "all"
    assert main(["compress", "--recipe", "prune-small+int8+cache", *SHORT, "--calib-num-prompts", "2",
                 "--calib-steps", "4", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [r["pass"] for r in manifest["passes"]] == ["prune", "distill", "quantize", "cache"]
    assert manifest["components"]["unet_shallow"]["ops"]["QuantizeLinear"] > 0
    png = tmp_path / "a.png"
    assert main(["run", str(out), "--prompt", PROMPT, "--out", str(png)]) == 0


def test_channel_pruned_taylor_distilled_composes_with_int8_and_cache(tmp_path):
    out = tmp_path / "channels"
    assert main(["compress", "--recipe", "prune-channels+int8+cache", *SHORT, "--set", "prune.importance=taylor",
                 "--set", "prune.calibration.num_prompts=2", "--set", "prune.calibration.steps=4",
                 "--calib-num-prompts", "2", "--calib-steps", "4", "--out", str(out)]) == 0
    record, manifest = _record(out, "prune")
    assert record["importance"] == "taylor" and record["channel_widths"]
    assert record["after"]["macs"] / record["before"]["macs"] == pytest.approx(0.8, abs=0.03)
    assert manifest["components"]["unet_shallow"]["ops"]["QuantizeLinear"] > 0
    png = tmp_path / "a.png"
    assert main(["run", str(out), "--prompt", PROMPT, "--out", str(png)]) == 0 and png.stat().st_size


def test_an_image_folder_adds_the_denoising_loss(tmp_path, capsys):
    from PIL import Image, ImageDraw

    folder = tmp_path / "images"
    folder.mkdir()
    for i, (color, box) in enumerate([("red", (4, 4, 30, 30)), ("blue", (20, 20, 60, 60))]):
        image = Image.new("RGB", (64, 48), "white")
        ImageDraw.Draw(image).ellipse(box, fill=color)
        image.save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"a {color} circle")
    out = tmp_path / "with-images"
    assert main(["compress", "--recipe", "prune-small", *SHORT, "--set", f"distill.images={folder}",
                 "--out", str(out)]) == 0
    record, _ = _record(out, "distill")
    assert record["images"] == 2 and record["loss_last"] < record["loss_first"]
    for bad in (tmp_path / "missing", tmp_path):  # no folder; a folder without images
        assert main(["compress", "--recipe", "prune-small", *SHORT, "--set", f"distill.images={bad}",
                     "--out", str(tmp_path / "x")]) == 2
        assert "distill: " in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "x").exists()


def test_distill_without_prune_is_refused(capsys, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("passes:\n  - pass: distill\n")
    assert main(["compress", "--recipe", str(recipe), "--out", str(tmp_path / "x")]) == 2
    assert "distill needs a prune pass before it" in capsys.readouterr().err
