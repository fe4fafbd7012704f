"""One `sdopt bench` target, timed in a process of its own (so its peak memory is its own).

    python -m sdopt.app.bench_worker TARGET.json RESULT.json

Each stage is timed inside every end-to-end generation: the text encoder (the negative and the
positive prompt), every UNet call (one per step, batch 2 with guidance) and the VAE decode.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

from sdopt.app.memory import StagePeaks

STAGES = {"text_encoder": "text_encoder", "vae_decoder": "vae_decode"}  # by graph role; every denoiser role: "unet"


class StageClock:
    """Durations per stage within the current generation, and the peak resident memory of each stage."""

    def __init__(self):
        self.calls: dict[str, list[float]] = defaultdict(list)
        self.memory = StagePeaks()

    def timed(self, stage: str, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.calls[stage].append(time.perf_counter() - start)
        return wrapper

    def measured(self, stage: str, fn):
        """`fn` as one memory stage: the engine loads a low-memory pipeline makes inside it count too."""
        def wrapper(*args, **kwargs):
            with self.memory.stage(stage):
                return fn(*args, **kwargs)
        return wrapper

    def take(self) -> dict[str, list[float]]:
        calls, self.calls = dict(self.calls), defaultdict(list)
        return calls


def artifact_generator(target: dict, settings: dict, clock: StageClock, sizes: dict):
    from sdopt.contract.graphs import is_denoiser
    from sdopt.runtime.pipeline import Pipeline

    threads = {"threads": settings["threads"]} if settings.get("threads") else {}
    # files verified as they load, as `sdopt run` does: the load time (and, with --memory low, each
    # generation) includes hashing them
    pipe = Pipeline(Path(target["path"]), target["backend"], denoise_overrides=target.get("denoise"),
                    **target.get("options", {}), **threads)

    def timed(name, model):
        role = pipe.roles[name]
        model.run = clock.timed("unet" if is_denoiser(role) else STAGES.get(role, name), model.run)
        return model
    pipe.models.wrap(timed)
    pipe.encode_prompt = clock.measured("text_encoder", pipe.encode_prompt)
    pipe.strategy = dataclasses.replace(pipe.strategy, loop=clock.measured("unet", pipe.strategy.loop))
    pipe.decode = clock.measured("vae_decode", pipe.decode)

    def generate(steps: int):
        pipe(settings["prompt"], seed=0, steps=steps, guidance=settings["guidance"], height=settings["height"],
             width=settings["width"], scheduler=settings["scheduler"])
    return generate


def diffusers_generator(target: dict, settings: dict, clock: StageClock, sizes: dict):
    import torch

    from sdopt.sources.source import load_source

    if settings.get("threads"):
        torch.set_num_threads(settings["threads"])
    source = load_source(target["path"])
    pipe, denoiser = source.pipeline, source.denoiser
    use_scheduler(pipe, settings)
    modules = [m for m in (denoiser, pipe.vae.decoder, pipe.vae.post_quant_conv, *encoders_of(pipe)) if m is not None]
    sizes["size_bytes"] = sum(p.numel() * p.element_size() for m in modules for p in m.parameters())
    for module, stage in [(e, "text_encoder") for e in encoders_of(pipe)] + [(denoiser, "unet")]:
        module.forward = clock.measured(stage, clock.timed(stage, module.forward))
    pipe.vae.decode = clock.measured("vae_decode", clock.timed("vae_decode", pipe.vae.decode))

    def generate(steps: int):
        with torch.inference_mode():
            pipe(settings["prompt"], negative_prompt="", num_inference_steps=steps,
                 guidance_scale=settings["guidance"], height=settings["height"], width=settings["width"],
                 generator=torch.Generator().manual_seed(0), output_type="np")
    return generate


def use_scheduler(pipe, settings: dict) -> None:
    import diffusers

    from sdopt.contract.sampling import SCHEDULERS

    scheduler_class = getattr(diffusers, SCHEDULERS[settings.get("scheduler", "ddim")])
    pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)


def encoders_of(pipe) -> list:
    return [e for e in (getattr(pipe, f"text_encoder{s}", None) for s in ("", "_2", "_3")) if e is not None]


def optimum_generator(target: dict, settings: dict, clock: StageClock, sizes: dict):
    """Optimum's ONNX Runtime pipeline or optimum-intel's OpenVINO one, on the folder its own export wrote."""
    import torch

    threads = settings.get("threads")
    if target["kind"] == "optimum-ort":
        import onnxruntime
        from optimum.onnxruntime import ORTDiffusionPipeline as pipeline_class

        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        kwargs = {"session_options": options}
    else:
        from optimum.intel import OVDiffusionPipeline as pipeline_class

        kwargs = {"ov_config": {"INFERENCE_NUM_THREADS": str(threads)}} if threads else {}
    pipe = pipeline_class.from_pretrained(target["path"], **kwargs)
    use_scheduler(pipe, settings)
    denoiser = getattr(pipe, "unet", None) or pipe.transformer
    parts = [(e, "text_encoder") for e in encoders_of(pipe)] + [(denoiser, "unet"), (pipe.vae_decoder, "vae_decode")]
    for part, stage in parts:
        part.forward = clock.measured(stage, clock.timed(stage, part.forward))

    def generate(steps: int):
        pipe(settings["prompt"], negative_prompt="", num_inference_steps=steps, guidance_scale=settings["guidance"],
             height=settings["height"], width=settings["width"], generator=torch.Generator().manual_seed(0),
             output_type="np")
    return generate


def sdcpp_generator(target: dict, settings: dict, clock: StageClock, sizes: dict):
    """stable-diffusion.cpp, weights converted to the target's type as it loads the diffusers folder; it times
    only whole generations (no stage hooks), sampling with DDIM (trailing timesteps)."""
    import os

    from stable_diffusion_cpp import StableDiffusion

    threads = settings.get("threads") or os.cpu_count()  # its own default is half the CPUs
    sd = StableDiffusion(model_path=target["path"], wtype=target["options"]["weights"], n_threads=threads,
                         verbose=False)

    def generate(steps: int):
        sd.generate_image(settings["prompt"], negative_prompt="", width=settings["width"], height=settings["height"],
                          cfg_scale=settings["guidance"], sample_steps=steps, sample_method="ddim_trailing", seed=0)
    return generate


GENERATORS = {"artifact": artifact_generator, "diffusers": diffusers_generator, "optimum-ort": optimum_generator,
              "openvino-int8": optimum_generator, "sdcpp": sdcpp_generator}


def measure(target: dict, settings: dict) -> dict:
    from tqdm.auto import tqdm

    clock, sizes = StageClock(), {}
    start = time.perf_counter()
    with clock.memory.stage("load"):
        generate = GENERATORS[target["kind"]](target, settings, clock, sizes)
    load_s = time.perf_counter() - start
    load_peak = clock.memory.take().get("load")
    start = time.perf_counter()
    for _ in range(settings["warmup"]):
        generate(settings["warmup_steps"])
    warmup_s = time.perf_counter() - start
    clock.take()
    clock.memory.take()
    runs = []
    for _ in tqdm(range(settings["runs"]), desc=target["name"], unit="run", file=sys.stderr):
        start = time.perf_counter()
        generate(settings["steps"])
        total = time.perf_counter() - start
        runs.append({"end_to_end": total, **clock.take()})
    stage_peaks = {"load": load_peak, **clock.memory.take()} if clock.memory.per_stage else {}  # the timed runs'
    return {"load_s": load_s, "warmup_s": warmup_s, "runs": runs, **sizes, "peak_rss_bytes": clock.memory.peak(),
            "peak_rss_stage_bytes": stage_peaks}


def main(target_file: str, result_file: str) -> int:
    spec = json.loads(Path(target_file).read_text())
    try:
        result = measure(spec["target"], spec["settings"])
    except Exception as err:  # reported as this target's row; the other targets still run
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        result = {"error": f"{type(err).__name__}: {first}"}
    Path(result_file).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
