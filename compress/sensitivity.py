"""Sensitivity analysis: which quantized layers cost the most fidelity, and keeping those in float.

Each layer is quantized alone (every other quantizer off) and scored by the PSNR of the denoiser's output
against the float denoiser on a spread of calibration calls (peak: the largest |value| of the float
outputs). Then, from the worst layer on, layers go back to floating point until the fully quantized
denoiser reaches the target PSNR.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from tqdm.auto import tqdm

EVALUATION_CALLS = 8


def keep_sensitive_layers_in_float(backbone, model, calls: list[dict], target_db: float) -> dict:
    from sdopt.compress.modelopt_state import is_quantized, quantized_layer_names, quantizers_disabled

    chosen = [calls[i] for i in np.linspace(0, len(calls) - 1, min(EVALUATION_CALLS, len(calls))).round().astype(int)]
    if not _has_interval_scales(model):  # one batch; interval scales follow each call's own timestep
        chosen = [{k: torch.cat([c[k] for c in chosen]) for k in chosen[0] if chosen[0][k].dim()}]
    with quantizers_disabled(model):
        reference = _outputs(backbone, model, chosen)
    peak = max(float(r.abs().max()) for r in reference)
    modules = dict(model.named_modules())
    layers = quantized_layer_names(model)
    quantizers = {name: _enabled_quantizers(modules[name]) for name in layers}

    def psnr() -> float:
        return _psnr(_outputs(backbone, model, chosen), reference, peak)

    alone = {}
    with quantizers_disabled(model):
        for name in tqdm(layers, desc="layer sensitivity", unit="layer"):
            for q in quantizers[name]:
                q.enable()
            alone[name] = psnr()
            for q in quantizers[name]:
                q.disable()
    before = after = psnr()
    kept_float = []
    for name in sorted(alone, key=alone.get):
        if after >= target_db:
            break
        for q in quantizers[name]:
            q.disable()
        assert not is_quantized(modules[name])
        kept_float.append(name)
        after = psnr() if len(kept_float) < len(layers) else float("inf")
    report = {
        "metric": "denoiser output PSNR vs float (dB)",
        "target_db": target_db,
        "psnr_all_quantized_db": round(before, 2),
        "psnr_db": round(after, 2) if np.isfinite(after) else None,
        "kept_float": kept_float,
        "layer_psnr_db": {name: round(alone[name], 2) for name in sorted(alone, key=alone.get)},
    }
    print(format_report(report), file=sys.stderr)
    return report


def format_report(report: dict, rows: int = 10) -> str:
    lines = [f"sensitivity (quantized alone, {report['metric']}), worst {rows}:",
             f"{'layer':64s} {'PSNR dB':>8s}  kept float"]
    for name, value in list(report["layer_psnr_db"].items())[:rows]:
        lines.append(f"{name:64s} {value:8.2f}  {'yes' if name in report['kept_float'] else ''}")
    final = "all float" if report["psnr_db"] is None else f"{report['psnr_db']:.2f} dB"
    lines.append(f"all quantized {report['psnr_all_quantized_db']:.2f} dB -> {len(report['kept_float'])} layer(s) "
                 f"kept in float -> {final} (target {report['target_db']} dB)")
    return "\n".join(lines)


def _has_interval_scales(model) -> bool:
    from sdopt.compress.modelopt_state import INTERVAL_TABLE

    return any(hasattr(m, INTERVAL_TABLE) for m in model.modules())


def _enabled_quantizers(module) -> list:
    return [q for q in (getattr(module, k, None) for k in ("weight_quantizer", "input_quantizer", "output_quantizer"))
            if q is not None and q.is_enabled]


def _outputs(backbone, model, calls: list[dict]) -> list[torch.Tensor]:
    with torch.no_grad():
        return [backbone.call(model, inputs) for inputs in calls]


def _psnr(outputs, reference, peak: float) -> float:
    mse = float(np.mean([torch.mean((o - r) ** 2).item() for o, r in zip(outputs, reference)]))
    return float("inf") if mse == 0 else 10 * np.log10(peak ** 2 / mse)
