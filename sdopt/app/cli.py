"""`sdopt` command line: compress | run | eval | build | bench.

Every user error is one line on stderr and exit code 2; nothing half-written is left behind.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sdopt.contract import interrupts
from sdopt.contract.argtypes import (
    bounded,
    guidance,
    image_side,
    key_value,
    seed,
    steps,
    strength,
    threads,
    vae_tile,
    workspace,
)
from sdopt.contract.errors import SdoptError, os_error_text
from sdopt.contract.graphs import ATTENTION_FORMS, DEFAULT_ATTENTION
from sdopt.contract.limits import (
    MAX_EVAL_SEEDS,
    MAX_GUIDANCE,
    MAX_RUNS,
    MAX_SEED,
    MAX_STEPS,
    MAX_WARMUP,
    MAX_WORKSPACE_GIB,
)
from sdopt.contract.sampling import SCHEDULERS


def _backend_flags(parser) -> None:
    from sdopt.runtime.backends import BACKENDS
    from sdopt.runtime.backends.openvino import PRECISIONS, precision_name

    parser.add_argument("--backend", choices=BACKENDS, default="onnxruntime",
                        help="inference engine (default onnxruntime; openvino needs the openvino extra and, for int8 "
                             "artifacts, `sdopt build --format openvino`; tensorrt needs engines from "
                             "`sdopt build --format tensorrt`)")
    parser.add_argument("--device", help="OpenVINO device (default CPU)")
    parser.add_argument("--precision", choices=PRECISIONS, type=precision_name,
                        help="OpenVINO inference precision hint (default: the device's own, bf16 on CPUs with AMX)")
    parser.add_argument("--threads", type=threads,
                        help="CPU threads of the engine, onnxruntime or openvino: 1 to this machine's CPUs (default: "
                             "the engine's, one per core)")
    parser.add_argument("--low-memory", action="store_true",
                        help="load each graph only for its stage and release it after: the peak is the largest "
                             "stage's instead of the sum, at the cost of loading the graphs every generation")


def _backend_options(args) -> dict:
    options = {k: getattr(args, k) for k in ("device", "precision") if getattr(args, k) is not None}
    if options and args.backend != "openvino":
        raise SdoptError(f"--{next(iter(options))} applies to --backend openvino")
    if args.threads is not None:
        if args.backend == "tensorrt":
            raise SdoptError("--threads applies to the CPU engines (--backend onnxruntime or openvino)")
        options["threads"] = args.threads
    if args.low_memory:
        options["low_memory"] = True
    return options


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (the full usage is one `--help` away), exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(with_passes: bool = False) -> argparse.ArgumentParser:
    """`with_passes`: also the flags the passes declare for `compress` (this imports the passes, so torch)."""
    from sdopt.sources.source import DEFAULT_MODEL

    parser = _Parser(prog="sdopt", description="Compress, export and run Stable Diffusion models.",
                     epilog="environment: SDOPT_CACHE, the folder where calibration records, fp32 reference "
                            "exports, trained students and bench peers' builds are cached (default ~/.cache/sdopt)")
    parser.add_argument("--version", action="version", version=f"sdopt {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    _add_compress(commands, with_passes, DEFAULT_MODEL)
    _add_run(commands)
    _add_eval(commands)
    _add_build(commands)
    _add_bench(commands, DEFAULT_MODEL)
    return parser


def _add_compress(commands, with_passes: bool, default_model: str) -> None:
    c = commands.add_parser("compress", help="apply a recipe's passes and export an artifact folder",
                            description="Load a model, apply the recipe's compression passes (torch), export "
                                        "every component to ONNX and write the artifact folder atomically.")
    c.add_argument("--model", default=default_model,
                   help=f"model source: tiny-shapes, tiny-scenes, tiny-scenes-sd3 (sdopt's reference models), a local "
                        f"diffusers pipeline folder (SD1.x, SD2.x, SDXL, SD3, SD3.5), or "
                        f"arch:sd15|sd21|sdxl|sd3|sd35m|tiny (real architecture, random weights: speed only). "
                        f"Default: {default_model}")
    c.add_argument("--without-t5", action="store_true",
                   help="SD3 / SD3.5: leave the T5 text encoder out, as diffusers does with text_encoder_3=None "
                        "(zeros in its place: a fraction of the memory, somewhat weaker prompt following)")
    c.add_argument("--recipe", default="fp32",
                   help="built-in recipe (fp32: export only; int8: W8A8, fp8: E4M3 weights and activations, "
                        "w4a8: INT4 AWQ weights + INT8 activations; denoiser quantization) or a YAML recipe file. "
                        "Default: fp32")
    c.add_argument("--out", required=True, type=Path, help="artifact folder to write (replaced if it is an artifact)")
    c.add_argument("--set", action="append", metavar="PASS.KEY=VALUE",
                   help="set an option of the recipe's pass (nested keys with dots, VALUE as YAML), e.g. "
                        "--set quantize.calibration.intervals=4; repeatable")
    c.add_argument("--external-data", action="store_true",
                   help="write every graph's weights to a model.onnx_data file beside it (default: only graphs with "
                        "over 64 MB of weights, which engines then map from the file)")
    c.add_argument("--attention", choices=ATTENTION_FORMS, default=DEFAULT_ATTENTION,
                   help="how attention is exported: batched (every head's scores at once) or head-sliced (one "
                        "head at a time: the same result in less memory at large images, and no slower). Default: "
                        f"{DEFAULT_ATTENTION}")
    c.add_argument("--float16", action="store_true",
                   help="export the graphs in fp16 (inputs and outputs stay float32; Q/DQ stay float32): for GPU "
                        "engines that take fp16 graphs, such as strongly typed TensorRT and ONNX Runtime CUDA")
    if with_passes:
        from sdopt.compress.registry import registry

        for spec in registry().values():
            for shortcut in spec.shortcuts:
                c.add_argument(shortcut.flag, dest=_shortcut_dest(spec.name, shortcut), default=None,
                               **shortcut.argparse)


def _add_run(commands) -> None:
    r = commands.add_parser("run", help="generate an image from an artifact (no torch needed)",
                            description="Text-to-image with classifier-free guidance from an artifact folder.")
    r.add_argument("artifact", type=Path, help="artifact folder written by `sdopt compress`")
    r.add_argument("--prompt", required=True, help="text prompt")
    r.add_argument("--negative-prompt", default="", help="negative prompt (default: empty)")
    r.add_argument("--out", required=True, type=Path, help="output PNG file")
    r.add_argument("--seed", type=seed, default=0, help=f"seed of the initial noise, 0 to {MAX_SEED} (default 0)")
    _sampling_flags(r)
    r.add_argument("--height", type=image_side, help="image height in pixels (default: the model's, or the "
                                                     "--image's)")
    r.add_argument("--width", type=image_side, help="image width in pixels (default: the model's, or the --image's)")
    r.add_argument("--image", type=Path, help="img2img: start from this image (resized to --height/--width if given)")
    r.add_argument("--strength", type=strength, help="img2img / inpainting: how much of the schedule runs on the "
                                                      "image, in (0, 1] (default 0.8; 1 with --mask)")
    r.add_argument("--mask", type=Path, help="inpainting: repaint where this mask (same size as --image) is white")
    _denoise_flag(r)
    _vae_flags(r)
    _backend_flags(r)


def _add_eval(commands) -> None:
    e = commands.add_parser("eval", help="compare an artifact's images with a reference's",
                            description="Generate the same prompts and seeds with the artifact and a reference "
                                        "(default: the fp32 export of the same source, made once and cached) and "
                                        "report PSNR, SSIM, latent cosine, images/s, and for sdopt's reference "
                                        "models (tiny-shapes, tiny-scenes, tiny-scenes-sd3) the prompt alignment.")
    e.add_argument("artifact", type=Path, help="artifact folder to evaluate")
    e.add_argument("--reference", type=Path, help="reference artifact (default: fp32 export of the same source)")
    e.add_argument("--model", help="model source whose fp32 export is the reference (default: the artifact's own "
                                   "when sdopt builds it from its name: a reference model, arch:NAME; an "
                                   "artifact of a local folder needs the folder named here or --reference)")
    e.add_argument("--prompts", type=Path, help="text file, one prompt per line (default: the model's held-out "
                                                "set for tiny-shapes / tiny-scenes, else a generic set)")
    e.add_argument("--seeds", type=bounded(1, MAX_EVAL_SEEDS),
                   help=f"seeds per prompt, 1 to {MAX_EVAL_SEEDS} (default 1 with --prompts, 2 for the generic set; "
                        f"tiny-shapes / tiny-scenes: 64 x N held-out pairs, default 256)")
    _sampling_flags(e)
    e.add_argument("--grid", type=Path,
                   help="also write a PNG grid: reference and artifact images of the first prompts")
    e.add_argument("--clip", type=Path, help="local CLIP model folder (transformers CLIPModel and processor): "
                                             "adds the CLIP score of both image sets")
    e.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of a table")
    _denoise_flag(e)
    _vae_flags(e)  # for the artifact
    _backend_flags(e)  # for the artifact; the reference runs on ONNX Runtime


def _add_build(commands) -> None:
    d = commands.add_parser("build", help="build an artifact for a deployment backend (OpenVINO IR, TensorRT)",
                            description="Convert an artifact's ONNX graphs into a backend's own form, stored "
                                        "inside the artifact folder and listed in its manifest; `run`, `eval` "
                                        "and `bench` on that backend use it.")
    d.add_argument("artifact", type=Path, help="artifact folder written by `sdopt compress`")
    d.add_argument("--format", required=True, choices=("openvino", "tensorrt"),
                   help="openvino: IR with the uint8 activation form OpenVINO computes exactly; tensorrt: one "
                        "engine per component (needs TensorRT and an NVIDIA GPU)")
    d.add_argument("--batch", help="images per prompt, N or (tensorrt) MIN:OPT:MAX (default 1; the denoiser's "
                                   "doubles it for classifier-free guidance)")
    d.add_argument("--height", help="image height in pixels, N or (tensorrt) MIN:OPT:MAX (default: the model's)")
    d.add_argument("--width", help="image width in pixels, N or (tensorrt) MIN:OPT:MAX (default: the model's)")
    d.add_argument("--static", action="store_true",
                   help="one fixed shape, for edge devices: tensorrt builds the OPT values; openvino fixes every graph "
                        "to one image of --height x --width (single values; default: the model's size), and the "
                        "runtime then generates that size only")
    d.add_argument("--float-precision", choices=("fp16", "fp32"), default="fp16",
                   help="tensorrt: precision of the layers the artifact keeps in float: fp16 (default) or fp32 "
                        "(strongly typed: every type from the ONNX graph and its Q/DQ)")
    d.add_argument("--workspace", type=workspace, metavar="GIB",
                   help=f"tensorrt: workspace memory limit in GiB, above 0 and up to {MAX_WORKSPACE_GIB:g}")
    d.add_argument("--timing-cache", type=Path, help="tensorrt: timing cache file to read and update "
                                                     "(default: kept inside the build)")


def _add_bench(commands, default_model: str) -> None:
    b = commands.add_parser("bench", help="latency per stage, memory, load time and size, against peers",
                            description="Time text encoder, denoiser per step, VAE decode and end-to-end guided "
                                        "generation of artifacts and of peers (diffusers eager fp32, sdopt's fp32 "
                                        "ONNX on ONNX Runtime and on OpenVINO, and other tools' own builds: "
                                        "Optimum's ONNX export, optimum-intel with NNCF hybrid INT8, "
                                        "stable-diffusion.cpp), each in its own process; prints a table with "
                                        "speedups over the first peer (--wide: over each).")
    b.add_argument("artifacts", nargs="*", type=Path, help="artifact folders to measure (any number)")
    b.add_argument("--model", help="model source of the peers (default: the artifacts' source, else "
                                   f"{default_model})")
    b.add_argument("--backends", default="onnxruntime",
                   help="comma-separated backends to run each artifact on (default onnxruntime)")
    b.add_argument("--device", help="OpenVINO device for artifacts on openvino (default CPU)")
    from sdopt.runtime.backends.openvino import PRECISIONS, precision_name

    b.add_argument("--precision", choices=PRECISIONS, type=precision_name,
                   help="OpenVINO precision hint for artifacts on openvino (default: the device's own)")
    from sdopt.app.bench import DEFAULT_PEERS, PEER_GROUPS, PEERS

    b.add_argument("--peers", metavar="LIST",
                   help=f"comma-separated peers from {', '.join(PEERS)}; {', '.join(PEER_GROUPS)} (groups) or none. "
                        f"Default {','.join(DEFAULT_PEERS)}. A peer whose tool is not installed is left out with a "
                        f"note; other tools' builds are made once and cached under $SDOPT_CACHE/peers (openvino-int8 "
                        f"calibrates on 200 denoiser calls first)")
    b.add_argument("--steps", type=steps, help="sampling steps (default: the model's)")
    b.add_argument("--scheduler", choices=SCHEDULERS,
                   help="ddim, euler or dpmpp for the UNet models (default: the model's: ddim for the UNet models, "
                        "flow-euler for SD3 and FLUX)")
    _denoise_flag(b)
    b.add_argument("--height", type=image_side, help="image height in pixels (default: the model's)")
    b.add_argument("--width", type=image_side, help="image width in pixels (default: the model's)")
    b.add_argument("--runs", type=bounded(1, MAX_RUNS), default=5,
                   help=f"timed generations per target, 1 to {MAX_RUNS} (default 5)")
    b.add_argument("--warmup", type=bounded(1, MAX_WARMUP), default=1,
                   help=f"warm-up generations (2 steps each, same shapes) before timing, 1 to {MAX_WARMUP} (default 1)")
    from sdopt.app.bench import MEMORY_MODES

    b.add_argument("--memory", choices=MEMORY_MODES, default="default",
                   help="artifacts' memory mode: default, low (as run --low-memory) or both (a row each; default: "
                        "default)")
    b.add_argument("--vae-tile", type=vae_tile, default=0, metavar="PIXELS",
                   help="artifacts decode in tiles of this many pixels (default 0: whole)")
    b.add_argument("--threads", type=threads,
                   help="engine threads of every target, 1 to this machine's CPUs (default: the engines')")
    b.add_argument("--json", type=Path, help="write the results as JSON here (and the plot beside it as .png)")
    b.add_argument("--plot", type=Path, help="PNG bar plot (default: the --json path with .png)")
    b.add_argument("--wide", action="store_true",
                   help="every column (stages, warm-up, memory per stage, speedup over each peer): wider than 120")


def _denoise_flag(parser) -> None:
    parser.add_argument("--denoise", type=key_value, action="append", metavar="KEY=VALUE",
                        help="change the artifact's denoise strategy: strategy=plain (the full denoiser every step), "
                             "or a feature cache's schedule=uniform|nonuniform|adaptive, interval=N, threshold=X, "
                             "pow=X, center=N; repeatable")


def _denoise_overrides(args) -> dict:
    return dict(args.denoise or [])


def _vae_flags(parser) -> None:
    parser.add_argument("--vae", choices=("default", "full"), default="default",
                        help="full: decode with the model's own VAE decoder where a tiny-vae artifact has a tiny "
                             "one as its default")
    parser.add_argument("--vae-tile", type=vae_tile, default=0, metavar="PIXELS",
                        help="decode in overlapping tiles of this many pixels (a multiple of 4 x the VAE factor): "
                             "large images in little memory. Default 0: whole")


def _vae_options(args) -> dict:
    return {"vae": args.vae, "vae_tile": args.vae_tile}


def _sampling_flags(parser) -> None:
    parser.add_argument("--steps", type=steps, help=f"sampling steps, 1 to {MAX_STEPS} (default: the model's, "
                                                          f"20 for most)")
    parser.add_argument("--guidance", type=guidance, help=f"classifier-free guidance scale, -{MAX_GUIDANCE:g} to "
                                                         f"{MAX_GUIDANCE:g}; <= 1 disables guidance; for a "
                                                         f"guidance-distilled model (FLUX.1-dev) its embedded scale "
                                                       "(default: the model's, 7.5 for most)")
    parser.add_argument("--scheduler", choices=SCHEDULERS,
                        help="ddim, euler (Euler discrete), dpmpp (DPM-Solver++ 2M) or lcm (latent consistency, for "
                             "models distilled by the lcm pass) for the UNet models; flow-euler (flow-matching Euler) "
                             "for SD3 and FLUX. Default: the model's, ddim for most")


def cmd_eval(args) -> None:
    import json

    from tqdm.auto import tqdm

    from sdopt.app.api import evaluate
    from sdopt.app.evaluate import format_table
    from sdopt.contract.safe_io import read_prompts
    from sdopt.contract.schema import json_safe

    prompts = read_prompts(args.prompts, "--prompts") if args.prompts else None
    result = evaluate(args.artifact, reference=args.reference, model=args.model, prompts=prompts, seeds=args.seeds,
                      steps=args.steps, guidance=args.guidance, scheduler=args.scheduler, backend=args.backend,
                      grid=args.grid, clip=args.clip, denoise=_denoise_overrides(args),
                      progress=lambda it, label: tqdm(it, desc=label, unit="image"), **_vae_options(args),
                      **_backend_options(args))
    print(json.dumps(json_safe(result), allow_nan=False) if args.json else format_table(result))


def cmd_build(args) -> None:
    from sdopt.contract.artifact import check_build_destination, open_artifact, writing_build

    tensorrt_flags = [f for f in ("batch", "height", "width", "workspace", "timing_cache")
                      if getattr(args, f) is not None]
    tensorrt_flags += [f for f in ("static",) if getattr(args, f)]
    info = open_artifact(args.artifact, verify=False).pipeline
    check_build_destination(args.artifact)
    with writing_build(args.artifact):
        record = _build(args, info, tensorrt_flags)
    size = sum(f["bytes"] for f in record["files"].values())
    where = f"{args.artifact}/<graph>/openvino_model.xml" if args.format == "openvino" else f"{args.artifact}/tensorrt"
    _say(f"wrote {where} ({len(record['files'])} files, {size / 1e6:.0f} MB) in {record['seconds']:.1f} s")


def _build(args, info: dict, tensorrt_flags: list[str]) -> dict:
    from tqdm.auto import tqdm

    if args.format == "openvino":
        shape_flags = [f for f in ("height", "width") if getattr(args, f) is not None]
        others = [f for f in tensorrt_flags if f not in shape_flags + ["static"]]
        if others or (shape_flags and not args.static):
            flag = (others or shape_flags)[0]
            raise SdoptError(f"--{flag.replace('_', '-')} applies to --format tensorrt"
                             + ("" if others else " (or to --format openvino with --static)"))
        from sdopt.export.openvino import build

        static = _static_shape(args, info) if args.static else None
        record = build(args.artifact, static=static,
                       progress=lambda names: tqdm(names, desc="converting to OpenVINO IR", unit="graph"))
    else:
        from sdopt.export.tensorrt import build, config_from_flags

        config = config_from_flags(info, batch=args.batch, height=args.height, width=args.width, static=args.static,
                                   precision=args.float_precision, workspace=args.workspace,
                                   timing_cache=args.timing_cache)
        record = build(args.artifact, config, progress=lambda jobs: tqdm(jobs, desc="building", unit="engine"))
    return record


def _static_shape(args, info: dict) -> dict:
    """--height / --width of a static OpenVINO build: single values (default: the model's size); one image (the
    runtime's batch)."""
    from sdopt.contract.manifest import size_multiple

    shape = {"batch": 1, "height": info["height"], "width": info["width"]}
    for key in ("height", "width"):
        text = getattr(args, key)
        if text is None:
            continue
        if not text.isdigit() or int(text) <= 0:
            raise SdoptError(f"--{key} {text}: a static OpenVINO build takes one positive whole number")
        shape[key] = int(text)
    multiple = size_multiple(info)
    for key in ("height", "width"):
        if shape[key] % multiple:
            raise SdoptError(f"--{key} {shape[key]}: must be a multiple of {multiple}")
    return shape


def cmd_bench(args) -> None:
    from sdopt.app.api import bench
    from sdopt.app.bench import format_table

    result = bench(args.artifacts, model=args.model, backends=args.backends, peers=args.peers, steps=args.steps,
                   height=args.height, width=args.width, runs=args.runs, warmup=args.warmup, json=args.json,
                   plot=args.plot, device=args.device, precision=args.precision, scheduler=args.scheduler,
                   denoise=_denoise_overrides(args), memory=args.memory, vae_tile=args.vae_tile,
                   threads=args.threads, say=_say, table=lambda result: print(format_table(result, wide=args.wide)))
    failed = [r["name"] for r in result["rows"] if "error" in r]
    if failed:
        raise SdoptError(f"{len(failed)} of {len(result['rows'])} targets failed: " + ", ".join(failed))


def cmd_compress(args) -> None:
    from sdopt.app.api import compress_recipe
    from sdopt.compress.registry import registry
    from sdopt.recipes.recipe import Override, parse_set, resolve

    overrides, inserted = [], []
    for spec in registry().values():
        for shortcut in spec.shortcuts:
            value = getattr(args, _shortcut_dest(spec.name, shortcut))
            if value is None:
                continue
            if shortcut.key is None:  # each use adds a pass (action "append" gives a list)
                inserted += [(spec.name, shortcut.convert(v)) for v in (value if isinstance(value, list) else [value])]
            else:
                value = shortcut.convert(value) if shortcut.convert else value
                overrides.append(Override(spec.name, shortcut.key, value, shortcut.flag))
    overrides += [parse_set(text) for text in args.set or []]
    recipe = resolve(args.recipe, overrides, inserted)
    compress_recipe(args.model, recipe, args.out, command=sys.argv, external_data=args.external_data,
                    attention=args.attention, float16=args.float16, without_t5=args.without_t5, say=_say)


def _shortcut_dest(pass_name: str, shortcut) -> str:
    return f"pass_{pass_name}_{shortcut.flag.lstrip('-').replace('-', '_')}"


def cmd_run(args) -> None:
    from tqdm.auto import tqdm

    from sdopt.contract.limits import check_text
    from sdopt.contract.safe_io import check_output_file, check_outside
    from sdopt.runtime.pipeline import Pipeline

    check_output_file(args.out, "--out", ".png")
    check_outside(args.out, [args.artifact], "--out")
    check_text(args.prompt, "--prompt")
    check_text(args.negative_prompt, "--negative-prompt")
    image, mask = _input_images(args)
    options = _backend_options(args)
    pipe = Pipeline(args.artifact, args.backend, denoise_overrides=_denoise_overrides(args), **_vae_options(args),
                    **options)
    source = pipe.manifest["source"]
    pipe.check_guidance_request(args.guidance, args.negative_prompt)
    steps, guidance, scheduler = pipe.sampling(args.steps, args.guidance, args.scheduler)
    request = dict(seed=args.seed, steps=steps, guidance=guidance, scheduler=scheduler, height=args.height,
                   width=args.width, negative_prompt=args.negative_prompt, image=image, strength=args.strength,
                   mask=mask)
    pipe.check_request(prompt=args.prompt, **request)
    if source["random_weights"]:
        _say(f"note: {source['spec']} has random weights: the image is noise (speed measurements only)")
    result = pipe(args.prompt, progress=lambda it: tqdm(it, desc="sampling", unit="step"), **request)
    for note in pipe.notes:
        _say(note)
    result.save(args.out, {"prompt": args.prompt, "negative_prompt": args.negative_prompt, "seed": args.seed,
                           "steps": steps, "guidance": guidance, "scheduler": scheduler,
                           "recipe": pipe.manifest["recipe"]["name"], "model": source["spec"],
                           "random_weights": source["random_weights"], "generator": f"sdopt {_version()}",
                           **{k: getattr(args, k) for k in ("image", "strength", "mask") if getattr(args, k)}})
    _say(f"wrote {args.out}")


def _input_images(args):
    """--image (resized to --height/--width when given) and --mask (the same size as the image, resized with it),
    read before work."""
    from sdopt.contract.image_files import read_image, resize

    for flag in ("strength", "mask"):
        if getattr(args, flag) is not None and args.image is None:
            raise SdoptError(f"--{flag} needs --image")
    if args.image is None:
        return None, None
    image = read_image(args.image, "--image")
    mask = read_image(args.mask, "--mask", "L") if args.mask else None
    if mask is not None and mask.shape != image.shape[:2]:
        raise SdoptError(f"--mask {args.mask}: {mask.shape[1]}x{mask.shape[0]} pixels, the --image is "
                         f"{image.shape[1]}x{image.shape[0]}: a mask must have the image's size")
    size = (args.height or image.shape[0], args.width or image.shape[1])
    return resize(image, size), None if mask is None else resize(mask, size)


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def _version() -> str:
    from sdopt.contract.version import __version__

    return __version__


COMMANDS = {"compress": cmd_compress, "run": cmd_run, "eval": cmd_eval, "build": cmd_build, "bench": cmd_bench}


def main(argv: list[str] | None = None) -> int:
    handlers = interrupts.install()
    stderr, sys.stderr = sys.stderr, _LineTracker(sys.stderr)
    try:
        return _main(argv)
    finally:
        sys.stderr = stderr
        interrupts.restore(handlers)


def _main(argv: list[str] | None) -> int:
    words = sys.argv[1:] if argv is None else argv
    command = next((w for w in words if w in COMMANDS), None)
    try:
        try:
            args = build_parser(with_passes=command == "compress").parse_args(argv)
        except SystemExit as done:  # --help, --version, or a usage error already printed
            return done.code if isinstance(done.code, int) else 2
        COMMANDS[args.command](args)
    except ModuleNotFoundError as err:
        extra = _extra_for(err.name or "")
        if extra is None:
            raise
        if command == "build" and err.name == "onnx":  # a build needs onnx, not the rest of the compression extra
            extra = EXTRAS.get(args.format, extra)
        _last_line(f"sdopt {command}: error: this needs {extra[1]} (no module named '{err.name}'): "
                   f"pip install 'sdopt[{extra[0]}]'")
        return 2
    except SdoptError as err:
        if interrupts.interrupted():  # an interrupt that a library turned into its own error
            return _interrupted(argv)
        _last_line(f"sdopt {args.command}: error: {err}")
        return 2
    except KeyboardInterrupt:
        return _interrupted(argv)
    except OSError as err:  # what the system refused: a name too long, a full disk, a read-only folder
        if interrupts.interrupted():
            return _interrupted(argv)
        _last_line(f"{f'sdopt {command}' if command else 'sdopt'}: error: {os_error_text(err)}")
        return 2
    if interrupts.interrupted():  # raised where Python could only print it (a finalizer): still an interrupt
        return _interrupted(argv)
    return 0


EXTRAS = {  # top-level module -> (the extra that installs it, what it is for)
    **dict.fromkeys(("torch", "diffusers", "transformers", "onnx", "ml_dtypes", "modelopt", "peft", "accelerate",
                     "torch_pruning", "safetensors", "yaml", "matplotlib"),
                    ("compress", "the compression extra (torch, diffusers, onnx, modelopt)")),
    "openvino": ("openvino", "the openvino extra (openvino, onnx)"),
    **dict.fromkeys(("tensorrt", "cuda"), ("tensorrt", "the tensorrt extra (tensorrt, cuda-python, onnx)")),
}


def _extra_for(module: str) -> tuple[str, str] | None:
    return EXTRAS.get(module.split(".")[0])


class _LineTracker:
    """stderr, remembering whether the last text written ended its line (progress bars do not)."""

    def __init__(self, stream):
        self._stream, self.at_line_start = stream, True

    def write(self, text):
        if text:
            self.at_line_start = text.endswith("\n")
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _last_line(message: str) -> None:
    """The command's closing message, on a line of its own even after a progress bar it cut short."""
    if not getattr(sys.stderr, "at_line_start", True):
        sys.stderr.write("\n")
    print(message, file=sys.stderr)


def _interrupted(argv) -> int:
    command = next((a for a in (argv if argv is not None else sys.argv[1:]) if a in COMMANDS), None)
    _last_line(f"sdopt {command}: interrupted" if command else "sdopt: interrupted")
    return interrupts.exit_code()


if __name__ == "__main__":
    sys.exit(main())
