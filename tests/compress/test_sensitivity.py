"""Sensitivity analysis: layers ranked by the fidelity they cost, the worst kept in float."""

import json

from sdopt.backbones.unet import UNET
from sdopt.calibration.trajectory import CalibrationConfig
from sdopt.compress.modelopt_state import float_layer_names, quantized_layer_names
from sdopt.compress.quantize import QuantizeConfig, apply
from sdopt.compress.sensitivity import keep_sensitive_layers_in_float
from sdopt.compress.trajectories import record_denoiser_calls
from sdopt.sources.source import load_source

CALIBRATION = CalibrationConfig(num_prompts=1, steps=3)


def test_worst_layers_go_back_to_float_until_the_target_holds():
    source = apply(load_source("arch:tiny"), QuantizeConfig(calibration=CALIBRATION))
    unet = source.pipeline.unet
    calls = record_denoiser_calls(source, CALIBRATION)
    layers = quantized_layer_names(unet)
    probe = keep_sensitive_layers_in_float(UNET, unet, calls, target_db=0.0)  # already met: nothing changes
    assert probe["kept_float"] == [] and quantized_layer_names(unet) == layers
    ranking = list(probe["layer_psnr_db"])
    assert sorted(ranking) == sorted(layers)
    assert list(probe["layer_psnr_db"].values()) == sorted(probe["layer_psnr_db"].values())  # worst first

    target = probe["psnr_all_quantized_db"] + 3
    report = keep_sensitive_layers_in_float(UNET, unet, calls, target_db=target)
    kept = report["kept_float"]
    assert kept and kept == ranking[:len(kept)]
    assert report["psnr_db"] is None or report["psnr_db"] >= target
    assert set(kept) <= set(float_layer_names(unet)) and not set(kept) & set(quantized_layer_names(unet))


def test_auto_skip_from_the_cli(tmp_path, capsys):
    from sdopt.app.cli import main

    out = tmp_path / "auto"
    assert main(["compress", "--model", "arch:tiny", "--recipe", "int8", "--auto-skip", "30", "--out", str(out),
                 "--calib-steps", "2", "--calib-num-prompts", "1"]) == 0
    assert "sensitivity (quantized alone" in capsys.readouterr().err
    record = json.loads((out / "manifest.json").read_text())["passes"][-1]
    report = record["sensitivity"]
    assert report["target_db"] == 30 and set(report["kept_float"]) <= set(record["float_layers"])
    assert report["psnr_db"] is None or report["psnr_db"] >= 30
