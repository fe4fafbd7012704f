"""Text-to-image from an artifact folder, without torch: tokenizers + ONNX graphs + numpy schedulers.

Mirrors diffusers' StableDiffusionPipeline / StableDiffusionXLPipeline with classifier-free
guidance, so an fp32 artifact reproduces the diffusers image for the same prompt, seed,
scheduler, steps and initial noise.

Every request is checked before any work (`check_request`), and a component that produces NaN or
Inf stops the generation with an error naming the step and the component: no image is made from
non-finite numbers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from sdopt import interrupts
from sdopt.artifact import open_artifact
from sdopt.errors import SdoptError
from sdopt.limits import MAX_STEPS, check_guidance, check_image_size, check_seed, check_text

from . import backends
from .schedulers import make_scheduler


@dataclass
class Generation:
    image: np.ndarray  # (H, W, 3) uint8
    latents: np.ndarray  # final latents, (1, C, h, w) float32
    image_float: np.ndarray  # (H, W, 3) float32 in [0, 1], before rounding to uint8


class Pipeline:
    def __init__(self, folder: Path, backend: str = "onnxruntime", verify: bool = True, **backend_options):
        self.folder = Path(folder)
        self.artifact = open_artifact(self.folder, verify=verify)
        self.manifest = self.artifact.manifest
        self.info = self.manifest["pipeline"]
        self.sdxl = self.info["kind"] == "sdxl"
        components = self.manifest["components"]
        builds = {"openvino": self._openvino_ir, "tensorrt": self._tensorrt_engines}
        per_component = builds[backend](components) if backend in builds else {name: {} for name in components}
        self.models = {}
        for name, component in components.items():
            io_names = ([i["name"] for i in component["inputs"]], [o["name"] for o in component["outputs"]])
            model = backends.load(backend, self.artifact.path(f"{name}/model.onnx"), io_names=io_names,
                                  int8_weight_bits=component.get("int8_weight_bits"),
                                  **backend_options, **per_component[name])
            _check_signature(name, component, model)
            self.models[name] = model
        self.tokenizers = [self._tokenizer("tokenizer")] + ([self._tokenizer("tokenizer_2")] if self.sdxl else [])
        self.scheduler_config = self._scheduler_config()

    def _openvino_ir(self, components: dict) -> dict[str, dict]:
        """The OpenVINO build's IR per component; an int8 artifact must have one (its activation form)."""
        build = self.artifact.build("openvino")
        if build is None:
            if any("int8" in c.get("activation_format", []) for c in components.values()):
                raise SdoptError(f"artifact '{self.folder}' has int8 activations: build its OpenVINO form first "
                                 f"(sdopt build {self.folder} --format openvino)")
            return {name: {} for name in components}
        return {name: {"ir_path": self.artifact.path(f"openvino/{name}/model.xml")} for name in components}

    def _tensorrt_engines(self, components: dict) -> dict[str, dict]:
        build = self.artifact.build("tensorrt")
        if build is None:
            raise SdoptError(f"artifact '{self.folder}' has no TensorRT engines: "
                             f"sdopt build {self.folder} --format tensorrt (on the GPU that will run them)")
        missing = [name for name in components if name not in build["components"]]
        if missing:
            raise SdoptError(f"artifact '{self.folder}': its TensorRT build has no engine for {missing[0]}")
        return {name: {"engine_paths": [self.artifact.path(e) for e in build["components"][name]["engines"]],
                       "interval_per_timestep": build["components"][name].get("interval_per_timestep")}
                for name in components}

    def _tokenizer(self, folder: str) -> Tokenizer:
        path = self.artifact.path(f"{folder}/tokenizer.json")
        try:
            tokenizer = Tokenizer.from_file(str(path))
            length = len(tokenizer.encode("a").ids)
        except Exception as err:  # tokenizers raises plain Exceptions for malformed files
            raise SdoptError(f"{path}: not a usable tokenizer ({str(err).splitlines()[0] if str(err) else err})") \
                from None
        if length != self.info["max_length"]:
            raise SdoptError(f"{path}: pads prompts to {length} tokens, the text encoder expects "
                             f"{self.info['max_length']}")
        return tokenizer

    def _scheduler_config(self) -> dict:
        path = self.artifact.path("scheduler/scheduler_config.json")
        try:
            config = json.loads(path.read_bytes().decode("utf-8"))  # diffusers writes -Infinity for some options
        except (UnicodeDecodeError, ValueError, RecursionError) as err:
            raise SdoptError(f"{path}: not a JSON scheduler config ({err})") from None
        if not isinstance(config, dict):
            raise SdoptError(f"{path}: not a mapping of scheduler options")
        return config

    def scheduler(self, name: str, steps: int):
        """A numpy scheduler with its timesteps set, or one error saying why this config cannot give one."""
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
            raise SdoptError(f"steps {steps!r} must be an integer in [1, {MAX_STEPS}]")
        try:
            sched = make_scheduler(name, self.scheduler_config)
            sched.set_timesteps(steps)
        except (ValueError, TypeError, ArithmeticError) as err:
            raise SdoptError(f"scheduler {name} of '{self.folder}': {err}") from None
        timesteps = np.asarray(sched.timesteps)
        if timesteps.min() < 0 or timesteps.max() >= sched.num_train_timesteps:
            raise SdoptError(f"scheduler {name} with {steps} steps reaches timestep {timesteps.max()}, outside the "
                             f"model's {sched.num_train_timesteps} training timesteps (with its steps_offset "
                             f"{sched.config.get('steps_offset', 0)}); use fewer steps")
        return sched

    def size_multiple(self) -> int:
        return self.info["vae_scale_factor"] * self.info["latent_size_multiple"]

    def check_size(self, height: int, width: int) -> None:
        check_image_size(height, width, self.size_multiple())

    def check_request(self, *, steps: int, guidance: float, scheduler: str, height: int | None = None,
                      width: int | None = None, seed: int = 0, prompt: str = "", negative_prompt: str = ""):
        """Everything about a generation that can be wrong, checked before any work; returns the scheduler."""
        self.check_size(height or self.info["height"], width or self.info["width"])
        check_guidance(guidance)
        check_seed(seed)
        check_text(prompt, "the prompt")
        check_text(negative_prompt, "the negative prompt")
        return self.scheduler(scheduler, steps)

    def encode_prompt(self, prompt: str, negative_prompt: str, guidance: bool):
        """Returns (embeddings, pooled or None), batch [negative, positive] when guided."""
        positive = self._encode(prompt)
        if not guidance:
            return positive
        if self.sdxl and self.info.get("force_zeros_for_empty_prompt") and not negative_prompt:
            negative = tuple(None if p is None else np.zeros_like(p) for p in positive)
        else:
            negative = self._encode(negative_prompt)
        return tuple(None if p is None else np.concatenate([n, p]) for n, p in zip(negative, positive))

    def _encode(self, text: str):
        hidden, pooled = [], None
        for i, tokenizer in enumerate(self.tokenizers):
            ids = np.array([tokenizer.encode(text).ids], dtype=np.int64)  # (1, 77)
            name = "text_encoder" if i == 0 else f"text_encoder_{i + 1}"
            out = self.models[name].run({"input_ids": ids})
            _require_finite(out, f"the {name}", "encoding the prompt")
            hidden.append(out["hidden_states"])
            pooled = out.get("text_embeds", pooled)
        return np.concatenate(hidden, axis=-1), pooled  # (1, 77, D), (1, P) or None

    def initial_noise(self, seed: int, height: int, width: int) -> np.ndarray:
        f = self.info["vae_scale_factor"]
        rng = np.random.default_rng(seed)
        return rng.standard_normal((1, self.info["latent_channels"], height // f, width // f)).astype(np.float32)

    def __call__(self, prompt: str, *, seed: int = 0, steps: int = 20, guidance: float = 7.5,
                 scheduler: str = "ddim", height: int | None = None, width: int | None = None,
                 negative_prompt: str = "", noise: np.ndarray | None = None, progress=None) -> Generation:
        height = height or self.info["height"]
        width = width or self.info["width"]
        sched = self.check_request(steps=steps, guidance=guidance, scheduler=scheduler, height=height, width=width,
                                   seed=seed, prompt=prompt, negative_prompt=negative_prompt)
        guided = guidance > 1.0
        embeds, pooled = self.encode_prompt(prompt, negative_prompt, guided)
        batch = embeds.shape[0]
        feeds = {"encoder_hidden_states": embeds}
        if self.sdxl:
            time_ids = np.array([[height, width, 0, 0, height, width]], dtype=np.float32)  # original, crop, target
            feeds.update(text_embeds=pooled, time_ids=np.repeat(time_ids, batch, axis=0))

        noise = self.initial_noise(seed, height, width) if noise is None else noise.astype(np.float32)
        latents = noise * np.float32(sched.init_noise_sigma)
        n = len(sched.timesteps)
        for i, t in enumerate(progress(sched.timesteps) if progress else sched.timesteps):
            interrupts.raise_if_interrupted()
            where = f"step {i + 1}/{n} (timestep {t})"
            model_input = np.concatenate([latents] * batch) if guided else latents
            model_input = sched.scale_model_input(model_input, t)
            out = self.models["unet"].run({**feeds, "sample": model_input.astype(np.float32),
                                           "timestep": np.full(batch, t, dtype=np.float32)})
            _require_finite(out, "the unet", where)
            out = out["noise_pred"]
            if guided:
                uncond, cond = out[:1], out[1:]
                out = uncond + np.float32(guidance) * (cond - uncond)
                _require_finite({"guided": out}, f"classifier-free guidance at scale {guidance}", where)
            latents = sched.step(out, t, latents).astype(np.float32)
            _require_finite({"latents": latents}, f"the {scheduler} scheduler", where)
        image = self.decode(latents)
        return Generation((image * 255).round().astype(np.uint8), latents, image)

    def decode(self, latents: np.ndarray) -> np.ndarray:
        z = latents / np.float32(self.info["vae_scaling_factor"])
        if self.info.get("vae_shift_factor"):
            z = z + np.float32(self.info["vae_shift_factor"])
        out = self.models["vae_decoder"].run({"latent": z.astype(np.float32)})
        _require_finite(out, "the vae_decoder", "decoding the latents")
        image = out["image"]  # (1, 3, H, W)
        return np.clip(image[0].transpose(1, 2, 0) / 2 + 0.5, 0.0, 1.0)  # (H, W, 3)


def _require_finite(outputs: dict, component: str, where: str) -> None:
    for name, value in outputs.items():
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            raise SdoptError(f"{where}: {component} produced non-finite values (NaN or Inf) in {name}; "
                             f"no image was made")


def _check_signature(name: str, component: dict, model) -> None:
    """The graph the backend loaded has the inputs and outputs the manifest lists (names, dtypes, ranks)."""
    for kind, listed, actual in (("inputs", component["inputs"], model.inputs),
                                 ("outputs", component["outputs"], model.outputs)):
        expected = {io["name"]: (io["dtype"], len(io["shape"])) for io in listed}
        if set(expected) != set(actual):
            raise SdoptError(f"{name}: the graph's {kind} ({', '.join(sorted(actual))}) differ from the manifest's "
                             f"({', '.join(sorted(expected))})")
        for io, (dtype, rank) in expected.items():
            got_dtype, got_rank = actual[io]
            if got_dtype != dtype or (got_rank >= 0 and got_rank != rank):
                raise SdoptError(f"{name}: {kind[:-1]} {io} is {got_dtype} of rank {got_rank} in the graph, "
                                 f"{dtype} of rank {rank} in the manifest")
