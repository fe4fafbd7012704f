"""`sdopt` command line: compress | run | eval | build | bench.

Every user error is one line on stderr and exit code 2; nothing half-written is left behind.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from . import interrupts
from .errors import SdoptError
from .limits import MAX_SEED, MAX_SIDE, MAX_STEPS

SCHEDULERS = ("ddim", "euler", "dpmpp")


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return value


def _image_side(text: str) -> int:
    value = _integer(text)
    if value <= 0 or value % 8:
        raise argparse.ArgumentTypeError(f"{value} is not a positive multiple of 8")
    if value > MAX_SIDE:
        raise argparse.ArgumentTypeError(f"{value} is over the limit of {MAX_SIDE} pixels")
    return value


def _positive(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def _steps(text: str) -> int:
    value = _positive(text)
    if value > MAX_STEPS:
        raise argparse.ArgumentTypeError(f"{value} is over the limit of {MAX_STEPS} steps")
    return value


def _seed(text: str) -> int:
    value = _integer(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"{value} is not in [0, {MAX_SEED}]")
    return value


def _unit_interval(text: str) -> float:
    value = _finite(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{value} is not in [0, 1]")
    return value


def _backend_flags(parser) -> None:
    from sdopt.runtime.backends import BACKENDS
    from sdopt.runtime.backends.openvino import PRECISIONS

    parser.add_argument("--backend", choices=BACKENDS, default="onnxruntime",
                        help="inference engine (default onnxruntime; openvino needs the openvino extra and, for int8 "
                             "artifacts, `sdopt build --format openvino`; tensorrt needs engines from "
                             "`sdopt build --format tensorrt`)")
    parser.add_argument("--device", help="OpenVINO device (default CPU)")
    parser.add_argument("--precision", choices=PRECISIONS,
                        help="OpenVINO inference precision hint (default: the device's own, bf16 on CPUs with AMX)")


def _backend_options(args) -> dict:
    options = {k: getattr(args, k) for k in ("device", "precision") if getattr(args, k) is not None}
    if options and args.backend != "openvino":
        raise SdoptError(f"--{next(iter(options))} applies to --backend openvino")
    return options


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (the full usage is one `--help` away), exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from .sources import DEFAULT_MODEL

    parser = _Parser(prog="sdopt", description="Compress, export and run Stable Diffusion models.")
    parser.add_argument("--version", action="version", version=f"sdopt {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    c = commands.add_parser("compress", help="apply a recipe's passes and export an artifact folder",
                            description="Load a model, apply the recipe's compression passes (torch), export "
                                        "every component to ONNX and write the artifact folder atomically.")
    c.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"model source: tiny-shapes, a local diffusers pipeline folder, or arch:sd15|sd21|sdxl|tiny "
                        f"(real architecture, random weights: speed only). Default: {DEFAULT_MODEL}")
    c.add_argument("--recipe", default="fp32",
                   help="built-in recipe (fp32: export only; int8: W8A8, fp8: E4M3 weights and activations, "
                        "w4a8: INT4 AWQ weights + INT8 activations; UNet quantization) or a YAML recipe file. "
                        "Default: fp32")
    c.add_argument("--out", required=True, type=Path, help="artifact folder to write (replaced if it is an artifact)")
    c.add_argument("--calib-prompts", type=Path,
                   help="text file, one calibration prompt per line (default: the model's built-in set)")
    c.add_argument("--calib-num-prompts", type=_positive, help="number of calibration prompts to use (default 4)")
    c.add_argument("--calib-steps", type=_steps,
                   help="sampling steps per calibration trajectory (default: the model's, 20 for most, "
                        "25 for tiny-shapes)")
    c.add_argument("--calib-size", type=_image_side,
                   help="calibration image size in pixels (default: the model's native size)")
    c.add_argument("--calib-sampling", choices=("all", "every", "normal", "random-step"),
                   help="which recorded steps calibrate: all (default), every k-th (--calib-every), normal "
                        "around 0.4 T (PTQ4DM), random-step (the inputs of one random step: the naive baseline)")
    c.add_argument("--calib-every", type=_positive, help="k for --calib-sampling every (default 2)")
    c.add_argument("--calib-aggregation", choices=("max", "percentile", "min-mean", "mean-max"),
                   help="per-step ranges -> one scale (default max)")
    c.add_argument("--calib-intervals", type=_steps,
                   help="K > 1: one activation scale per timestep interval, picked in the exported graph "
                        "from the timestep (default 1)")
    c.add_argument("--seed", type=_seed, help="seed of the calibration trajectories (default: the recipe's, 0)")
    c.add_argument("--skip", help="comma-separated substrings of UNet layer names kept in floating point "
                                  "(replaces the default: conv_in,conv_out,conv_shortcut,add_embedding)")
    c.add_argument("--time-embedding", choices=("float", "quantized"),
                   help="keep the time embedding and its per-block projections in float (default) or quantize them")
    c.add_argument("--smoothquant", type=_unit_interval, metavar="ALPHA",
                   help="SmoothQuant the linear layers with this alpha (int8)")
    c.add_argument("--split-shortcuts", action="store_true", default=None,
                   help="own activation scales for the two halves (upsampled, skip) of up-block ResNet inputs")
    c.add_argument("--auto-skip", type=_finite, metavar="PSNR",
                   help="sensitivity analysis: keep the layers that cost the most in float until the UNet "
                        "output reaches this PSNR (dB) vs float on calibration inputs; prints the table")
    c.add_argument("--external-data", action="store_true",
                   help="write every graph's weights to a model.onnx_data file beside it (default: only graphs over "
                        "the 2 GiB protobuf limit)")

    r = commands.add_parser("run", help="generate an image from an artifact (no torch needed)",
                            description="Text-to-image with classifier-free guidance from an artifact folder.")
    r.add_argument("artifact", type=Path, help="artifact folder written by `sdopt compress`")
    r.add_argument("--prompt", required=True, help="text prompt")
    r.add_argument("--negative-prompt", default="", help="negative prompt (default: empty)")
    r.add_argument("--out", required=True, type=Path, help="output PNG file")
    r.add_argument("--seed", type=_seed, default=0, help=f"seed of the initial noise, 0 to {MAX_SEED} (default 0)")
    _sampling_flags(r)
    r.add_argument("--height", type=_image_side, help="image height in pixels (default: the model's)")
    r.add_argument("--width", type=_image_side, help="image width in pixels (default: the model's)")
    _backend_flags(r)

    e = commands.add_parser("eval", help="compare an artifact's images with a reference's",
                            description="Generate the same prompts and seeds with the artifact and a reference "
                                        "(default: the fp32 export of the same source, made once and cached) and "
                                        "report PSNR, SSIM, latent cosine, images/s, and for tiny-shapes the "
                                        "prompt alignment.")
    e.add_argument("artifact", type=Path, help="artifact folder to evaluate")
    e.add_argument("--reference", type=Path, help="reference artifact (default: fp32 export of the same source)")
    e.add_argument("--prompts", type=Path, help="text file, one prompt per line (default: the model's held-out "
                                                "set for tiny-shapes, else a generic set)")
    e.add_argument("--seeds", type=_positive, help="seeds per prompt (default 1 with --prompts, 2 for the generic "
                                                   "set; tiny-shapes: 64 x N held-out pairs, default 256)")
    _sampling_flags(e)
    e.add_argument("--grid", type=Path, help="also write a PNG grid: reference and artifact images of the first prompts")
    e.add_argument("--clip", type=Path, help="local CLIP model folder (transformers CLIPModel and processor): "
                                             "adds the CLIP score of both image sets")
    e.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of a table")
    _backend_flags(e)  # for the artifact; the reference runs on ONNX Runtime

    d = commands.add_parser("build", help="build an artifact for a deployment backend (OpenVINO IR, TensorRT)",
                            description="Convert an artifact's ONNX graphs into a backend's own form, stored "
                                        "inside the artifact folder and listed in its manifest; `run`, `eval` "
                                        "and `bench` on that backend use it.")
    d.add_argument("artifact", type=Path, help="artifact folder written by `sdopt compress`")
    d.add_argument("--format", required=True, choices=("openvino", "tensorrt"),
                   help="openvino: IR with the uint8 activation form OpenVINO computes exactly; tensorrt: one "
                        "engine per component (needs TensorRT and an NVIDIA GPU)")
    d.add_argument("--batch", help="tensorrt: images per prompt, N or MIN:OPT:MAX (default 1; "
                                                "the UNet profile doubles it for guidance)")
    d.add_argument("--height", help="tensorrt: image height in pixels, N or MIN:OPT:MAX (default: the model's)")
    d.add_argument("--width", help="tensorrt: image width in pixels, N or MIN:OPT:MAX (default: the model's)")
    d.add_argument("--static", action="store_true", help="tensorrt: one fixed shape (the OPT values), for edge devices")
    d.add_argument("--float-precision", choices=("fp16", "fp32"), default="fp16",
                   help="tensorrt: precision of the layers the artifact keeps in float: fp16 (default) or fp32 "
                        "(strongly typed: every type from the ONNX graph and its Q/DQ)")
    d.add_argument("--workspace", type=_finite, metavar="GIB", help="tensorrt: workspace memory limit in GiB")
    d.add_argument("--timing-cache", type=Path, help="tensorrt: timing cache file to read and update "
                                                     "(default: kept inside the build)")

    b = commands.add_parser("bench", help="latency per stage, memory, load time and size, against peers",
                            description="Time text encoder, UNet per step, VAE decode and end-to-end guided "
                                        "generation of artifacts and of peers (diffusers eager fp32, the fp32 "
                                        "ONNX on ONNX Runtime and on OpenVINO), each in its own process; "
                                        "prints a table with speedups over each peer.")
    b.add_argument("artifacts", nargs="*", type=Path, help="artifact folders to measure (any number)")
    b.add_argument("--model", help="model source of the peers (default: the artifacts' source, else "
                                   f"{DEFAULT_MODEL})")
    b.add_argument("--backends", default="onnxruntime",
                   help="comma-separated backends to run each artifact on (default onnxruntime)")
    b.add_argument("--device", help="OpenVINO device for artifacts on openvino (default CPU)")
    from sdopt.runtime.backends.openvino import PRECISIONS

    b.add_argument("--precision", choices=PRECISIONS,
                   help="OpenVINO precision hint for artifacts on openvino (default: the device's own)")
    b.add_argument("--peers", help="comma-separated peers, or none (default diffusers,ort-fp32,openvino; "
                                   "openvino only where the openvino package is installed)")
    b.add_argument("--steps", type=_steps, help="sampling steps (default: the model's)")
    b.add_argument("--height", type=_image_side, help="image height in pixels (default: the model's)")
    b.add_argument("--width", type=_image_side, help="image width in pixels (default: the model's)")
    b.add_argument("--runs", type=_positive, default=5, help="timed generations per target (default 5)")
    b.add_argument("--warmup", type=_positive, default=1,
                   help="warm-up generations (2 steps each, same shapes) before timing (default 1)")
    b.add_argument("--json", type=Path, help="write the results as JSON here (and the plot beside it as .png)")
    b.add_argument("--plot", type=Path, help="PNG bar plot (default: the --json path with .png)")
    return parser


def _sampling_flags(parser) -> None:
    parser.add_argument("--steps", type=_steps, help=f"sampling steps, 1 to {MAX_STEPS} (default: the model's, "
                                                          f"20 for most)")
    parser.add_argument("--guidance", type=_finite, help="classifier-free guidance scale; <= 1 disables guidance "
                                                       "(default: the model's, 7.5 for most)")
    parser.add_argument("--scheduler", choices=SCHEDULERS, default="ddim",
                        help="ddim, euler (Euler discrete) or dpmpp (DPM-Solver++ 2M). Default: ddim")


def cmd_eval(args) -> None:
    import json

    from tqdm.auto import tqdm

    from .artifact import open_artifact
    from .evaluate import EvalSettings, default_pairs, evaluate, format_table
    from .safe_io import check_output_file
    from .schema import json_safe

    manifest = open_artifact(args.artifact, verify=False).manifest
    prompts = _read_prompts(args.prompts, "--prompts") if args.prompts else None
    pairs = default_pairs(manifest, prompts, args.seeds)
    info = manifest["pipeline"]
    settings = EvalSettings(args.steps or info["steps"], _guidance(args, info), args.scheduler)
    if args.grid is not None:
        check_output_file(args.grid, "--grid", ".png")
    if args.clip is not None and not (args.clip / "config.json").is_file():
        raise SdoptError(f"--clip {args.clip}: not a model folder (no config.json)")
    if args.reference is not None:
        open_artifact(args.reference, verify=False)
    result = evaluate(args.artifact, args.reference, pairs, settings,
                      progress=lambda it: tqdm(it, desc="generating", unit="image"), grid=args.grid, clip=args.clip,
                      backend=args.backend, backend_options=_backend_options(args))
    print(json.dumps(json_safe(result), allow_nan=False) if args.json else format_table(result))


def cmd_build(args) -> None:
    from tqdm.auto import tqdm

    from .artifact import open_artifact

    tensorrt_flags = [f for f in ("batch", "height", "width", "workspace", "timing_cache")
                      if getattr(args, f) is not None]
    tensorrt_flags += [f for f in ("static",) if getattr(args, f)]
    info = open_artifact(args.artifact, verify=False).pipeline
    if args.format == "openvino":
        if tensorrt_flags:
            raise SdoptError(f"--{tensorrt_flags[0].replace('_', '-')} applies to --format tensorrt")
        from sdopt.export.openvino import build

        record = build(args.artifact, progress=lambda names: tqdm(names, desc="converting", unit="graph"))
    else:
        from sdopt.export.tensorrt import TensorrtConfig, build, parse_range

        multiple = info["vae_scale_factor"] * info["latent_size_multiple"]
        if args.workspace is not None and args.workspace <= 0:
            raise SdoptError(f"--workspace {args.workspace}: must be a positive number of GiB")
        if args.timing_cache is not None:
            from .safe_io import check_output_file

            check_output_file(args.timing_cache, "--timing-cache")
        config = TensorrtConfig(batch=parse_range(args.batch or "1"),
                                height=parse_range(args.height, multiple) if args.height else None,
                                width=parse_range(args.width, multiple) if args.width else None,
                                static=args.static, precision=args.float_precision, workspace_gib=args.workspace,
                                timing_cache=args.timing_cache)
        record = build(args.artifact, config, progress=lambda jobs: tqdm(jobs, desc="building", unit="engine"))
    size = sum(f["bytes"] for f in record["files"].values())
    _say(f"wrote {args.artifact}/{args.format} ({len(record['files'])} files, {size / 1e6:.0f} MB) "
         f"in {record['seconds']:.1f} s")


def cmd_bench(args) -> None:
    import importlib.util

    from sdopt.runtime.backends import BACKENDS

    from .artifact import open_artifact
    from .bench import PEERS, Settings, bench, check_peers, format_table, plan_targets, write_json, write_plot
    from .evaluate import default_pairs, fp32_export
    from .limits import check_image_size
    from .safe_io import check_output_file
    from .sources import DEFAULT_MODEL

    peers = check_peers(args.peers or ",".join(PEERS))
    if args.peers is None and "openvino" in peers and importlib.util.find_spec("openvino") is None:
        peers.remove("openvino")
        _say("note: no openvino package: the openvino peer is left out (pip install 'sdopt[openvino]')")
    backends = [b for b in args.backends.split(",") if b]
    for backend in backends:
        if backend not in BACKENDS:
            raise SdoptError(f"--backends: unknown backend '{backend}'; choose from " + ", ".join(BACKENDS))
    if not args.artifacts and not peers:
        raise SdoptError("nothing to measure: give artifact folders or --peers")
    plot = args.plot or (args.json.with_suffix(".png") if args.json else None)
    if args.json is not None:
        check_output_file(args.json, "--json")
    if plot is not None:
        check_output_file(plot, "--plot", ".png")
    # verified here once: the timed processes open the same files without hashing them again
    manifests = [open_artifact(folder).manifest for folder in args.artifacts]
    specs = {m["source"]["spec"] for m in manifests}
    if len(specs) > 1 or (args.model and specs and specs != {args.model}):
        raise SdoptError("the artifacts and --model come from different sources: " + ", ".join(
            sorted(specs | {args.model} - {None})))
    spec = args.model or (specs.pop() if specs else DEFAULT_MODEL)
    options = {k: getattr(args, k) for k in ("device", "precision") if getattr(args, k) is not None}
    if options and "openvino" not in backends:
        raise SdoptError(f"--{next(iter(options))} applies to artifacts on --backends openvino")

    manifest = manifests[0] if manifests else open_artifact(fp32_export(spec), verify=False).manifest
    info = manifest["pipeline"]
    height, width = args.height or info["height"], args.width or info["width"]
    check_image_size(height, width, info["vae_scale_factor"] * info["latent_size_multiple"])
    settings = Settings(prompt=default_pairs(manifest, None, 1)[0][0], steps=args.steps or info["steps"],
                        height=height, width=width,
                        guidance=max(info["guidance"], 1.5),  # always guided: the batch-2 UNet
                        runs=args.runs, warmup=args.warmup)
    targets = plan_targets(args.artifacts, backends, peers, spec, options)
    random_weights = spec.startswith("arch:") or any(m["source"]["random_weights"] for m in manifests)
    if random_weights:
        _say(f"note: {spec} has random weights: speed measurements only")
    result = bench(targets, settings, spec, random_weights)
    print(format_table(result))
    if args.json:
        write_json(result, args.json)
        _say(f"wrote {args.json}")
    if plot:
        write_plot(result, plot)
        _say(f"wrote {plot}")
    failed = [r["name"] for r in result["rows"] if "error" in r]
    if failed:
        raise SdoptError(f"{len(failed)} of {len(result['rows'])} targets failed: " + ", ".join(failed))


def _guidance(args, info: dict) -> float:
    return args.guidance if args.guidance is not None else info["guidance"]


def cmd_compress(args) -> None:
    from .artifact import check_writable_destination
    from .recipe import resolve

    overrides = {}
    if args.calib_prompts is not None:
        overrides["prompts"] = _read_prompts(args.calib_prompts, "--calib-prompts")
    for flag, key in (("calib_num_prompts", "num_prompts"), ("calib_steps", "steps"), ("calib_size", "size"),
                      ("calib_sampling", "sampling"), ("calib_every", "every"),
                      ("calib_aggregation", "aggregation"), ("calib_intervals", "intervals")):
        if getattr(args, flag) is not None:
            overrides[key] = getattr(args, flag)
    if args.seed is not None:
        overrides["seed"] = args.seed
    quantize = {key: getattr(args, key) for key in ("time_embedding", "smoothquant", "split_shortcuts", "auto_skip")
                if getattr(args, key) is not None}
    if args.skip is not None:
        quantize["skip"] = tuple(p for p in args.skip.split(",") if p)
    recipe = resolve(args.recipe, overrides, quantize)
    if quantize and not any(name == "quantize" for name, _ in recipe.passes):
        raise SdoptError(f"--{next(iter(quantize)).replace('_', '-')} needs a quantizing recipe (int8, fp8, w4a8)")
    check_writable_destination(args.out)

    from sdopt.export.writer import write_artifact

    from .recipe import apply, check
    from .sources import load_source

    start = time.perf_counter()
    source = load_source(args.model)
    check(source, recipe)
    if source.random_weights:
        _say(f"note: {args.model} has random weights: its artifact is for speed measurements only")
    source = apply(source, recipe)
    out = write_artifact(source, recipe.to_dict(), args.out, command=sys.argv, external_data=args.external_data)
    _say(f"wrote {out} ({recipe.name}, {source.label}) in {time.perf_counter() - start:.1f} s")


def cmd_run(args) -> None:
    from PIL import Image, PngImagePlugin
    from tqdm.auto import tqdm

    from sdopt.runtime.pipeline import Pipeline

    from .limits import check_text
    from .safe_io import check_output_file, write_atomically

    check_output_file(args.out, "--out", ".png")
    check_text(args.prompt, "--prompt")
    check_text(args.negative_prompt, "--negative-prompt")
    options = _backend_options(args)
    pipe = Pipeline(args.artifact, args.backend, **options)
    source = pipe.manifest["source"]
    steps, guidance = args.steps or pipe.info["steps"], _guidance(args, pipe.info)
    request = dict(seed=args.seed, steps=steps, guidance=guidance, scheduler=args.scheduler, height=args.height,
                   width=args.width, negative_prompt=args.negative_prompt)
    pipe.check_request(prompt=args.prompt, **request)
    if source["random_weights"]:
        _say(f"note: {source['spec']} has random weights: the image is noise (speed measurements only)")
    result = pipe(args.prompt, progress=lambda it: tqdm(it, desc="sampling", unit="step"), **request)
    meta = PngImagePlugin.PngInfo()
    for key, value in {"prompt": args.prompt, "negative_prompt": args.negative_prompt, "seed": args.seed,
                       "steps": steps, "guidance": guidance, "scheduler": args.scheduler,
                       "recipe": pipe.manifest["recipe"]["name"], "model": source["spec"],
                       "random_weights": source["random_weights"], "generator": f"sdopt {_version()}"}.items():
        meta.add_text(key, str(value))
    write_atomically(args.out, lambda tmp: Image.fromarray(result.image).save(tmp, format="PNG", pnginfo=meta))
    _say(f"wrote {args.out}")


def _read_prompts(path: Path, flag: str) -> list[str]:
    from .limits import check_text
    from .safe_io import read_text

    prompts = [line.strip() for line in read_text(path, flag).splitlines() if line.strip()]
    if not prompts:
        raise SdoptError(f"{flag} {path}: no prompts in the file")
    for i, prompt in enumerate(prompts):
        check_text(prompt, f"{flag} {path}, prompt {i + 1}")
    return prompts


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def _version() -> str:
    from . import __version__

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
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as done:  # --help, --version, or a usage error already printed
            return done.code if isinstance(done.code, int) else 2
        COMMANDS[args.command](args)
    except SdoptError as err:
        if interrupts.interrupted():  # an interrupt that a library turned into its own error
            return _interrupted(argv)
        _last_line(f"sdopt {args.command}: error: {err}")
        return 2
    except KeyboardInterrupt:
        return _interrupted(argv)
    if interrupts.interrupted():  # raised where Python could only print it (a finalizer): still an interrupt
        return _interrupted(argv)
    return 0


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
