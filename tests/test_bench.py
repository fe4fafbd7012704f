"""`sdopt bench`: every target measured in its own process, per stage and end to end, with peers."""

import json

import pytest

from sdopt.app.bench import Target, summarize, with_speedups, write_plot
from sdopt.app.cli import main


def test_bench_artifact_against_peers(tiny_fp32, tmp_path, capsys):
    pytest.importorskip("openvino", reason="the openvino extra is not installed")
    out = tmp_path / "bench.json"
    assert main(["bench", str(tiny_fp32), "--peers", "diffusers,ort-fp32,openvino", "--runs", "2", "--steps", "3",
                 "--memory", "both", "--json", str(out)]) == 0
    captured = capsys.readouterr()
    assert "arch:tiny (random weights: speed only)" in captured.out
    result = json.loads(out.read_text())
    rows = {r["name"]: r for r in result["rows"]}
    assert list(rows) == ["sdopt fp32 (tiny-fp32, onnxruntime)", "sdopt fp32 (tiny-fp32, onnxruntime, low-memory)",
                          "diffusers", "ort-fp32", "openvino"]
    assert rows["sdopt fp32 (tiny-fp32, onnxruntime, low-memory)"]["options"] == {"low_memory": True}
    for name, row in rows.items():
        assert "error" not in row, row
        stages = row["stages"]
        assert stages["end_to_end"]["n"] == 2 and stages["unet"]["n"] == 2 * 3  # one UNet call per step
        assert stages["text_encoder"]["n"] == 2 and stages["vae_decode"]["n"] == 2
        parts = sum(stages[s]["median_s"] for s in ("text_encoder", "vae_decode")) + 3 * stages["unet"]["min_s"]
        assert parts <= stages["end_to_end"]["max_s"]
        assert row["peak_rss_bytes"] > 50e6 and row["load_s"] > 0 and row["warmup_s"] > 0
        stage_peaks = row["peak_rss_stage_bytes"]
        if stage_peaks:  # where the kernel lets a process reset its peak
            assert set(stage_peaks) == {"load", "text_encoder", "unet", "vae_decode"}
            assert all(0 < peak <= row["peak_rss_bytes"] for peak in stage_peaks.values()), stage_peaks
        assert set(row["speedup"]) == {"diffusers", "ort-fp32", "openvino"}
        if row["peer"]:
            assert row["speedup"][name] == pytest.approx(1.0)
        assert name[:40] in captured.out  # the table shortens long names to fit
    assert max(len(line) for line in captured.out.splitlines()) <= 120
    assert rows["ort-fp32"]["size_bytes"] > 1e6
    assert result["settings"]["steps"] == 3 and result["settings"]["guidance"] > 1
    png = out.with_suffix(".png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_bad_input(tiny_fp32, tmp_path, capsys):
    for argv, message in [
        (["bench", str(tiny_fp32), "--peers", "tensorflow"], "unknown peer 'tensorflow'"),
        (["bench", "--peers", "none"], "nothing to measure"),
        (["bench", str(tiny_fp32), "--backends", "onnx"], "unknown backend 'onnx'"),
        (["bench", str(tiny_fp32), "--model", "tiny-shapes"], "different sources"),
        (["bench", str(tiny_fp32), "--json", str(tmp_path / "no" / "b.json")], "does not exist"),
        (["bench", str(tiny_fp32), "--precision", "fp32"], "--precision applies to artifacts on --backends openvino"),
        (["bench", str(tmp_path)], "not an sdopt artifact"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (argv, err)


def test_a_failing_target_is_reported_not_hidden():
    target = Target("broken", "artifact", "/nonexistent", peer=True)
    row = summarize(target, {"error": "SdoptError: no such artifact"})
    good = summarize(Target("ok", "artifact", "x"), {"load_s": 1.0, "warmup_s": 0.5, "peak_rss_bytes": 1e8, "runs": [
        {"end_to_end": 2.0, "text_encoder": [0.1, 0.1], "unet": [0.5, 0.6, 0.7], "vae_decode": [0.3]},
        {"end_to_end": 3.0, "text_encoder": [0.2, 0.2], "unet": [0.9, 0.8, 0.4], "vae_decode": [0.5]}]})
    rows = with_speedups([good, row])
    assert rows[1]["error"].startswith("SdoptError") and "speedup" not in rows[1]
    assert good["stages"]["text_encoder"]["median_s"] == pytest.approx(0.3)  # both prompts, per run
    assert good["stages"]["unet"]["median_s"] == pytest.approx(0.65) and good["stages"]["unet"]["n"] == 6
    assert good["stages"]["end_to_end"]["median_s"] == pytest.approx(2.5) and good["speedup"] == {}


def test_plot_takes_peers_timed_end_to_end_only(tmp_path):
    """stable-diffusion.cpp has no stage hooks: its bar is one part beside the staged rows."""
    staged = summarize(Target("sdopt", "artifact", "x"), {"load_s": 1.0, "warmup_s": 0.5, "peak_rss_bytes": 1e8,
                       "runs": [{"end_to_end": 2.0, "text_encoder": [0.1], "unet": [0.5, 0.6], "vae_decode": [0.3]}]})
    whole = summarize(Target("sdcpp-f16", "peer", "sdcpp-f16", peer=True),
                      {"load_s": 1.0, "warmup_s": 0.5, "peak_rss_bytes": 1e8, "runs": [{"end_to_end": 9.0}]})
    assert "unet_image" not in whole["stages"]
    result = {"rows": with_speedups([staged, whole]), "source": "arch:sd15", "random_weights": True,
              "settings": {"steps": 2, "width": 64, "height": 64}}
    write_plot(result, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_other_tools_peers(tmp_path, capsys):
    """Optimum's own export and optimum-intel's NNCF hybrid INT8 are built from the source, cached with how they
    were made, and timed; stable-diffusion.cpp is left out with a note (tiny-shapes is no architecture it has)."""
    pytest.importorskip("optimum.intel", reason="optimum-intel (the compat extra)")
    pytest.importorskip("optimum.onnxruntime", reason="optimum-onnx (the compat extra)")
    out = tmp_path / "bench.json"
    argv = ["bench", "--model", "tiny-shapes", "--peers", "optimum-ort,openvino-int8,sdcpp", "--runs", "1",
            "--steps", "2", "--json", str(out)]
    assert main(argv) == 0
    captured = capsys.readouterr()
    # not installed, or (where it is) not an architecture it implements
    assert "peer sdcpp-f16 is left out: " in captured.err and "peer sdcpp-q8_0 is left out: " in captured.err
    rows = {r["name"]: r for r in json.loads(out.read_text())["rows"]}
    assert list(rows) == ["optimum-ort", "openvino-int8"]
    assert "main_export" in rows["optimum-ort"]["build"]["how"]
    assert "quant_method='hybrid'" in rows["openvino-int8"]["build"]["how"]
    for row in rows.values():
        assert "error" not in row, row
        assert row["stages"]["unet"]["n"] == 2 and row["stages"]["vae_decode"]["n"] == 1
        assert row["size_bytes"] > 1e5 and row["build"]["seconds"] > 0
    assert "built in" in captured.out
    first = rows["openvino-int8"]["build"]["seconds"]
    assert main(argv) == 0  # the builds come from the cache now
    assert json.loads(out.read_text())["rows"][1]["build"]["seconds"] == first


def test_every_target_failing_is_a_table_of_failures_and_no_plot(tmp_path):
    from sdopt.app.bench import format_table

    rows = with_speedups([summarize(Target(name, "artifact", "/x", peer=name == "peer"), {"error": f"{name} broke"})
                          for name in ("ours", "peer")])
    result = {"rows": rows, "source": "tiny-shapes", "random_weights": False, "machine": {"cpus": 2},
              "settings": {"steps": 2, "width": 64, "height": 64, "guidance": 2.0, "runs": 1, "warmup": 1}}
    for wide in (False, True):
        table = format_table(result, wide=wide)
        assert "failed: ours broke" in table and "failed: peer broke" in table
    assert write_plot(result, tmp_path / "plot.png") is False and not (tmp_path / "plot.png").exists()
