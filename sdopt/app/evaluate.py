"""`sdopt eval`: what compression did to the images.

The artifact and a reference (by default the fp32 export of the same source) generate the same
prompts with the same seeds, scheduler, steps and guidance, except for an artifact distilled to another
sampler (`lcm`): it samples as asked, the reference as its manifest says (the few-step model against
the model at its own steps). Reported: PSNR and SSIM of the
images against the reference, cosine of the final latents, images per second, and for sdopt's
reference models (tiny-shapes, tiny-scenes, tiny-scenes-sd3) the prompt alignment read back by their detectors; with a
local CLIP model folder, the CLIP score of both.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sdopt.contract.errors import SdoptError

GENERIC_SEEDS = 2


@dataclass(frozen=True)
class EvalSettings:
    steps: int
    guidance: float
    scheduler: str = "ddim"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


SSIM_RADIUS = 5  # the 11 x 11 window of Wang et al. (scikit-image: a Gaussian of sigma 1.5 truncated at 3.5 sigma)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two (H, W, 3) images on a 0-255 scale, as scikit-image's `structural_similarity(a, b,
    channel_axis=-1, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)` computes
    it (Wang et al. 2004: Gaussian window sigma 1.5, K1 0.01, K2 0.03; the mean leaves out half a window at the
    borders). Written out here because scikit-image would bring scipy into the base install (52 MB more wheels
    than its 44 MB); tests check that both agree."""
    if min(a.shape[:2]) <= 2 * SSIM_RADIUS:
        raise SdoptError(f"SSIM needs images over {2 * SSIM_RADIUS} pixels a side, not {a.shape[1]}x{a.shape[0]}")
    x, y = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    blur = _gaussian_blur
    mx, my = blur(x), blur(y)
    vx, vy, cov = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    r = SSIM_RADIUS
    return float(s[r:-r, r:-r].mean())


def _gaussian_blur(img: np.ndarray, sigma: float = 1.5, radius: int = SSIM_RADIUS) -> np.ndarray:
    """Separable Gaussian over H and W of an (H, W, C) image, edges mirrored (scipy.ndimage's 'reflect')."""
    t = np.arange(-radius, radius + 1)
    k = np.exp(-(t ** 2) / (2 * sigma ** 2))
    k /= k.sum()
    out = img
    for axis in (0, 1):
        padded = np.pad(out, [(radius, radius) if i == axis else (0, 0) for i in range(out.ndim)],
                        mode="symmetric")
        out = sum(w * np.take(padded, np.arange(i, i + out.shape[axis]), axis=axis) for i, w in enumerate(k))
    return out


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def default_pairs(manifest: dict, prompts: list[str] | None, seeds: int | None) -> list[tuple[str, int]]:
    """(prompt, seed) pairs: the given prompts x seeds, else a reference family's held-out set, else a
    generic prompt set."""
    if prompts:
        return [(p, s) for p in prompts for s in range(seeds or 1)]
    reference = reference_family_of(manifest)
    if reference is not None:
        return reference.heldout_pairs(seeds * 64 if seeds else 256)
    from sdopt.reference.prompts import GENERIC_PROMPTS

    return [(p, s) for p in GENERIC_PROMPTS[:4] for s in range(seeds or GENERIC_SEEDS)]


def reference_family_of(manifest: dict):
    """The sdopt.reference.families reference family the artifact's source belongs to, or None."""
    from sdopt.reference.families import family

    return family(manifest["source"].get("family"))


def reference_artifact(manifest: dict, model: str | None = None) -> Path:
    """The fp32 export of the artifact's source, made once and cached: a built-in source by its name, a local
    folder only when the user names it (`model`, from --model)."""
    from sdopt.sources.source import source_to_rebuild

    return fp32_export(source_to_rebuild(manifest, model, "--model"), manifest["sdopt_version"])


def fp32_export(spec: str, version: str | None = None) -> Path:
    """The plain fp32 ONNX export of a model source, made once and cached under $SDOPT_CACHE."""
    from sdopt.contract.cache import cache_root, source_key
    from sdopt.contract.version import __version__
    from sdopt.reference.families import source_folder

    cache = cache_root() / "reference" / source_key(spec, version or __version__, folder=source_folder(spec))
    if cache.exists():
        from sdopt.contract.artifact import open_artifact

        try:
            open_artifact(cache)
            return cache
        except SdoptError as err:
            print(f"note: the cached reference {cache} is damaged ({err}); making it again", file=sys.stderr)
            shutil.rmtree(cache)  # sdopt's own cache entry, named by its key
    from sdopt.export.writer import write_artifact
    from sdopt.recipes.recipe import resolve
    from sdopt.sources.source import load_source

    print(f"note: exporting the fp32 reference of {spec} (once: it is cached in {cache})", file=sys.stderr)
    write_artifact(load_source(spec), resolve("fp32").to_dict(), cache)
    return cache


def generate_all(pipe, pairs, settings: EvalSettings, progress=None):
    """(images, final latents, images per second, mean of the denoise strategy's counts per image)."""
    images, latents, stats = [], [], {}
    start = time.perf_counter()
    for prompt, seed in (progress(pairs) if progress else pairs):
        result = pipe(prompt, seed=seed, steps=settings.steps, guidance=settings.guidance,
                      scheduler=settings.scheduler)
        images.append(result.image)
        latents.append(result.latents)
        for key, value in result.stats.items():
            stats[key] = stats.get(key, 0) + value / len(pairs)
    return images, latents, len(pairs) / (time.perf_counter() - start), stats


def clip_score(clip_dir: Path, prompts: list[str], images: list[np.ndarray]) -> float:
    """Mean CLIP score, 100 x max(cos(image, text), 0) (Hessel et al. 2021, as torchmetrics), with a local
    CLIP model folder (transformers CLIPModel + its processor)."""
    import torch
    from transformers import CLIPModel, CLIPProcessor

    try:
        model = CLIPModel.from_pretrained(str(clip_dir), local_files_only=True).eval()
        processor = CLIPProcessor.from_pretrained(str(clip_dir), local_files_only=True)
    except (OSError, ValueError) as e:
        raise SdoptError(f"--clip {clip_dir}: not a CLIP model folder ({str(e).splitlines()[0]})") from None
    scores = []
    with torch.no_grad():
        for start in range(0, len(prompts), 32):
            batch = processor(text=prompts[start:start + 32], images=list(images[start:start + 32]),
                              return_tensors="pt", padding=True, truncation=True)
            out = model(**batch)
            img = torch.nn.functional.normalize(out.image_embeds, dim=-1)
            txt = torch.nn.functional.normalize(out.text_embeds, dim=-1)
            scores.append(100 * (img * txt).sum(-1).clamp(min=0))
    return float(torch.cat(scores).mean())


def evaluate(artifact: Path, reference: Path | None, pairs, settings: EvalSettings, progress=None,
             grid: Path | None = None, clip: Path | None = None, backend: str = "onnxruntime",
             backend_options: dict | None = None, denoise_overrides: dict | None = None,
             vae_options: dict | None = None, model: str | None = None) -> dict:
    """The artifact runs on `backend` (its denoise strategy changed by `denoise_overrides`); the reference (by
    default the fp32 export of `model`, else of the artifact's built-in source) always on ONNX Runtime as its
    manifest says. `progress(iterable, label)` wraps each generation loop."""
    from sdopt.runtime.pipeline import Pipeline

    pipe = Pipeline(artifact, backend, denoise_overrides=denoise_overrides, **(vae_options or {}),
                    **(backend_options or {}))
    if not pairs:
        raise SdoptError("no prompts to evaluate")
    verify_reference = reference is not None  # the cached reference was verified as it was looked up
    reference = reference or reference_artifact(pipe.manifest, model)
    ref_pipe = Pipeline(reference, verify=verify_reference)
    if model is None and ref_pipe.manifest["source"]["spec"] != pipe.manifest["source"]["spec"]:
        raise SdoptError(f"reference '{reference}' was made from {ref_pipe.manifest['source']['spec']}, "
                         f"the artifact from {pipe.manifest['source']['spec']}")
    ref_settings = reference_settings(pipe.info, ref_pipe.info, settings)
    for p, s in ((pipe, settings), (ref_pipe, ref_settings)):
        p.check_request(steps=s.steps, guidance=s.guidance, scheduler=s.scheduler)
    recipe, ref_recipe = pipe.manifest["recipe"]["name"], ref_pipe.manifest["recipe"]["name"]

    def labelled(label: str):
        return (lambda it: progress(it, label)) if progress else None
    images, latents, speed, calls = generate_all(pipe, pairs, settings, labelled(f"generating: {recipe} artifact"))
    rendered_once = (backend == "onnxruntime" and not denoise_overrides and not any((backend_options or {}).values())
                     and vae_options in (None, {"vae": "default", "vae_tile": 0}) and settings == ref_settings
                     and same_graphs(pipe.manifest, ref_pipe.manifest))
    if rendered_once:  # the reference would run the same graphs the same way: its images are these
        ref_images, ref_latents, ref_speed, ref_calls = images, latents, speed, calls
    else:
        ref_images, ref_latents, ref_speed, ref_calls = generate_all(ref_pipe, pairs, ref_settings,
                                                                     labelled(f"generating: {ref_recipe} reference"))
    result = {
        "artifact": str(artifact), "reference": str(reference), "recipe": pipe.manifest["recipe"]["name"],
        "source": pipe.manifest["source"]["spec"], "random_weights": pipe.manifest["source"]["random_weights"],
        "n_images": len(pairs), "steps": settings.steps, "guidance": settings.guidance,
        "scheduler": settings.scheduler,
        "reference_settings": {"steps": ref_settings.steps, "guidance": ref_settings.guidance,
                               "scheduler": ref_settings.scheduler},
        "psnr": float(np.mean([min(psnr(a, b), 100.0) for a, b in zip(images, ref_images)])),
        "ssim": float(np.mean([ssim(a, b) for a, b in zip(images, ref_images)])),
        "latent_cosine": float(np.mean([cosine(a, b) for a, b in zip(latents, ref_latents)])),
        "images_per_s": speed, "reference_images_per_s": ref_speed,
        "reference_recipe": ref_pipe.manifest["recipe"]["name"],
        "denoise": {"strategy": pipe.strategy_name, "params": pipe.denoise_params},
        "unet_calls": calls, "reference_unet_calls": ref_calls,
        **unet_size(pipe.manifest, ref_pipe.manifest),
    }
    if rendered_once:
        result["reference_rendered"] = "once: the artifact and the reference hold the same graphs, run alike"
    reference = reference_family_of(pipe.manifest)
    captions = [p for p, _ in pairs]
    foreign = [c for c in captions if reference is not None and not reference.describes(c)]
    if foreign:  # prompts of the user's own: the images still compare, the detector cannot read them
        result["alignment_not_measured"] = f"{len(foreign)} prompts are not {reference.name} captions " \
                                           f"(first: {foreign[0][:60]!r})"
    elif reference is not None:
        ours, ref = reference.alignment(captions, images), reference.alignment(captions, ref_images)
        result.update(alignment=ours["alignment"], per_attribute=ours["per_attribute"],
                      reference_alignment=ref["alignment"], reference_per_attribute=ref["per_attribute"])
        if "binding_error" in ours:
            result.update(binding_error=ours["binding_error"], reference_binding_error=ref["binding_error"])
    if clip is not None:
        result.update(clip_score=clip_score(clip, captions, images),
                      reference_clip_score=clip_score(clip, captions, ref_images))
    if grid is not None:
        write_grid(grid, pairs, ref_images, images, labels=(f"reference ({ref_recipe})", recipe))
        result["grid"] = str(grid)
    return result


def same_graphs(manifest: dict, reference_manifest: dict) -> bool:
    """Whether two artifacts hold the same files (by digest) and the same pipeline settings."""
    from sdopt.contract.manifest import listed_files

    digests = [{name: f["sha256"] for name, f in listed_files(m).items()} for m in (manifest, reference_manifest)]
    return digests[0] == digests[1] and manifest["pipeline"] == reference_manifest["pipeline"]


def reference_settings(info: dict, reference_info: dict, settings: EvalSettings) -> EvalSettings:
    """The artifact's settings, unless it was distilled to a sampler the reference was not made for: then the
    reference's own defaults."""
    own = reference_info.get("scheduler", "ddim")
    if info.get("scheduler", "ddim") == own:
        return settings
    return EvalSettings(reference_info["steps"], reference_info["guidance"], own)


def unet_size(manifest: dict, reference: dict | None = None) -> dict:
    """UNet parameters and MACs (one guided call at the model's size) as a pruning pass recorded them: after
    pruning for the artifact, before it for the unpruned source (the reference, unless it is pruned too)."""
    pruned = next((r for r in manifest["passes"] if _resized(r)), None)
    if pruned is None:
        return {}
    sizes = {"unet_parameters": pruned["after"]["parameters"], "unet_macs": pruned["after"]["macs"]}
    if reference is None or not any(_resized(r) for r in reference["passes"]):
        sizes.update(reference_unet_parameters=pruned["before"]["parameters"],
                     reference_unet_macs=pruned["before"]["macs"])
    return sizes


def _resized(record: dict) -> bool:
    """A pass record with UNet sizes before and after (what a pruning pass writes)."""
    return all(isinstance(record.get(k), dict) and "macs" in record[k] for k in ("before", "after"))


def _calls(calls: dict) -> str:
    return f"{calls.get('full', 0):.1f}/{calls.get('shallow', 0):.1f}"


def write_grid(path: Path, pairs, ref_images, images, rows: int = 8,
               labels: tuple[str, str] = ("reference", "artifact")) -> None:
    """A PNG to look at: one row per prompt, the reference's image left, the artifact's right, each column
    headed by its label."""
    from PIL import Image, ImageDraw

    rows = min(rows, len(pairs))
    h, w = images[0].shape[:2]
    scale = max(1, 128 // h)  # tiny models make tiny images: enlarge so a person can see them
    cell_h, cell_w, label_w, head = h * scale, w * scale, 360, 18
    canvas = Image.new("RGB", (label_w + 2 * cell_w + 8, head + rows * (cell_h + 4)), "white")
    draw = ImageDraw.Draw(canvas)
    for c, label in enumerate(labels):
        draw.text((label_w + c * (cell_w + 8) + 2, 3), label, fill="black")
    for r in range(rows):
        y = head + r * (cell_h + 4)
        draw.text((4, y + cell_h // 2 - 6), f"{pairs[r][0]} (seed {pairs[r][1]})", fill="black")
        for c, image in enumerate((ref_images[r], images[r])):
            tile = Image.fromarray(image).resize((cell_w, cell_h), Image.NEAREST)
            canvas.paste(tile, (label_w + c * (cell_w + 8), y))
    canvas.save(path)


def format_table(result: dict) -> str:
    """Reference and artifact side by side."""
    label = result["source"] + (" (random weights)" if result["random_weights"] else "")
    header = (f"{label}: {result['n_images']} images, {result['scheduler']}, {result['steps']} steps, "
              f"guidance {result['guidance']}")
    rows = [("", result["reference_recipe"] + " (reference)", result["recipe"])]
    ref = result.get("reference_settings", {})
    if ref and (ref["steps"], ref["scheduler"]) != (result["steps"], result["scheduler"]):
        rows.append(("sampling", f"{ref['scheduler']} {ref['steps']} steps, g {ref['guidance']}",
                     f"{result['scheduler']} {result['steps']} steps, g {result['guidance']}"))
    if "alignment" in result:
        rows.append(("prompt alignment", f"{result['reference_alignment']:.1%}", f"{result['alignment']:.1%}"))
        rows += [(f"  {k}", f"{result['reference_per_attribute'][k]:.1%}", f"{v:.1%}")
                 for k, v in result["per_attribute"].items()]
    if "alignment_not_measured" in result:
        rows.append(("prompt alignment", "-", "not measured"))
    if "binding_error" in result:
        rows.append(("  binding errors", f"{result['reference_binding_error']:.1%}",
                     f"{result['binding_error']:.1%}"))
    if "clip_score" in result:
        rows.append(("CLIP score", f"{result['reference_clip_score']:.2f}", f"{result['clip_score']:.2f}"))
    if result.get("unet_calls", {}).keys() - {"full"}:
        rows.append(("UNet calls per image, full/shallow", _calls(result["reference_unet_calls"]),
                     _calls(result["unet_calls"])))
    if "unet_parameters" in result:
        rows += [("UNet parameters, M", f"{result.get('reference_unet_parameters', 0) / 1e6:.2f}",
                  f"{result['unet_parameters'] / 1e6:.2f}"),
                 ("UNet GMACs per guided step", f"{result.get('reference_unet_macs', 0) / 1e9:.3f}",
                  f"{result['unet_macs'] / 1e9:.3f}")]
    rows += [("PSNR vs reference, dB", "-", f"{result['psnr']:.2f}"),
             ("SSIM vs reference", "-", f"{result['ssim']:.4f}"),
             ("latent cosine", "-", f"{result['latent_cosine']:.5f}"),
             ("latency per image, ms", f"{1000 / result['reference_images_per_s']:.0f}",
              f"{1000 / result['images_per_s']:.0f}"),
             ("images/s", f"{result['reference_images_per_s']:.2f}", f"{result['images_per_s']:.2f}")]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [header] + [f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c:>{widths[2]}}" for a, b, c in rows]
    if "alignment_not_measured" in result:
        lines.append(f"prompt alignment not measured: {result['alignment_not_measured']}")
    if "grid" in result:
        lines.append(f"grid of the first prompts (reference | {result['recipe']}): {result['grid']}")
    return "\n".join(lines)
