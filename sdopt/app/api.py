"""The Python API: what the command line does, as functions (the CLI is a thin layer over them).

    import sdopt

    art = sdopt.compress("tiny-shapes", "int8", "artifacts/int8", quantize={"calib_prompts": 8})
    generation = sdopt.Pipeline(art)("a red circle", seed=0)
    generation.save("circle.png")
    report = sdopt.evaluate(art)                       # {"alignment": ..., "psnr": ..., ...}
    result = sdopt.bench([art], peers="none", steps=4)  # {"rows": [...], ...}

Errors are `sdopt.SdoptError` with the one line the CLI prints; nothing is written before the inputs are checked.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from sdopt.contract.errors import SdoptError
from sdopt.contract.graphs import ATTENTION_FORMS, DEFAULT_ATTENTION
from sdopt.contract.limits import MAX_EVAL_SEEDS, MAX_RUNS, MAX_WARMUP, check_count

DEFAULT_RECIPE = "fp32"


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def _bars(progress):
    """progress=True: tqdm bars; False: none; a callable(iterable, label): the caller's."""
    if callable(progress):
        return progress
    if not progress:
        return lambda iterable, label: iterable
    from tqdm.auto import tqdm

    return lambda iterable, label: tqdm(iterable, desc=label, unit="image")


def pass_overrides(options: dict) -> list:
    """`quantize={"calibration": {"intervals": 4}}` or `**{"quantize.calibration.intervals": 4}` -> Overrides,
    as `--set quantize.calibration.intervals=4` gives them."""
    from sdopt.recipes.recipe import Override

    def flatten(prefix: str, value):
        if isinstance(value, dict) and value:
            for key, inner in value.items():
                yield from flatten(f"{prefix}.{key}", inner)
        else:
            yield prefix, value

    overrides = []
    for name, value in options.items():
        if "." not in name and not isinstance(value, dict):
            raise SdoptError(f"option {name}={value!r}: give a pass's options as {name}={{KEY: VALUE}} or "
                             f"'{name}.KEY'=VALUE")
        for dotted, leaf in flatten(name, value):
            pass_name, _, key = dotted.partition(".")
            overrides.append(Override(pass_name, key, leaf, f"{dotted}={leaf!r}"))
    return overrides


def compress(model: str, recipe: str, out, *, lora=(), external_data: bool = False,
             attention: str = DEFAULT_ATTENTION, float16: bool = False, without_t5: bool = False, **options) -> Path:
    """Apply `recipe` (a built-in name such as "int8", "lcm+int8+tiny-vae", or a YAML file) to `model` (tiny-shapes,
    tiny-scenes, a diffusers folder, arch:NAME) and write the artifact folder `out`; returns its path. `lora`: one
    or more "FILE[:SCALE]" fused first (as --lora); `without_t5`: an SD3 model without its T5 encoder (as
    --without-t5); `options`: pass options as `PASS={KEY: VALUE}` (as --set)."""
    from sdopt.compress.registry import registry
    from sdopt.recipes.recipe import resolve

    if attention not in ATTENTION_FORMS:
        raise SdoptError(f"attention {attention!r}: choose " + " or ".join(ATTENTION_FORMS))
    loras = [lora] if isinstance(lora, (str, Path)) else list(lora)
    # `lora=` is the --lora flag: whichever pass declares that inserting shortcut takes the files
    (owner, shortcut), = [(spec.name, s) for spec in registry().values() for s in spec.shortcuts
                          if s.flag == "--lora" and s.key is None]
    inserted = [(owner, shortcut.convert(str(item))) for item in loras]
    return compress_recipe(model, resolve(recipe, pass_overrides(options), inserted), Path(out),
                           external_data=external_data, attention=attention, float16=float16, without_t5=without_t5)


def compress_recipe(model: str, recipe, out: Path, *, command: list[str] | None = None, external_data: bool = False,
                    attention: str = DEFAULT_ATTENTION, float16: bool = False, without_t5: bool = False,
                    say=_stderr) -> Path:
    """A resolved recipe applied and exported: what `compress` and `sdopt compress` share."""
    import os

    from sdopt.contract.artifact import check_writable_destination

    check_writable_destination(out)

    from sdopt.export.writer import write_artifact
    from sdopt.recipes.recipe import apply, check
    from sdopt.sources.source import load_source

    start = time.perf_counter()
    source = load_source(model, without_t5=without_t5)
    check(source, recipe)
    if source.random_weights:
        say(f"note: {model} has random weights: its artifact is for speed measurements only")
    source = apply(source, recipe)
    if source.outputs.secondary:
        say(f"process {os.environ.get('RANK')}: done; the main process writes {out}")
        return out
    command = command or ["sdopt.compress", model, recipe.name, str(out)]
    written = write_artifact(source, recipe.to_dict(), out, command=command, external_data=external_data,
                             attention=attention, float16=float16)
    say(f"wrote {written} ({recipe.name}, {source.label}) in {time.perf_counter() - start:.1f} s")
    return Path(written)


def evaluate(artifact, *, reference=None, model: str | None = None, prompts: list[str] | None = None,
             seeds: int | None = None, steps: int | None = None, guidance: float | None = None,
             scheduler: str | None = None, backend: str = "onnxruntime", grid=None, clip=None,
             denoise: dict | None = None, vae: str = "default", vae_tile: int = 0, progress=True,
             **engine) -> dict:
    """Prompt alignment, binding errors (reference models), PSNR / SSIM against the reference and speed, as
    `sdopt eval --json` prints them. The reference is the fp32 export of the artifact's built-in source, of
    `model` (a local folder must be named again), or the artifact folder `reference`. `engine`: threads,
    low_memory, and for OpenVINO device and precision."""
    from sdopt.app.evaluate import EvalSettings, default_pairs
    from sdopt.app.evaluate import evaluate as run_evaluation
    from sdopt.contract.artifact import open_artifact
    from sdopt.contract.manifest import default_sampling
    from sdopt.contract.safe_io import check_output_file, check_outside

    artifact = Path(artifact)
    reference = None if reference is None else Path(reference)
    if seeds is not None:
        check_count(seeds, 1, MAX_EVAL_SEEDS, "seeds")
    manifest = open_artifact(artifact, verify=False).manifest
    pairs = default_pairs(manifest, prompts, seeds)
    info = manifest["pipeline"]
    settings = EvalSettings(*default_sampling(info, steps, guidance, scheduler))
    if grid is not None:
        grid = Path(grid)
        check_output_file(grid, "--grid", ".png")
        check_outside(grid, [artifact, reference], "--grid")
    if clip is not None and not (Path(clip) / "config.json").is_file():
        raise SdoptError(f"--clip {clip}: not a model folder (no config.json)")
    if reference is not None:
        if model is not None:
            raise SdoptError("--model names the source of the default reference: give it or --reference, not both")
        open_artifact(reference, verify=False)
    else:
        from sdopt.sources.source import source_to_rebuild

        source_to_rebuild(manifest, model, "--model")  # before any work: a local folder must be named
    return run_evaluation(artifact, reference, pairs, settings, model=model, progress=_bars(progress), grid=grid,
                          clip=None if clip is None else Path(clip), backend=backend, backend_options=engine,
                          denoise_overrides=denoise, vae_options={"vae": vae, "vae_tile": vae_tile})


def bench(artifacts=(), *, model: str | None = None, backends: str = "onnxruntime", peers: str | None = None,
          steps: int | None = None, height: int | None = None, width: int | None = None, runs: int = 5,
          warmup: int = 1, json=None, plot=None, device: str | None = None, precision: str | None = None,
          scheduler: str | None = None, denoise: dict | None = None, memory: str = "default", vae_tile: int = 0,
          threads: int | None = None, say=_stderr, table=None) -> dict:
    """Latency per stage and end to end, memory, load time and size of each artifact on each backend and of the
    peers, each timed in its own process, as `sdopt bench` measures them; the result `sdopt bench --json`
    writes (rows with an "error" are targets that failed). `json` / `plot`: also write them there."""
    from sdopt.app.bench import BenchRequest, prepare, write_json, write_plot
    from sdopt.app.bench import bench as run_bench

    check_count(runs, 1, MAX_RUNS, "runs")
    check_count(warmup, 1, MAX_WARMUP, "warmup")
    request = BenchRequest([Path(a) for a in artifacts], model, backends, peers, steps, height, width, runs,
                           warmup, None if json is None else Path(json), None if plot is None else Path(plot),
                           device, precision, scheduler, dict(denoise or {}), memory, vae_tile, threads)
    targets, settings, spec, random_weights, notes = prepare(request)
    for note in notes:
        say(note)
    result = run_bench(targets, settings, spec, random_weights)
    if table is not None:  # the CLI prints its table before writing the files
        table(result)
    if request.json:
        write_json(result, request.json)
        say(f"wrote {request.json}")
    if request.plot_path and write_plot(result, request.plot_path):
        say(f"wrote {request.plot_path}")
    return result
