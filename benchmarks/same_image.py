"""PSNR and SSIM of images against the first one: does a memory or build setting change the picture?

    python benchmarks/same_image.py REFERENCE.png OTHER.png [...] [--json FILE]

Make the images with the same prompt, seed and steps, e.g. `sdopt run ART --prompt P --seed 0 --steps 8 --out
a.png` and the same with `--low-memory` or `--backend openvino`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from sdopt.app.evaluate import psnr, ssim


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", type=Path)
    parser.add_argument("others", type=Path, nargs="+")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    reference = np.asarray(Image.open(args.reference).convert("RGB"))
    rows = []
    for path in args.others:
        image = np.asarray(Image.open(path).convert("RGB"))
        if np.array_equal(reference, image):
            rows.append({"image": str(path), "identical": True, "psnr_db": None, "ssim": 1.0})
            print(f"{path}: identical")
            continue
        rows.append({"image": str(path), "identical": False, "psnr_db": psnr(reference, image),
                     "ssim": ssim(reference, image)})
        print(f"{path}: PSNR {rows[-1]['psnr_db']:.2f} dB, SSIM {rows[-1]['ssim']:.4f}")
    if args.json:
        args.json.write_text(json.dumps({"reference": str(args.reference), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
