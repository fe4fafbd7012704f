"""Text-to-image from an artifact folder, without torch: tokenizers + ONNX graphs + numpy schedulers.

Mirrors diffusers' StableDiffusionPipeline / StableDiffusionXLPipeline with classifier-free
guidance, so an fp32 artifact reproduces the diffusers image for the same prompt, seed,
scheduler, steps and initial noise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from sdopt.artifact import load_manifest
from sdopt.errors import SdoptError

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
        self.manifest = load_manifest(self.folder, verify=verify)
        self.info = self.manifest["pipeline"]
        self.sdxl = self.info["kind"] == "sdxl"
        components = self.manifest["components"]
        for required in ("text_encoder", "unet", "vae_decoder"):
            if required not in components:
                raise SdoptError(f"artifact '{folder}': manifest lists no {required}")
        builds = {"openvino": self._openvino_ir, "tensorrt": self._tensorrt_engines}
        per_component = builds[backend](components) if backend in builds else {name: {} for name in components}
        self.models = {name: backends.load(backend, self.folder / name / "model.onnx",
                                           int8_weight_bits=components[name].get("int8_weight_bits"),
                                           **backend_options, **per_component[name])
                       for name in components}
        self.tokenizers = [Tokenizer.from_file(str(self.folder / "tokenizer" / "tokenizer.json"))]
        if self.sdxl:
            self.tokenizers.append(Tokenizer.from_file(str(self.folder / "tokenizer_2" / "tokenizer.json")))
        self.scheduler_config = json.loads((self.folder / "scheduler" / "scheduler_config.json").read_text())

    def _openvino_ir(self, components: dict) -> dict[str, dict]:
        """The OpenVINO build's IR per component; an int8 artifact must have one (its activation form)."""
        build = self.manifest.get("builds", {}).get("openvino")
        if build is None:
            if any("int8" in c.get("activation_format", []) for c in components.values()):
                raise SdoptError(f"artifact '{self.folder}' has int8 activations: build its OpenVINO form first "
                                 f"(sdopt build {self.folder} --format openvino)")
            return {name: {} for name in components}
        return {name: {"ir_path": self.folder / "openvino" / name / "model.xml"} for name in components}

    def _tensorrt_engines(self, components: dict) -> dict[str, dict]:
        build = self.manifest.get("builds", {}).get("tensorrt")
        if build is None:
            raise SdoptError(f"artifact '{self.folder}' has no TensorRT engines: "
                             f"sdopt build {self.folder} --format tensorrt (on the GPU that will run them)")
        return {name: {"engine_paths": [self.folder / e for e in build["components"][name]["engines"]],
                       "interval_per_timestep": build["components"][name].get("interval_per_timestep")}
                for name in components}

    def check_size(self, height: int, width: int) -> None:
        multiple = self.info["vae_scale_factor"] * self.info["latent_size_multiple"]
        for name, value in (("height", height), ("width", width)):
            if value < multiple or value % multiple:
                raise SdoptError(f"{name} {value} is not a positive multiple of {multiple} "
                                 f"(this model needs multiples of {multiple} pixels; and always of 8)")

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
        self.check_size(height, width)
        sched = make_scheduler(scheduler, self.scheduler_config)
        sched.set_timesteps(steps)
        guided = guidance > 1.0
        embeds, pooled = self.encode_prompt(prompt, negative_prompt, guided)
        batch = embeds.shape[0]
        feeds = {"encoder_hidden_states": embeds}
        if self.sdxl:
            time_ids = np.array([[height, width, 0, 0, height, width]], dtype=np.float32)  # original, crop, target
            feeds.update(text_embeds=pooled, time_ids=np.repeat(time_ids, batch, axis=0))

        noise = self.initial_noise(seed, height, width) if noise is None else noise.astype(np.float32)
        latents = noise * np.float32(sched.init_noise_sigma)
        for t in (progress(sched.timesteps) if progress else sched.timesteps):
            model_input = np.concatenate([latents] * batch) if guided else latents
            model_input = sched.scale_model_input(model_input, t)
            out = self.models["unet"].run({**feeds, "sample": model_input.astype(np.float32),
                                           "timestep": np.full(batch, t, dtype=np.float32)})["noise_pred"]
            if guided:
                uncond, cond = out[:1], out[1:]
                out = uncond + np.float32(guidance) * (cond - uncond)
            latents = sched.step(out, t, latents).astype(np.float32)
        image = self.decode(latents)
        return Generation((image * 255).round().astype(np.uint8), latents, image)

    def decode(self, latents: np.ndarray) -> np.ndarray:
        z = latents / np.float32(self.info["vae_scaling_factor"])
        if self.info.get("vae_shift_factor"):
            z = z + np.float32(self.info["vae_shift_factor"])
        image = self.models["vae_decoder"].run({"latent": z.astype(np.float32)})["image"]  # (1, 3, H, W)
        return np.clip(image[0].transpose(1, 2, 0) / 2 + 0.5, 0.0, 1.0)  # (H, W, 3)
