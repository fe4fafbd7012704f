"""A tiny-scenes folder made by the trainer is a tiny-scenes model source: its held-out set, detector,
binding-error rate and defaults reach `sdopt eval`, and its calibration prompts are the family's."""
import json

from sdopt.app.cli import main
from sdopt.reference.families import FAMILIES, headline
from sdopt.reference.prompts import calibration_prompt_pool
from sdopt.reference.tinyscenes.grammar import calibration_prompts, is_heldout
from sdopt.reference.tinyscenes.render import render as scene_render
from sdopt.reference.tinyshapes.render import render as shape_render
from sdopt.reference.train import main as train


def test_a_trained_folder_is_evaluated_as_tiny_scenes(tmp_path, capsys):
    folder = tmp_path / "scenes"
    assert train(["--family", "tiny-scenes", "--out", str(folder), "--vae-steps", "2", "--decoder-steps", "1",
                  "--unet-steps", "2", "--n-images", "64", "--unet-channels", "32,32,32"]) == 0
    assert json.loads((folder / "tiny_scenes.json").read_text())["family"] == "tiny-scenes"
    artifact = tmp_path / "fp32"
    assert main(["compress", "--model", str(folder), "--recipe", "fp32", "--out", str(artifact)]) == 0
    assert json.loads((artifact / "manifest.json").read_text())["source"]["family"] == "tiny-scenes"
    capsys.readouterr()
    assert main(["eval", str(artifact), "--reference", str(artifact), "--seeds", "1", "--steps", "2",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["per_attribute"]) == {"size", "color", "shape", "count", "relation", "background"}
    assert result["alignment"] == result["reference_alignment"]  # the same artifact twice
    assert result["binding_error"] == result["reference_binding_error"]


def test_calibration_prompts_are_the_familys():
    pool = calibration_prompt_pool("tiny-scenes")
    assert list(pool) == calibration_prompts(64) and not any(is_heldout(p) for p in pool)


def test_benchmark_rows_carry_binding_errors_for_two_object_families_only():
    for name, render in (("tiny-scenes", scene_render), ("tiny-shapes", shape_render)):
        family = FAMILIES[name]
        pairs = family.heldout_pairs(8)
        captions = [c for c, _ in pairs]
        images = [render(c, s) for c, s in pairs]
        images[0] = images[1]  # one wrong picture
        row = headline(family.alignment(captions, images))
        assert set(row) == ({"alignment", "binding_error"} if name == "tiny-scenes" else {"alignment"})
        assert row["alignment"] == 7 / 8
