"""Per-timestep ranges -> scales: aggregations, intervals, call sampling, the record cache."""

import numpy as np
import pytest
import torch

from sdopt.calibration.statistics import Aggregation, StepStatistics, aggregate, interval_index
from sdopt.calibration.trajectory import CalibrationConfig, CallTarget, _cache_path, record_calls, select_calls
from sdopt.contract.errors import SdoptError
from sdopt.sources.source import load_source

# two trajectories (prompts) of three steps: step 0 is the noisiest
STEPS = np.array([0, 1, 2, 0, 1, 2])
RANGES = np.array([8.0, 4.0, 2.0, 6.0, 5.0, 1.0])


@pytest.mark.parametrize("aggregation, expected", [
    (Aggregation("max"), 8.0),
    (Aggregation("percentile", percentile=50), 4.5),
    (Aggregation("min-mean"), 1.5),  # per-step means 7, 4.5, 1.5 -> min
    (Aggregation("mean-max"), (8 + 5 + 2) / 3),  # per-step maxima 8, 5, 2 -> mean
    (Aggregation("min-mean", fraction=0.67), 4.5),  # the first two steps only
    (Aggregation("mean-max", fraction=0.34), 8.0),
])
def test_aggregations(aggregation, expected):
    assert aggregate(RANGES, STEPS, aggregation) == pytest.approx(expected)


def test_calls_a_quantizer_never_saw_are_ignored():
    values = np.array([np.nan, 3.0, 1.0])
    assert aggregate(values, np.array([0, 1, 2]), Aggregation("max")) == 3.0
    assert np.isnan(aggregate(np.full(2, np.nan), np.array([0, 1]), Aggregation("max")))


def test_bad_aggregation_options():
    with pytest.raises(SdoptError, match="aggregation"):
        Aggregation("mean")
    with pytest.raises(SdoptError, match="fraction"):
        Aggregation("min-mean", fraction=0)
    with pytest.raises(SdoptError, match="sampling"):
        CalibrationConfig(sampling="every-other")
    with pytest.raises(SdoptError, match="intervals"):
        CalibrationConfig(intervals=0)


def test_interval_index_splits_the_training_range_evenly():
    t = np.array([0, 249, 250, 499, 500, 999, 1000, -3])
    assert interval_index(t, 4, 1000).tolist() == [0, 0, 1, 1, 2, 3, 3, 0]


def test_interval_ranges_take_each_intervals_calls():
    timesteps = np.array([900.0, 500.0, 100.0, 900.0, 500.0, 100.0])
    stats = StepStatistics(timesteps, STEPS, {"q": RANGES})
    table = stats.interval_ranges(Aggregation("max"), 4, 1000)["q"]
    # intervals: [0, 250) <- t 100; [250, 500) <- none: overall max; [500, 750) <- t 500; [750, 1000) <- t 900
    assert table.tolist() == [2.0, 8.0, 5.0, 8.0]


def _records(trajectories=2, steps=10):
    return [{"trajectory": torch.tensor(i), "step": torch.tensor(s), "timestep": torch.full((2,), 999.0 - 100 * s)}
            for i in range(trajectories) for s in range(steps)]


def test_sampling_selects_calls():
    records = _records()
    assert select_calls(records, CalibrationConfig(sampling="all")) == records
    every = select_calls(records, CalibrationConfig(sampling="every", every=3))
    assert [int(r["step"]) for r in every] == [0, 3, 6, 9] * 2
    naive = select_calls(records, CalibrationConfig(sampling="random-step", seed=1))
    assert sorted(int(r["trajectory"]) for r in naive) == [0, 1]  # one call per trajectory,
    assert len({int(r["step"]) for r in naive}) == 1  # at one timestep
    assert naive == select_calls(records, CalibrationConfig(sampling="random-step", seed=1))
    normal = select_calls(_records(trajectories=50), CalibrationConfig(sampling="normal"), timestep="timestep",
                          span=1000)
    t = np.array([float(r["timestep"][0]) for r in normal])
    assert len(normal) == 50 * 5 and abs(np.median(t) - 400) <= 100  # PTQ4DM: around 0.4 T


def test_records_are_cached_by_weights_and_settings(tmp_path, monkeypatch):
    from sdopt.compress.trajectories import calibration_target, record_denoiser_calls

    monkeypatch.setenv("SDOPT_CACHE", str(tmp_path))
    source = load_source("arch:tiny")
    config = CalibrationConfig(num_prompts=1, steps=2)

    def path_of(c):
        return _cache_path(source, c, calibration_target(source, c))

    path = path_of(config)
    records = record_denoiser_calls(source, config)
    assert path.is_file() and path.parent == tmp_path / "calibration"
    cached = record_denoiser_calls(source, config)
    assert len(cached) == 2 and all(torch.equal(a[k], b[k]) for a, b in zip(records, cached) for k in a)
    assert set(records[0]) == {"trajectory", "step", "sample", "timestep", "encoder_hidden_states"}  # graph inputs
    assert path_of(CalibrationConfig(num_prompts=1, steps=2, seed=1)) != path
    assert path_of(CalibrationConfig(num_prompts=1, steps=2, aggregation="min-mean")) == path
    with torch.no_grad():
        source.pipeline.unet.conv_in.bias.add_(1.0)
    assert path_of(config) != path  # other weights, other records


def test_any_module_records_the_same_way(tmp_path, monkeypatch):
    """Calibration knows no UNet: a pass hands in the module, its input names and its trajectory."""
    monkeypatch.setenv("SDOPT_CACHE", str(tmp_path))
    source = load_source("arch:tiny")
    layer = torch.nn.Linear(3, 3)

    def run(prompt, seed):
        x = torch.Generator().manual_seed(seed)
        for step in range(4):
            layer(torch.randn(2, 3, generator=x), scale=torch.tensor(float(step)))

    layer.forward = lambda x, scale=None: torch.nn.functional.linear(x, layer.weight) * scale  # keyword argument
    target = CallTarget("toy", layer, lambda args, kwargs: {"x": args[0], "scale": kwargs["scale"]}, run, (layer,))
    records = record_calls(source, CalibrationConfig(num_prompts=2), target)
    assert [(int(r["trajectory"]), int(r["step"])) for r in records] == [(t, s) for t in range(2) for s in range(4)]
    assert records[5]["scale"].item() == 1.0 and records[0]["x"].shape == (2, 3)
    assert torch.equal(record_calls(source, CalibrationConfig(num_prompts=2), target)[7]["x"], records[7]["x"])
