"""A few-step (lcm) artifact at several step counts against the fp32 reference at its own sampling, on the same
held-out pairs: what `sdopt eval ART --steps N` reports for each N, with the reference's images made once.

    python benchmarks/lcm_steps.py ART [--steps 1,2,4,8] [--seeds 4] [--json FILE]

ART is made from one of sdopt's reference models (tiny-shapes, tiny-scenes): its detector reads the alignment.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from sdopt.app.evaluate import (
    EvalSettings,
    cosine,
    default_pairs,
    generate_all,
    psnr,
    reference_artifact,
    reference_family_of,
    ssim,
)
from sdopt.contract.errors import SdoptError
from sdopt.reference.families import headline
from sdopt.runtime.pipeline import Pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--steps", default="1,2,4,8")
    parser.add_argument("--seeds", type=int, default=4, help="64 x N held-out pairs (default 4: 256)")
    parser.add_argument("--json", type=Path, help="default: benchmarks/results/lcm_steps[_FAMILY].json "
                        "(no suffix for tiny-shapes)")
    args = parser.parse_args()
    try:
        pipe = Pipeline(args.artifact)
    except SdoptError as e:
        parser.error(str(e))
    family = reference_family_of(pipe.manifest)
    if family is None:
        parser.error(f"{args.artifact} is not made from a reference model (tiny-shapes, tiny-scenes)")
    out = args.json or Path(__file__).parent / "results" / family.result_file("lcm_steps")
    reference = Pipeline(reference_artifact(pipe.manifest), verify=False)
    pairs = default_pairs(pipe.manifest, None, args.seeds)
    captions = [p for p, _ in pairs]
    info, ref_info = pipe.info, reference.info
    ref_settings = EvalSettings(ref_info["steps"], ref_info["guidance"], ref_info.get("scheduler", "ddim"))

    def progress(what):
        return lambda it: tqdm(it, desc=what, unit="image")

    ref_images, ref_latents, ref_speed, _ = generate_all(reference, pairs, ref_settings, progress("reference"))
    rows = [{"what": f"fp32 reference, {ref_settings.scheduler} {ref_settings.steps} steps",
             **headline(family.alignment(captions, ref_images)), "images_per_s": ref_speed}]
    for steps in (int(s) for s in args.steps.split(",")):
        settings = EvalSettings(steps, info["guidance"], info.get("scheduler", "ddim"))
        images, latents, speed, _ = generate_all(pipe, pairs, settings, progress(f"{steps} steps"))
        found = family.alignment(captions, images)
        rows.append({"what": f"{pipe.manifest['recipe']['name']}, {settings.scheduler} {steps} steps",
                     "steps": steps, **headline(found), "per_attribute": found["per_attribute"],
                     "psnr": float(np.mean([min(psnr(a, b), 100.0) for a, b in zip(images, ref_images)])),
                     "ssim": float(np.mean([ssim(a, b) for a, b in zip(images, ref_images)])),
                     "latent_cosine": float(np.mean([cosine(a, b) for a, b in zip(latents, ref_latents)])),
                     "images_per_s": speed})
    result = {"benchmark": "lcm_steps", "model": family.name, "artifact": str(args.artifact), "pairs": len(pairs),
              "guidance": info["guidance"], "rows": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{family.name}, {len(pairs)} held-out pairs, guidance {info['guidance']}")
    for r in rows:
        extra = f"  PSNR {r['psnr']:.2f} dB  SSIM {r['ssim']:.4f}" if "psnr" in r else ""
        binding = f"  binding errors {r['binding_error']:.1%}" if "binding_error" in r else ""
        speed = f"{1000 / r['images_per_s']:.0f} ms/image"
        print(f"{r['what']:<40} alignment {r['alignment']:.1%}{binding}  {speed}{extra}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
