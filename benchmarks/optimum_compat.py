"""Optimum's ORTStableDiffusionPipeline and optimum-intel's OVStableDiffusionPipeline on sdopt artifacts:
PSNR of their image against sdopt's runtime on the same artifact (same prompt, initial noise, scheduler, steps).

    python benchmarks/optimum_compat.py ART [ART ...] [--steps 8] [--json FILE]

The OpenVINO pipeline needs the artifact's OpenVINO build (`sdopt build ART --format openvino`); an artifact
without one is measured on Optimum's ORT pipeline only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from sdopt.app.evaluate import psnr
from sdopt.runtime.pipeline import Pipeline

PROMPT, SEED = "a red circle on the left", 0


def main() -> None:
    from optimum.intel import OVStableDiffusionPipeline
    from optimum.onnxruntime import ORTStableDiffusionPipeline

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", type=Path, nargs="+")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    for folder in args.artifacts:
        ours = Pipeline(folder)
        info = ours.info
        noise = ours.initial_noise(SEED, info["height"], info["width"])
        pairs = [("onnxruntime", ORTStableDiffusionPipeline)]
        if ours.artifact.build("openvino"):
            pairs.append(("openvino", OVStableDiffusionPipeline))
        for backend, pipeline_class in pairs:
            reference = Pipeline(folder, backend)(PROMPT, seed=SEED, steps=args.steps, guidance=info["guidance"])
            theirs = pipeline_class.from_pretrained(str(folder))(
                PROMPT, num_inference_steps=args.steps, guidance_scale=info["guidance"],
                latents=torch.from_numpy(noise), output_type="np").images[0]
            db = psnr(np.asarray(theirs, dtype=np.float64) * 255, reference.image_float.astype(np.float64) * 255)
            rows.append({"artifact": str(folder), "recipe": ours.manifest["recipe"]["name"],
                         "pipeline": pipeline_class.__name__, "sdopt_backend": backend,
                         "identical": db == float("inf"), "psnr_db": None if db == float("inf") else db})
            print(f"{folder} ({rows[-1]['recipe']}): {pipeline_class.__name__} vs sdopt on {backend}: "
                  + ("identical" if rows[-1]["identical"] else f"{db:.1f} dB"))
    if args.json:
        args.json.write_text(json.dumps({"prompt": PROMPT, "seed": SEED, "steps": args.steps, "rows": rows},
                                        indent=1, allow_nan=False) + "\n")


if __name__ == "__main__":
    main()
