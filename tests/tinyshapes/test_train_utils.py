"""The shared training loop and the tiny-shapes trainer: safetensors checkpoints resume exactly, a stage
resumed halfway ends where an uninterrupted one does; configs keep the SD structure; the trainer never
replaces a folder it did not write."""
import torch

from sdopt.reference import train
from sdopt.training import loop as training


def _steps(model, opt, start, n):
    for step in range(start, start + n):
        g = torch.Generator().manual_seed(training.step_seed(0, 2, step))
        x = torch.randn(8, 4, generator=g)
        loss = (model(x) - x.flip(1)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_checkpoint_round_trip_resumes_exactly(tmp_path):
    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Linear(8, 4))
    opt_a = torch.optim.AdamW(a.parameters(), lr=1e-2)
    _steps(a, opt_a, 0, 3)
    path = str(tmp_path / "ck.safetensors")
    training.save_checkpoint(path, {"m": a}, opt_a, {"step": 3, "total": 6, "elapsed": 1.0})
    assert open(path, "rb").read(8)  # a safetensors file, no pickle
    _steps(a, opt_a, 3, 3)

    torch.manual_seed(1)
    b = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Linear(8, 4))
    opt_b = torch.optim.AdamW(b.parameters(), lr=1e-2)
    meta = training.load_checkpoint(path, {"m": b}, opt_b)
    assert meta == {"step": 3, "total": 6, "elapsed": 1.0}
    _steps(b, opt_b, 3, 3)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_configs_keep_sd_structure():
    cfg = train.unet_config(8)
    assert len(cfg["block_out_channels"]) >= 3 and cfg["sample_size"] == 8
    assert sum(t == "CrossAttnDownBlock2D" for t in cfg["down_block_types"]) >= 2
    assert sum(t == "CrossAttnUpBlock2D" for t in cfg["up_block_types"]) >= 2
    s = train.SCHEDULER_CONFIG
    assert (s["beta_start"], s["beta_end"], s["beta_schedule"], s["num_train_timesteps"], s["prediction_type"]) == (
        0.00085, 0.012, "scaled_linear", 1000, "epsilon")
    assert training.cosine_lr(0, 100, 1.0, 10) == 0.1 and abs(training.cosine_lr(100, 100, 1.0, 10) - 0.05) < 1e-9


def _stage_run(tmp_path, steps, resume, model, opt):
    stage = training.Stage("toy", 5, seed=0, lr=1e-2, warmup=2, checkpoint=str(tmp_path / "toy.safetensors"),
                           steps=steps, resume=resume)

    def loss_fn(step, rng, g):
        x = torch.randn(8, 4, generator=g) + float(rng.random())
        loss = (model(x) - x.flip(1)).pow(2).mean()
        return loss, lambda: {"loss": f"{loss.item():.3f}"}

    ema = training.EMA(model)
    result = training.run_stage(stage, {"m": model, "ema": ema.average}, opt, list(model.parameters()), loss_fn,
                                after_step=lambda step: ema.update(0.9), log=lambda message: None)
    return result, ema


def test_a_resumed_stage_ends_where_an_uninterrupted_one_does(tmp_path):
    def fresh():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Linear(8, 4))
        return model, torch.optim.AdamW(model.parameters(), lr=1e-2)

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    whole, opt = fresh()
    result, ema_whole = _stage_run(tmp_path / "a", 6, False, whole, opt)
    assert result["step"] == 6
    part, opt = fresh()
    _stage_run(tmp_path / "b", 3, False, part, opt)
    resumed, opt = fresh()
    result, ema_resumed = _stage_run(tmp_path / "b", 6, True, resumed, opt)
    assert result["step"] == 6
    for a, b in zip([*whole.parameters(), *ema_whole.average.parameters()],
                    [*resumed.parameters(), *ema_resumed.average.parameters()]):
        assert torch.equal(a, b)


def test_trainer_does_not_replace_a_folder_it_did_not_write(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert train.main(["--out", str(out), "--vae-steps", "1", "--unet-steps", "1", "--n-images", "8"]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"] and not (tmp_path / "mine.work").exists()
