"""sdopt INT8 against NNCF's hybrid INT8 (optimum-intel) on a reference model, at the same calibration budget.

    python benchmarks/nncf_int8_quality.py [--model tiny-shapes|tiny-scenes] [--calls 100] [--pairs 256] [--json FILE]

Both quantize the same trained model and are calibrated on the same number of UNet calls from the model's
calibration prompts: sdopt's `int8` recipe (timestep-aware, `--calib-num-prompts` x `--calib-steps` calls) and
`OVWeightQuantizationConfig(bits=8, quant_method="hybrid", num_samples=CALLS)` (convolutions W8A8, MatMuls
and embeddings INT8 weight-only; NNCF collects its calls from 50-step generations). Every image of the
held-out (prompt, seed) pairs starts from the same noise, with the model's scheduler (DDIM), steps and guidance.
Reported: PSNR and SSIM against the fp32 model's image, and prompt alignment read back by the family's detector.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from sdopt.app.bench_peers import versions
from sdopt.app.evaluate import fp32_export, psnr, ssim
from sdopt.reference.families import FAMILIES, headline
from sdopt.reference.prompts import calibration_prompt_pool
from sdopt.runtime.pipeline import Pipeline


def sdopt_int8(model: str, out: Path, prompts: int, steps: int) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sdopt.app.cli", "compress", "--model", model, "--recipe", "int8",
                    "--out", str(out), "--calib-num-prompts", str(prompts), "--calib-steps", str(steps)], check=True)
    return time.perf_counter() - start


def nncf_hybrid(model: str, calls: int, unet_only: bool = False):
    """optimum-intel's hybrid mode: also INT8 weight-only compression of the text encoder and VAE, unless
    `unet_only` (OVPipelineQuantizationConfig with the UNet's config alone: sdopt int8's scope)."""
    from optimum.intel import OVPipelineQuantizationConfig, OVStableDiffusionPipeline, OVWeightQuantizationConfig

    prompts = list(calibration_prompt_pool(model))
    config = OVWeightQuantizationConfig(bits=8, quant_method="hybrid", num_samples=calls, dataset=prompts)
    if unet_only:
        config = OVPipelineQuantizationConfig({"unet": config}, num_samples=calls, dataset=prompts)
    start = time.perf_counter()
    pipe = OVStableDiffusionPipeline.from_pretrained(str(FAMILIES[model].model_dir), export=True,
                                                     quantization_config=config)
    return pipe, time.perf_counter() - start


def sdopt_images(folder: Path, pairs, steps: int, guidance: float, backend: str, label: str) -> list[np.ndarray]:
    pipe = Pipeline(folder, backend)
    return [pipe(p, seed=s, steps=steps, guidance=guidance).image for p, s in tqdm(pairs, desc=label, unit="image")]


def optimum_images(pipe, noise_of, pairs, steps: int, guidance: float, label: str) -> list[np.ndarray]:
    import torch

    images = []
    for prompt, seed in tqdm(pairs, desc=label, unit="image"):
        out = pipe(prompt, num_inference_steps=steps, guidance_scale=guidance, output_type="np",
                   latents=torch.from_numpy(noise_of(seed)))
        image = np.asarray(out.images[0], dtype=np.float32)
        if not np.isfinite(image).all():
            raise SystemExit(f"the NNCF pipeline made non-finite pixels for {prompt!r} seed {seed}")
        images.append((np.clip(image, 0, 1) * 255).round().astype(np.uint8))
    return images


def scores(family, captions, images, reference) -> dict:
    found = family.alignment(captions, images)
    return {"psnr_db": float(np.mean([min(psnr(a, b), 100.0) for a, b in zip(images, reference)])),
            "ssim": float(np.mean([ssim(a, b) for a, b in zip(images, reference)])),
            **headline(found), "per_attribute": found["per_attribute"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(FAMILIES), default="tiny-shapes")
    parser.add_argument("--calls", type=int, default=100,
                        help="UNet calls of calibration for each method (default 100: sdopt int8's default, "
                             "4 prompts x 25 steps)")
    parser.add_argument("--calib-steps", type=int, default=25, help="sdopt's steps per calibration prompt")
    parser.add_argument("--pairs", type=int, default=256, help="held-out (prompt, seed) pairs")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.calls % args.calib_steps:
        parser.error("--calls must be a multiple of --calib-steps (sdopt calibrates whole trajectories)")
    family = FAMILIES[args.model]
    pairs = family.heldout_pairs(args.pairs)
    captions = [p for p, _ in pairs]
    with tempfile.TemporaryDirectory() as tmp:
        int8 = Path(tmp) / "int8"
        int8_s = sdopt_int8(args.model, int8, args.calls // args.calib_steps, args.calib_steps)
        fp32 = fp32_export(args.model)
        reference_pipe = Pipeline(fp32)
        steps, guidance = reference_pipe.info["steps"], reference_pipe.info["guidance"]
        reference = sdopt_images(fp32, pairs, steps, guidance, "onnxruntime", "generating: fp32 reference")
        size = reference_pipe.info["height"], reference_pipe.info["width"]
        rows = {"sdopt int8 (onnxruntime)": sdopt_images(int8, pairs, steps, guidance, "onnxruntime",
                                                         "generating: sdopt int8")}
        build_s = {"sdopt int8 (onnxruntime)": int8_s}
        for name, unet_only in (("NNCF hybrid int8 (optimum-intel, OpenVINO)", False),
                                ("NNCF hybrid int8, UNet only", True)):
            nncf, build_s[name] = nncf_hybrid(args.model, args.calls, unet_only)
            rows[name] = optimum_images(nncf, lambda seed: reference_pipe.initial_noise(seed, *size), pairs, steps,
                                        guidance, f"generating: {name}")
    result = {"benchmark": "nncf_int8_quality", "model": args.model, "pairs": len(pairs), "steps": steps,
              "guidance": guidance, "scheduler": "ddim", "calibration_unet_calls": args.calls,
              "build_seconds": {name: round(s, 1) for name, s in build_s.items()},
              "versions": versions("sdopt", "optimum-intel", "nncf", "openvino", "onnxruntime"),
              "fp32": {"alignment": family.alignment(captions, reference)["alignment"]},
              "rows": {name: scores(family, captions, images, reference) for name, images in rows.items()}}
    print(f"{args.model}, {len(pairs)} held-out pairs, DDIM {steps} steps, guidance {guidance}; calibration "
          f"{args.calls} UNet calls each; fp32 alignment {result['fp32']['alignment']:.1%}")
    print(f"{'method':<44} {'PSNR dB':>8} {'SSIM':>7} {'alignment':>10} {'build s':>8}")
    for name, row in result["rows"].items():
        built = result["build_seconds"][name]
        print(f"{name:<44} {row['psnr_db']:>8.2f} {row['ssim']:>7.4f} {row['alignment']:>10.1%} {built:>8.1f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
