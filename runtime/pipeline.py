"""Text-to-image, img2img and inpainting from an artifact folder, without torch: tokenizers + ONNX graphs
+ numpy schedulers.

    encode the prompt -> prepare latents (noise, or a noised image) -> denoise (the manifest's strategy,
    the denoiser behind classifier-free guidance) -> decode

Graphs are loaded by their role in the manifest (text_encoder, denoiser, vae_decoder, vae_encoder). An fp32
artifact reproduces diffusers' StableDiffusion(XL|Img2Img|Inpaint)Pipeline for the same prompt, noise,
scheduler and steps (diffusers samples the VAE posterior where this runtime takes its mean).

Every request is checked before any work (`check_request`), and a component that produces NaN or Inf
stops the generation with an error naming the step and the component: no image is made from
non-finite numbers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from sdopt.contract import denoiser_spec
from sdopt.contract.artifact import open_artifact
from sdopt.contract.errors import SdoptError
from sdopt.contract.graphs import (
    DENOISER,
    IMAGE_IO,
    LATENT_INPUT,
    POOLED_OUTPUTS,
    VAE_DECODER,
    VAE_DECODER_FULL,
    VAE_ENCODER,
    io_name,
    is_denoiser,
    prompt_output,
)
from sdopt.contract.limits import MAX_MANIFEST_BYTES as MAX_SUPPORT_FILE_BYTES
from sdopt.contract.limits import (
    MAX_STEPS,
    check_guidance,
    check_image_size,
    check_seed,
    check_text,
    check_threads,
)
from sdopt.contract.manifest import (
    GRAPH_FOLDER_BUILDS,
    check_vae_tile,
    default_sampling,
    size_multiple,
)
from sdopt.contract.sampling import check_scheduler_family, image_position_ids

from . import backends, denoise, images
from .components import Components, available_memory
from .guidance import choose as choose_guidance
from .schedulers import make_scheduler
from .strategies import require_finite
from .tiling import decode_tiled


@dataclass
class Generation:
    image: np.ndarray  # (H, W, 3) uint8
    latents: np.ndarray  # final latents, (1, C, h, w) float32
    image_float: np.ndarray  # (H, W, 3) float32 in [0, 1], before rounding to uint8
    stats: dict  # what the denoise strategy reports, e.g. {"full": 7, "shallow": 13} for feature caching

    def save(self, path, metadata: dict | None = None) -> Path:
        """The image as a PNG at `path` (written whole or not at all), `metadata` as its text chunks."""
        from PIL import Image, PngImagePlugin

        from sdopt.contract.safe_io import check_output_file, write_atomically

        path = Path(path)
        check_output_file(path, "the output", ".png")
        info = PngImagePlugin.PngInfo()
        for key, value in (metadata or {}).items():
            info.add_text(key, str(value))
        write_atomically(path, lambda tmp: Image.fromarray(self.image).save(tmp, format="PNG", pnginfo=info))
        return path


class Pipeline:
    def __init__(self, folder: Path, backend: str = "onnxruntime", verify: bool = True,
                 denoise_overrides: dict | None = None, vae: str = "default", vae_tile: int = 0,
                 low_memory: bool = False, **backend_options):
        """`denoise_overrides`: changes to the manifest's denoise strategy and parameters (`--denoise`). `vae`:
        "full" decodes with the model's own decoder where a tiny one is the default; `vae_tile`: decode in
        tiles of this many pixels (0: whole). `low_memory`: each graph is loaded when its stage starts and
        released when it ends (`components.Components`); a graph's signature is then checked when it is loaded."""
        self.folder = Path(folder)
        self.static = None  # {batch, height, width} of a static build: the one generation its graphs take
        self.artifact = open_artifact(self.folder, verify=False)  # each file is verified as it is read (below)
        self.verify = verify
        self.manifest = self.artifact.manifest
        self.info = self.manifest["pipeline"]
        check_vae_tile(vae_tile, self.info)
        check_threads(backend_options.get("threads"))
        self.sdxl = self.info["kind"] == "sdxl"
        self.strategy_name, self.strategy, self.denoise_params = denoise.strategy(self.info["denoise"],
                                                                                   denoise_overrides)
        components = self.manifest["components"]
        self.roles = {name: c["role"] for name, c in components.items()}
        for role in self.strategy.roles:
            if list(self.roles.values()).count(role) != 1:
                raise SdoptError(f"artifact '{self.folder}': its denoise strategy needs one graph of role '{role}'")
        for role, kind, io in self.strategy.io:
            if io not in [i["name"] for i in components[self._named(role)][kind]]:
                raise SdoptError(f"artifact '{self.folder}': its denoise strategy needs {kind[:-1]} {io} of the "
                                 f"{self._named(role)} graph")
        builds = {"openvino": self._openvino_ir, "tensorrt": self._tensorrt_engines}
        per_component = builds[backend](components) if backend in builds else {name: {} for name in components}

        def load(name: str):
            component = components[name]
            io_names = ([i["name"] for i in component["inputs"]], [o["name"] for o in component["outputs"]])
            engine_files, options = self._engine_files(name, backend, per_component[name]), {}
            if self.verify and backend == "onnxruntime" and engine_files == [f"{name}/model.onnx"]:
                options["model_bytes"] = self.artifact.read_verified(engine_files[0])  # what was checked runs
            elif self.verify:
                self.artifact.verify(*engine_files)
            model = backends.load(backend, self.artifact.path(f"{name}/model.onnx"), io_names=io_names,
                                  int8_weight_bits=component.get("int8_weight_bits"),
                                  **backend_options, **per_component[name], **options)
            _check_signature(name, component, model)
            return model
        self.models = Components(list(components), load, low_memory)
        self.scheduler_config = self._scheduler_config()
        self.spec = denoiser_spec.read(self.manifest, self.scheduler_config)
        # (graph, its tokenizer, the output the denoiser reads, how it combines): in the spec's order
        self.text_encoders = [(e["graph"], self._tokenizer(e["tokenizer"], e["max_length"]),
                               _encoder_output(e["output"], _names(components[e["graph"]]["outputs"])), e["combine"])
                              for e in self.spec["text_encoders"]]
        self.max_lengths = {e["graph"]: e["max_length"] for e in self.spec["text_encoders"]}
        self._check_text_width(components)
        self.truncated: list[str] = []  # text encoders a prompt was cut to fit
        self.denoiser = self._named(DENOISER)
        self.vae_decoder, self.vae_encoder = self._named(VAE_DECODER), self._named(VAE_ENCODER)
        # the VAE graphs' I/O names as schema 2 or 3 spells them: decoders (latent in, image out), the encoder's input
        self.vae_io = {name: (io_name(_names(components[name]["inputs"]), LATENT_INPUT),
                              io_name(_names(components[name]["outputs"]), IMAGE_IO))
                       for name, role in self.roles.items() if role in (VAE_DECODER, VAE_DECODER_FULL)}
        self.image_input = self.vae_encoder and io_name(_names(components[self.vae_encoder]["inputs"]), IMAGE_IO)
        if vae not in ("default", "full"):
            raise SdoptError(f"vae {vae!r}: choose default or full")
        if vae == "full":
            self.vae_decoder = self._named(VAE_DECODER_FULL)
            if self.vae_decoder is None:
                raise SdoptError(f"artifact '{self.folder}' has no full VAE decoder (vae_decoder_full): its "
                                 f"vae_decoder is the model's own")
        if vae_tile and self.static:
            raise SdoptError(f"artifact '{self.folder}': its {backend} build is static: it decodes whole images only")
        self.vae_tile = vae_tile // self.info["vae_scale_factor"]  # in latent pixels
        self.role_inputs = {}  # role -> the denoiser input that takes it
        for role in ("latent", "timestep", "text"):
            named = denoiser_spec.input_of(self.spec, role)
            if named is None:
                raise SdoptError(f"artifact '{self.folder}': its denoiser spec names no input of role {role}")
            self.role_inputs[role] = named["name"]
        latent = next(i for i in components[self.denoiser]["inputs"] if i["name"] == self.role_inputs["latent"])
        self.denoiser_channels = latent["shape"][1] if isinstance(latent["shape"][1], int) else None
        embedded = denoiser_spec.input_of(self.spec, "guidance_scale")
        shape = embedded and next((i["shape"] for i in components[self.denoiser]["inputs"]
                                   if i["name"] == embedded["name"]), [])
        if embedded and len(shape) != 1 and (len(shape) != 2 or not isinstance(shape[1], int)):
            raise SdoptError(f"artifact '{self.folder}': its guidance-scale input {embedded['name']} must be "
                             f"(batch,) or (batch, width), not {shape}")
        self.guidance_dim = shape[1] if len(shape or []) == 2 else None

    def _check_text_width(self, components: dict) -> None:
        """The CLIP features placed side by side fit the width the spec pads them to (SD3)."""
        width = self.spec.get("text_width")
        if width is None:
            return
        features = 0
        for name, _, output, combine in self.text_encoders:
            shape = next((o["shape"] for o in components[name]["outputs"] if o["name"] == output), [None])
            features += shape[-1] if combine == "concat-features" and isinstance(shape[-1], int) else 0
        if features > width:
            raise SdoptError(f"artifact '{self.folder}': its text encoders give {features} features side by side, "
                             f"more than the denoiser's text width {width}")

    def _engine_files(self, name: str, backend: str, built: dict) -> list[str]:
        """The artifact's files a backend opens to load graph `name` (relative paths)."""
        if "engine_paths" in built:
            return [p.relative_to(self.folder).as_posix() for p in built["engine_paths"]]
        if "ir_path" in built:
            xml = built["ir_path"].relative_to(self.folder).as_posix()
            return [xml, xml[: -len(".xml")] + ".bin"]
        return [f"{name}/{f}" for f in self.manifest["components"][name]["files"] if f.startswith("model.onnx")]

    def _named(self, role: str) -> str | None:
        return next((name for name, r in self.roles.items() if r == role), None)

    @property
    def takes_masked_image(self) -> bool:
        """The denoiser takes latents, mask and masked-image latents (9 channels for SD's 4-channel latents)."""
        return self.denoiser_channels == 2 * self.info["latent_channels"] + 1

    def _openvino_ir(self, components: dict) -> dict[str, dict]:
        """The OpenVINO build's IR per component; an int8 artifact must have one (its activation form)."""
        build = self.artifact.build("openvino")
        if build is None:
            if any("int8" in c.get("activation_format", []) for c in components.values()):
                raise SdoptError(f"artifact '{self.folder}' has int8 activations: build its OpenVINO form first "
                                 f"(sdopt build {self.folder} --format openvino)")
            return {name: {} for name in components}
        self.static = build.get("static")
        ir = GRAPH_FOLDER_BUILDS["openvino"][0]
        return {name: {"ir_path": self.artifact.path(f"{name}/{ir}" if f"{name}/{ir}" in build["files"]
                                                     else f"openvino/{name}/model.xml")}  # schema 2
                for name in components}

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

    def _tokenizer(self, folder: str, max_length: int) -> Tokenizer:
        path = self.artifact.path(f"{folder}/tokenizer.json")
        data = self._read(f"{folder}/tokenizer.json")
        try:
            tokenizer = Tokenizer.from_str(data.decode("utf-8"))
            length = len(tokenizer.encode("a").ids)
        except Exception as err:  # tokenizers raises plain Exceptions for malformed files
            raise SdoptError(f"{path}: not a usable tokenizer ({str(err).splitlines()[0] if str(err) else err})") \
                from None
        if length != max_length:
            raise SdoptError(f"{path}: pads prompts to {length} tokens, the text encoder expects {max_length}")
        return tokenizer

    def _scheduler_config(self) -> dict:
        path = self.artifact.path("scheduler/scheduler_config.json")
        try:  # diffusers writes -Infinity for some options
            config = json.loads(self._read("scheduler/scheduler_config.json").decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as err:
            raise SdoptError(f"{path}: not a JSON scheduler config ({err})") from None
        if not isinstance(config, dict):
            raise SdoptError(f"{path}: not a mapping of scheduler options")
        return config

    def _read(self, relative: str) -> bytes:
        if self.verify:
            return self.artifact.read_verified(relative)
        from sdopt.contract.safe_io import read_bytes

        return read_bytes(self.artifact.path(relative), f"artifact '{self.folder}':", MAX_SUPPORT_FILE_BYTES)

    def scheduler(self, name: str, steps: int, height: int | None = None, width: int | None = None):
        """A numpy scheduler with its timesteps set (for an image of this size where the schedule shifts by it), or
        one error saying why this config cannot give one."""
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
            raise SdoptError(f"steps {steps!r} must be an integer in [1, {MAX_STEPS}]")
        check_scheduler_family(name, self.spec["scheduler_family"])
        try:
            sched = make_scheduler(name, self.scheduler_config)
            options = {}
            if self.spec.get("sigmas") == "linear":  # the pipeline's own schedule (FLUX)
                options["sigmas"] = np.linspace(1.0, 1 / steps, steps)
            if getattr(sched, "config", {}).get("use_dynamic_shifting"):
                options["mu"] = sched.dynamic_shift_mu(self._image_tokens(height, width))
            sched.set_timesteps(steps, **options)
        except (TypeError, ArithmeticError) as err:  # SchedulerError is already one of sdopt's errors
            raise SdoptError(f"scheduler {name} of '{self.folder}': {err}") from None
        timesteps = np.asarray(sched.timesteps)
        divisor = self.spec.get("timestep_input_divisor", 1)
        if divisor != 1:
            timesteps = timesteps / divisor  # as the model reads them
        low, high = self.spec["timestep_domain"]
        if self.spec["scheduler_family"] == "ddpm":  # the schedule's own table ends there too
            high = min(high, sched.num_train_timesteps - 1)
        if timesteps.min() < low or timesteps.max() > high:
            domain = f"{sched.num_train_timesteps} training timesteps" if self.spec["scheduler_family"] == "ddpm" \
                else f"timesteps [{low}, {high}]"
            raise SdoptError(f"scheduler {name} with {steps} steps reaches timestep {timesteps.max()}, outside the "
                             f"model's {domain} (with its steps_offset {sched.config.get('steps_offset', 0)}); use "
                             f"fewer steps")
        return sched

    def _image_tokens(self, height: int | None, width: int | None) -> int:
        """The denoiser's image tokens at this size: one per latent patch."""
        side = self.info["vae_scale_factor"] * self.info["latent_size_multiple"]
        return ((height or self.info["height"]) // side) * ((width or self.info["width"]) // side)

    def check_size(self, height: int, width: int) -> None:
        check_image_size(height, width, size_multiple(self.info))

    def guidance(self, scale: float):
        """How the scale reaches the denoiser (`guidance.Guidance`), by the kind the denoiser spec names."""
        embedded = denoiser_spec.input_of(self.spec, "guidance_scale")
        return choose_guidance(scale, self.spec["guidance"], self.guidance_dim, embedded and embedded["name"])

    def check_guidance_request(self, guidance: float | None, negative_prompt: str) -> None:
        """A guidance scale for a model that takes none, or a negative prompt where no classifier-free guidance
        runs one: one error each (a guidance-distilled model such as FLUX.1 reads its scale, or nothing, and no
        negative prompt)."""
        kind = self.spec["guidance"]
        if kind == "none" and guidance is not None and guidance != self.info["guidance"]:
            raise SdoptError(f"artifact '{self.folder}': its model takes no guidance scale (distilled without "
                             f"guidance, as FLUX.1-schnell): leave the guidance out")
        if negative_prompt and kind != "classifier-free":
            how = "its scale is an input of the model" if kind == "embedded" else "it takes none"
            raise SdoptError(f"artifact '{self.folder}': a negative prompt needs classifier-free guidance; this "
                             f"model's guidance is {kind} ({how})")

    def sampling(self, steps: int | None = None, guidance: float | None = None, scheduler: str | None = None):
        """(steps, guidance, scheduler): those given, else the artifact's own."""
        return default_sampling(self.info, steps, guidance, scheduler)

    def check_request(self, *, steps: int, guidance: float, scheduler: str, height: int | None = None,
                      width: int | None = None, seed: int = 0, prompt: str = "", negative_prompt: str = "",
                      image: np.ndarray | None = None, strength: float | None = None,
                      mask: np.ndarray | None = None):
        """Everything about a generation that can be wrong, checked before any work; returns the scheduler."""
        if image is not None:
            height, width = height or image.shape[0], width or image.shape[1]
            if self.vae_encoder is None:
                raise SdoptError(f"artifact '{self.folder}' has no vae_encoder graph: img2img and inpainting need "
                                 f"one (make the artifact again with this sdopt)")
            if image.shape[:2] != (height, width) or (mask is not None and mask.shape != image.shape[:2]):
                raise SdoptError(f"the image ({image.shape[1]}x{image.shape[0]}) and mask must be the size "
                                 f"generated ({width}x{height})")
        elif strength is not None or mask is not None:
            raise SdoptError("strength and mask apply to an input image (img2img, inpainting)")
        if self.takes_masked_image and mask is None:
            raise SdoptError(f"artifact '{self.folder}' has an inpainting denoiser: give an image and a mask")
        if strength is not None and not (isinstance(strength, (int, float)) and 0 < strength <= 1):
            raise SdoptError(f"strength {strength!r} must lie in (0, 1]")
        self.check_size(height or self.info["height"], width or self.info["width"])
        check_guidance(guidance)
        self._check_attention_memory(height or self.info["height"], width or self.info["width"],
                                     self.guidance(guidance).branches)
        if self.static:
            self._check_static(height or self.info["height"], width or self.info["width"], guidance)
        check_seed(seed)
        check_text(prompt, "the prompt")
        check_text(negative_prompt, "the negative prompt")
        sched = self.scheduler(scheduler, steps, height, width)
        if image is not None and sched.start_index(_strength(strength, mask)) >= len(sched.timesteps):
            raise SdoptError(f"strength {strength} with {steps} steps leaves no step to run "
                             f"(steps x strength must be at least 1)")
        return sched

    def _check_attention_memory(self, height: int, width: int, branches: int) -> None:
        """Refuse a size whose finest self-attention needs one score matrix (tokens² per head and image) larger
        than the memory this machine has free: the engine would fail in the first step, or be killed."""
        downsample = self.info.get("attention_downsample")
        available = available_memory()
        if downsample is None or available is None:
            return
        side = self.info["vae_scale_factor"] * downsample
        tokens = (height // side) * (width // side)
        need = tokens**2 * 4 * branches
        if need > available:
            raise SdoptError(f"{width}x{height}: the denoiser's self-attention at this size needs {need / 2**30:.1f} "
                             f"GiB for one score matrix ({tokens:,} tokens), more than the {available / 2**30:.1f} GiB "
                             f"of memory free here; generate a smaller image")

    def _check_static(self, height: int, width: int, guidance: float) -> None:
        """A static build runs one image of its size, with the denoiser batch its guidance kind needs."""
        s = self.static
        built_for = denoiser_spec.guidance_branches(self.spec)
        if (height, width) != (s["height"], s["width"]) or self.guidance(guidance).branches != built_for:
            raise SdoptError(f"artifact '{self.folder}': its OpenVINO build is static for one guided {s['width']}x"
                             f"{s['height']} image at a time; generate that (or build again without --static)")

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
        """The denoiser's text input and pooled projection (or None) for one prompt: the encoders' outputs
        combined as the spec says."""
        features, sequence, pooled = [], [], []
        for name, tokenizer, output, combine in self.text_encoders:
            encoding = tokenizer.encode(text)
            if encoding.overflowing and name not in self.truncated:
                self.truncated.append(name)  # said once per encoder (`notes`)
            ids = np.array([encoding.ids], dtype=np.int64)  # (1, max_length)
            out = self.models[name].run({"input_ids": ids})
            require_finite(out, f"the {name}", "encoding the prompt")
            if combine != "pooled":
                (features if combine == "concat-features" else sequence).append(out[output])
            pooled += [out[key] for key in POOLED_OUTPUTS if key in out]
        parts = [np.concatenate(features, axis=-1)] if features else []  # (1, 77, D)
        width = self.spec.get("text_width")
        if width is not None:  # SD3: CLIP features padded with zeros to T5's width, T5's tokens after them
            parts = [np.pad(p, ((0, 0), (0, 0), (0, width - p.shape[-1]))) for p in parts]
            sequence = sequence or [np.zeros((1, self.spec.get("absent_text_tokens", 0), width), np.float32)]
        hidden = np.concatenate(parts + sequence, axis=1)
        return hidden.astype(np.float32), np.concatenate(pooled, axis=-1) if pooled else None

    @property
    def notes(self) -> list[str]:
        """What the generations so far changed of the request, one line each: prompts cut to an encoder's length
        (as diffusers cuts them)."""
        if not self.truncated:
            return []
        limits = ", ".join(f"{name}'s {self.max_lengths[name]}" for name in self.truncated)
        return [f"note: a prompt was longer than {limits} tokens: the rest was cut off, as diffusers cuts it"]

    def initial_noise(self, seed: int, height: int, width: int) -> np.ndarray:
        f = self.info["vae_scale_factor"]
        rng = np.random.default_rng(seed)
        return rng.standard_normal((1, self.info["latent_channels"], height // f, width // f)).astype(np.float32)

    def encode_image(self, image: np.ndarray) -> np.ndarray:
        """(1, 3, H, W) float32 in [-1, 1] -> scaled latents (1, C, h, w), the VAE posterior's mean."""
        out = self.models[self.vae_encoder].run({self.image_input: image.astype(np.float32)})
        require_finite(out, f"the {self.vae_encoder}", "encoding the image")
        z = images.posterior_mean(out["latent_parameters"])
        if self.info.get("vae_shift_factor"):
            z = z - np.float32(self.info["vae_shift_factor"])
        return (z * np.float32(self.info["vae_scaling_factor"])).astype(np.float32)

    def __call__(self, prompt: str, *, seed: int = 0, steps: int | None = None, guidance: float | None = None,
                 scheduler: str | None = None, height: int | None = None, width: int | None = None,
                 negative_prompt: str = "", noise: np.ndarray | None = None, progress=None,
                 image: np.ndarray | None = None, strength: float | None = None,
                 mask: np.ndarray | None = None) -> Generation:
        """Text-to-image; with `image` (H, W, 3) uint8 img2img from `strength` (default 0.8); with `mask`
        (H, W) uint8 as well, inpainting of the mask's white part (strength default 1). Steps, guidance and
        scheduler default to the artifact's own (what the recipe chose, for example 4 steps for a few-step model)."""
        self.check_guidance_request(guidance, negative_prompt)
        steps, guidance, scheduler = self.sampling(steps, guidance, scheduler)
        sched = self.check_request(steps=steps, guidance=guidance, scheduler=scheduler, height=height, width=width,
                                   seed=seed, prompt=prompt, negative_prompt=negative_prompt, image=image,
                                   strength=strength, mask=mask)
        if image is not None:
            height, width = image.shape[:2]
        height, width = height or self.info["height"], width or self.info["width"]
        f = self.info["vae_scale_factor"]
        latent_shape = (1, self.info["latent_channels"], height // f, width // f)
        if noise is not None and noise.shape != latent_shape:
            raise SdoptError(f"the initial noise is {noise.shape}, a {width}x{height} image's latents are {latent_shape}")
        guide = self.guidance(guidance)
        embeds, pooled = self.encode_prompt(prompt, negative_prompt, guide.branches > 1)
        self.models.release(*(name for name, *_ in self.text_encoders))
        batch = embeds.shape[0]
        conditioning = {self.role_inputs["text"]: embeds}
        pooled_input = denoiser_spec.input_of(self.spec, "pooled_text")
        if pooled_input is not None:
            conditioning[pooled_input["name"]] = pooled
        micro = denoiser_spec.input_of(self.spec, "micro_conditions")
        if micro is not None:  # SDXL's time ids
            time_ids = np.array([[height, width, 0, 0, height, width]], dtype=np.float32)  # original, crop, target
            conditioning[micro["name"]] = np.repeat(time_ids, batch, axis=0)
        position_ids = denoiser_spec.input_of(self.spec, "position_ids")
        if position_ids is not None:  # FLUX: one id per packed patch, zeros for the text tokens
            conditioning[position_ids["name"]] = image_position_ids(height // f // 2, width // f // 2)
        text_position_ids = denoiser_spec.input_of(self.spec, "text_position_ids")
        if text_position_ids is not None:
            conditioning[text_position_ids["name"]] = np.zeros((embeds.shape[1], 3), np.float32)
        noise = self.initial_noise(seed, height, width) if noise is None else noise.astype(np.float32)

        timesteps, latents, hook, extra = self._prepare(sched, noise, image, strength, mask, guide.branches)
        if self.vae_encoder is not None:
            self.models.release(self.vae_encoder)
        graphs = {role: (name, self.models[name]) for role in (DENOISER, *self.strategy.roles)
                  for name in [self._named(role)]}
        denoiser = denoise.GuidedDenoiser(graphs, conditioning, guide, sched,
                                           (self.role_inputs["latent"], self.role_inputs["timestep"]), extra,
                                           packed=self.spec["latent"]["layout"] == "packed-2x2",
                                           timestep_divisor=self.spec.get("timestep_input_divisor", 1))
        if hasattr(sched, "seed_noise"):  # a sampler that noises afresh each step (LCM)
            sched.seed_noise([seed, 1])
        latents = self.strategy.loop(denoiser, sched, latents, timesteps, hook, progress, self.denoise_params)
        graphs.clear()  # the denoiser's references too: a released graph's memory is freed
        self.models.release(*(name for name, role in self.roles.items() if is_denoiser(role)))
        decoded = self.decode(latents)
        self.models.release(self.vae_decoder)
        return Generation((decoded * 255).round().astype(np.uint8), latents, decoded, denoiser.stats)

    def _prepare(self, sched, noise, image, strength, mask, batch):
        """(timesteps to run, initial latents, per-step hook, extra denoiser input channels)."""
        if image is None:
            return sched.timesteps, noise * np.float32(sched.init_noise_sigma), None, None
        strength = _strength(strength, mask)
        start = sched.start_index(strength)
        sched.set_begin_index(start)
        timesteps = sched.timesteps[start:]
        pixels = images.to_model_input(image)  # (1, 3, H, W)
        whole_schedule = strength >= 1.0 and mask is not None  # diffusers: pure noise, no image latents needed
        image_latents = None if whole_schedule and self.takes_masked_image else self.encode_image(pixels)
        if whole_schedule:
            latents = noise * np.float32(sched.init_noise_sigma)
        else:
            latents = sched.add_noise(image_latents, noise, timesteps[0])
        if mask is None:
            return timesteps, latents, None, None
        full = images.binary_mask(mask)  # (1, 1, H, W)
        small = images.latent_mask(full, self.info["vae_scale_factor"])
        if self.takes_masked_image:
            masked = self.encode_image(pixels * (full < 0.5))
            extra = np.concatenate([np.repeat(small, batch, axis=0), np.repeat(masked, batch, axis=0)], axis=1)
            return timesteps, latents, None, extra.astype(np.float32)

        def keep_unmasked(latents, i):
            proper = image_latents if i == len(timesteps) - 1 else sched.add_noise(image_latents, noise,
                                                                                     timesteps[i + 1])
            return ((1 - small) * proper + small * latents).astype(np.float32)
        return timesteps, latents, keep_unmasked, None

    def decode(self, latents: np.ndarray) -> np.ndarray:
        z = latents / np.float32(self.info["vae_scaling_factor"])
        if self.info.get("vae_shift_factor"):
            z = z + np.float32(self.info["vae_shift_factor"])
        z = z.astype(np.float32)
        image = decode_tiled(self._decode, z, self.vae_tile, self.info["vae_scale_factor"]) if self.vae_tile \
            else self._decode(z)
        return np.clip(image[0].transpose(1, 2, 0) / 2 + 0.5, 0.0, 1.0)  # (H, W, 3)

    def _decode(self, z: np.ndarray) -> np.ndarray:
        latent, image = self.vae_io[self.vae_decoder]
        out = self.models[self.vae_decoder].run({latent: z})
        require_finite(out, f"the {self.vae_decoder}", "decoding the latents")
        return out[image]  # (1, 3, H, W)


def _names(ios: list[dict]) -> list[str]:
    return [io["name"] for io in ios]


def _encoder_output(named: str, outputs: list[str]) -> str:
    """The text encoder output the spec names, or where the graph spells it as schema 2 did, that name."""
    return named if named in outputs else prompt_output(outputs)


def _strength(strength: float | None, mask) -> float:
    """diffusers' defaults: img2img 0.8, inpainting 1.0."""
    return strength if strength is not None else (1.0 if mask is not None else 0.8)


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
