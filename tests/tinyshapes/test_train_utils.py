"""Training helpers: safetensors checkpoints resume exactly; configs keep the SD structure."""
import torch

from sdopt.tinyshapes import train


def _steps(model, opt, start, n):
    for step in range(start, start + n):
        g = torch.Generator().manual_seed(train.step_seed(0, 2, step))
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
    train.save_checkpoint(path, {"m": a}, opt_a, {"step": 3, "total": 6, "elapsed": 1.0})
    assert open(path, "rb").read(8)  # a safetensors file, no pickle
    _steps(a, opt_a, 3, 3)

    torch.manual_seed(1)
    b = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Linear(8, 4))
    opt_b = torch.optim.AdamW(b.parameters(), lr=1e-2)
    meta = train.load_checkpoint(path, {"m": b}, opt_b)
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
    assert train.cosine_lr(0, 100, 1.0, 10) == 0.1 and abs(train.cosine_lr(100, 100, 1.0, 10) - 0.05) < 1e-9
