"""Where models come from: `--model` specs resolved to a torch diffusers pipeline.

- `arch:sd15|sd21|sdxl|tiny`: the real architecture with random weights (speed work only),
  seeded so the same spec always gives the same weights, with a byte-level stand-in tokenizer.
- a local diffusers folder holding a StableDiffusion, StableDiffusionXL or StableDiffusion3 pipeline (SD3 and
  SD3.5; without T5 where the folder's `text_encoder_3` is null, as diffusers runs it).
- `tiny-shapes`, `tiny-scenes`: the project's own trained reference models (sdopt.reference.families), shipped inside
  the package.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from sdopt.contract import schema
from sdopt.contract.errors import SdoptError
from sdopt.contract.limits import MAX_STEPS
from sdopt.contract.pipeline_folder import pretrained_options
from sdopt.contract.safe_io import read_text
from sdopt.contract.sampling import pixel_size_multiple
from sdopt.reference.families import FAMILIES, family_of_folder
from sdopt.sources.archs import ARCHS, DIT_ARCHS, ArchSpec, DiTArchSpec

SUPPORTED_PIPELINES = {"StableDiffusionPipeline": "sd", "StableDiffusionXLPipeline": "sdxl",
                       "StableDiffusionInpaintPipeline": "sd",  # an inpainting UNet takes mask + masked latents
                       "StableDiffusion3Pipeline": "sd3", "StableDiffusion3Img2ImgPipeline": "sd3",
                       "FluxPipeline": "flux", "FluxImg2ImgPipeline": "flux"}
# sampling defaults of a pipeline kind where its folder says none: diffusers' pipeline defaults
KIND_SAMPLING = {"sd": (20, 7.5, "ddim"), "sdxl": (20, 7.5, "ddim"), "sd3": (28, 7.0, "flow-euler"),
                 "flux": (28, 3.5, "flow-euler")}
UNGUIDED_SAMPLING = (4, 0.0, "flow-euler")  # a timestep-distilled model without guidance (FLUX.1-schnell)
T5_MAX_LENGTH = {"sd3": 256, "flux": 512}  # diffusers' pipelines' max_sequence_length
DEFAULT_MODEL = "tiny-shapes" if FAMILIES["tiny-shapes"].shipped else "arch:tiny"


def source_to_rebuild(manifest: dict, named: str | None, flag: str) -> str:
    """The model source to remake an artifact's reference (or its bench peers) from. sdopt follows no path
    written in a manifest: a source it builds from its name (a reference family, arch:NAME) is taken from the
    manifest; a local folder only when the user names it again (`named`, given with `flag`)."""
    if named is not None:
        return named
    spec = manifest["source"]["spec"]
    if spec in FAMILIES or (spec.startswith("arch:") and spec[len("arch:"):] in {**ARCHS, **DIT_ARCHS}):
        return spec
    raise SdoptError(f"the artifact was made from a local model folder ('{spec[:200]}'); sdopt does not open "
                     f"folders a manifest names: give the folder again with {flag} FOLDER")


@dataclass
class PassOutputs:
    """What the passes hand the exporter beside the pipeline they transform."""

    records: list = field(default_factory=list)  # what each pass did, for the manifest
    graphs: list = field(default_factory=list)  # sdopt.contract.graphs.GraphSpec that passes add to the pipeline's own
    # pipeline attribute -> sdopt.contract.quantization.GraphQuantization
    quantization: dict = field(default_factory=dict)
    denoise: dict = field(default_factory=lambda: {"strategy": "plain"})  # the runtime's denoise strategy
    teachers: dict = field(default_factory=dict)  # pipeline attribute -> the module before a pass reshaped it
    files: dict = field(default_factory=dict)  # artifact-relative path -> bytes a pass adds (an LCM-LoRA)
    secondary: bool = False  # a non-main process of a multi-process pass: it stops after that pass


@dataclass(frozen=True)
class TextEncoderGraph:
    """One text encoder as the artifact holds it: its graph and tokenizer folders and what the graph outputs."""

    name: str  # graph folder (the pipeline attribute)
    encoder: object  # the transformers module
    tokenizer: object
    tokenizer_folder: str
    kind: str  # "clip" or "t5"
    max_length: int  # tokens the prompt is padded and truncated to
    all_layers: bool  # every layer's hidden state is an output (the denoiser reads the penultimate)
    pooled: bool  # the pooled projection is an output

    @property
    def pooled_output(self) -> str:
        """The pooled output's name: a CLIP with projection's text_embeds, a plain CLIP's pooler_output."""
        return "text_embeds" if hasattr(self.encoder, "text_projection") else "pooler_output"


@dataclass
class Source:
    spec: str
    kind: str  # "sd" or "sdxl"
    random_weights: bool
    pipeline: object  # diffusers StableDiffusionPipeline / StableDiffusionXLPipeline, fp32, eval mode
    height: int  # default image size in pixels
    width: int
    steps: int = 20  # sampling defaults the model is meant to be run with (a few-step pass changes them)
    guidance: float = 7.5
    scheduler: str = "ddim"  # the sampler the model is meant to be run with (sdopt.contract.sampling.SCHEDULERS)
    family: str = ""  # a reference family (sdopt.reference.families) for its shipped model and folders trained like it
    outputs: PassOutputs = field(default_factory=lambda: PassOutputs())  # what the passes hand the exporter
    note: str = ""  # what a random-weight source leaves out of the real model (blocks, T5), said with its outputs

    @property
    def t5_max_length(self) -> int:
        return T5_MAX_LENGTH.get(self.kind, 0)

    def text_encoder_graphs(self) -> list[TextEncoderGraph]:
        """The pipeline's text encoders in the order their outputs combine: SD one CLIP (last hidden state), SDXL
        two (penultimate layer; the second's pooled projection too), SD3 two CLIPs with projection and T5 (absent
        where the pipeline has none), FLUX CLIP (its pooled output) and T5."""
        pipe, graphs = self.pipeline, []
        t5_index = {"sd3": 2, "flux": 1}.get(self.kind)
        for i, suffix in enumerate(("", "_2", "_3")):
            encoder = getattr(pipe, f"text_encoder{suffix}", None)
            if encoder is None:
                continue
            tokenizer = getattr(pipe, f"tokenizer{suffix}")
            t5 = i == t5_index
            graphs.append(TextEncoderGraph(
                f"text_encoder{suffix}", encoder, tokenizer, f"tokenizer{suffix}", "t5" if t5 else "clip",
                self.t5_max_length if t5 else tokenizer.model_max_length,
                all_layers=self.kind in ("sdxl", "sd3") and not t5,
                pooled=not t5 and ((self.kind == "sdxl" and i == 1) or self.kind in ("sd3", "flux"))))
        return graphs

    @property
    def text_encoders(self) -> list:
        return [g.encoder for g in self.text_encoder_graphs()]

    @property
    def tokenizers(self) -> list:
        return [g.tokenizer for g in self.text_encoder_graphs()]

    @property
    def size_multiple(self) -> int:
        """Pixels that image sides must be a multiple of."""
        return pixel_size_multiple(self.pipeline.vae_scale_factor, self.backbone.latent_size_multiple(self.denoiser))

    @property
    def label(self) -> str:
        if not self.random_weights:
            return self.spec
        return f"{self.spec} (random weights{'; ' + self.note if self.note else ''})"

    @property
    def backbone(self):
        """The adapter of the pipeline's denoiser (sdopt.backbones)."""
        from sdopt.backbones import backbone_of_pipeline

        return backbone_of_pipeline(self.pipeline)

    @property
    def denoiser(self):
        return self.backbone.denoiser(self.pipeline)

    def example_inputs(self, batch: int = 2, latent_hw: tuple[int, int] | None = None) -> dict:
        """Example denoiser inputs in the exported graph's names and order (random, seeded)."""
        return self.backbone.example_inputs(self, batch, latent_hw)

    def describe(self) -> dict:
        described = {"spec": self.spec, "kind": self.kind, "random_weights": self.random_weights,
                     "pipeline_class": type(self.pipeline).__name__, "family": self.family}
        if self.note:
            described["note"] = self.note
        return described


def load_source(spec: str, without_t5: bool = False) -> Source:
    """`without_t5`: an SD3 folder's pipeline without its T5 encoder (diffusers' `text_encoder_3=None`: zeros in
    its place; a fraction of the memory, somewhat weaker prompt following)."""
    _quiet_libraries()
    arch = spec[len("arch:"):] if spec.startswith("arch:") else None
    if without_t5 and (spec in FAMILIES or (arch is not None and getattr(DIT_ARCHS.get(arch), "kind", "") != "sd3")):
        raise SdoptError(f"--without-t5 applies to SD3 models with a T5 encoder, not {spec}")
    if spec.startswith("arch:"):
        name = spec[len("arch:"):]
        if name in DIT_ARCHS:
            return _random_weight_dit_source(spec, DIT_ARCHS[name])
        if name not in ARCHS:
            raise SdoptError(f"unknown architecture '{name}' in --model {spec}; choose one of "
                             + ", ".join(f"arch:{a}" for a in {**ARCHS, **DIT_ARCHS}))
        return _random_weight_source(spec, ARCHS[name])
    if spec in FAMILIES:
        if not FAMILIES[spec].shipped:
            raise SdoptError(f"the {spec} model is not in this installation")
        path = FAMILIES[spec].model_dir
    else:
        path = Path(spec)
        if not path.exists():
            raise SdoptError(f"unknown model source '{spec}': not {', '.join(FAMILIES)}, not arch:NAME, and no "
                             "such folder")
    source = _folder_source(spec, path, without_t5)
    family = family_of_folder(path)  # its marker is written by the family's trainer
    if family is not None:
        defaults = _read_json(path / family.marker, spec)
        try:
            schema.record({"steps": schema.integer(1, MAX_STEPS), "guidance": schema.number(0, 100)},
                          {"family": schema.string(max_length=64)})(defaults, "")
        except schema.Invalid as err:
            raise SdoptError(f"'{spec}': {family.marker}: {err}") from None
        source.family = family.name
        source.steps, source.guidance = defaults["steps"], float(defaults["guidance"])
    return source


def _read_json(path: Path, spec: str):
    try:
        return schema.parse_json(read_text(path, f"'{spec}':").encode())
    except ValueError as err:
        raise SdoptError(f"'{spec}': {path.name}: {err}") from None


def _folder_source(spec: str, path: Path, without_t5: bool = False) -> Source:
    index_file = path / "model_index.json"
    if not path.is_dir() or not index_file.is_file():
        raise SdoptError(f"'{spec}' is not a diffusers pipeline folder (no model_index.json)")
    index = _read_json(index_file, spec)
    if isinstance(index, dict) and "_sdopt_version" in index:
        raise SdoptError(f"'{spec}' is an sdopt artifact (ONNX graphs), not a source model: compress the diffusers "
                         f"folder it was made from")
    class_name = index.get("_class_name") if isinstance(index, dict) else None
    kind = SUPPORTED_PIPELINES.get(class_name)
    if kind is None:
        raise SdoptError(f"'{spec}' holds a {class_name}; supported: " + ", ".join(SUPPORTED_PIPELINES))
    odd = next((p for p in sorted(path.rglob("*")) if not p.is_dir() and not p.is_file()), None)
    if odd is not None:  # diffusers would wait on a FIFO or fail on a dangling link
        raise SdoptError(f"'{spec}': {odd.relative_to(path)} is not a regular file (a FIFO, device, socket or "
                         f"dangling link)")
    import diffusers
    import torch

    pipeline_class = getattr(diffusers, class_name)
    extra = pretrained_options(index)
    if without_t5:
        if kind != "sd3":
            raise SdoptError(f"'{spec}': --without-t5 applies to SD3 folders (text_encoder_3), not a {class_name}"
                             + (" (FLUX reads its prompt through T5 only)" if kind == "flux" else ""))
        extra.update(text_encoder_3=None, tokenizer_3=None)
    if kind == "flux" and (extra.get("text_encoder_2", 0) is None or not (path / "text_encoder_2").is_dir()):
        raise SdoptError(f"'{spec}': a FLUX folder needs its T5 encoder (text_encoder_2): FLUX reads the prompt "
                         f"through T5")
    try:
        pipe = pipeline_class.from_pretrained(path, local_files_only=True, **extra)
    except Exception as err:  # diffusers raises many types for a broken folder
        raise SdoptError(f"'{spec}': cannot load the pipeline ({type(err).__name__}: {err})") from err
    pipe.set_progress_bar_config(disable=True)
    pipe = pipe.to("cpu", dtype=torch.float32)
    return _with_defaults(Source(spec, kind, False, pipe, 0, 0))


def _with_defaults(source: Source) -> Source:
    """The default image size (the denoiser's sample size) and sampling of the source's kind."""
    backbone, denoiser = source.backbone, source.denoiser
    source.height = source.width = backbone.default_sample_size(denoiser) * source.pipeline.vae_scale_factor
    unguided = source.kind == "flux" and not backbone.embeds_guidance(denoiser)
    source.steps, source.guidance, source.scheduler = UNGUIDED_SAMPLING if unguided else KIND_SAMPLING[source.kind]
    return source


def _random_weight_source(spec: str, arch: ArchSpec) -> Source:
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    tokenizer = stand_in_tokenizer()
    vocab_size = max(49408, len(tokenizer))
    encoders = []
    for i, te in enumerate(arch.text_encoders):
        pad_token_id = 1 if i == 0 else 0
        config = CLIPTextConfig(vocab_size=vocab_size, max_position_embeddings=77, pad_token_id=pad_token_id,
                                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **te)
        model_class = CLIPTextModelWithProjection if (arch.kind == "sdxl" and i == 1) else CLIPTextModel
        encoders.append(model_class(config).eval())
    unet = UNet2DConditionModel(**arch.unet).eval()
    vae = AutoencoderKL(**arch.vae).eval()
    scheduler = DDIMScheduler(**arch.scheduler)
    if arch.kind == "sdxl":
        from diffusers import StableDiffusionXLPipeline

        pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=encoders[0], text_encoder_2=encoders[1],
                                         tokenizer=tokenizer, tokenizer_2=stand_in_tokenizer(pad_token="!"),
                                         unet=unet, scheduler=scheduler,
                                         force_zeros_for_empty_prompt=arch.force_zeros_for_empty_prompt)
    else:
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline(vae=vae, text_encoder=encoders[0], tokenizer=tokenizer, unet=unet,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return Source(spec, arch.kind, True, pipe, arch.height, arch.height)


def _random_weight_dit_source(spec: str, arch: DiTArchSpec) -> Source:
    """An SD3- or FLUX-layout pipeline with random weights, as `arch` describes it."""
    import diffusers
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    torch.manual_seed(0)
    sd3 = arch.kind == "sd3"
    tokenizers = [stand_in_tokenizer(), stand_in_tokenizer(pad_token="!")][:len(arch.text_encoders)]
    clip_class = CLIPTextModelWithProjection if sd3 else CLIPTextModel
    encoders = [clip_class(CLIPTextConfig(
        vocab_size=max(49408, len(tokenizers[0])), max_position_embeddings=77, pad_token_id=1,
        bos_token_id=tokenizers[0].bos_token_id, eos_token_id=tokenizers[0].eos_token_id, **te)).eval()
        for te in arch.text_encoders]
    transformer_class = diffusers.SD3Transformer2DModel if sd3 else diffusers.FluxTransformer2DModel
    parts = dict(transformer=transformer_class(**{**arch.transformer, **arch.depth}).eval(),
                 scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**arch.scheduler),
                 vae=diffusers.AutoencoderKL(**arch.vae).eval())
    for i, (encoder, tokenizer) in enumerate(zip(encoders, tokenizers)):
        suffix = "" if i == 0 else f"_{i + 1}"
        parts.update({f"text_encoder{suffix}": encoder, f"tokenizer{suffix}": tokenizer})
    if sd3:
        pipe = diffusers.StableDiffusion3Pipeline(text_encoder_3=None, tokenizer_3=None, **parts)
    else:
        pipe = diffusers.FluxPipeline(text_encoder_2=T5EncoderModel(T5Config(**arch.t5)).eval(),
                                      tokenizer_2=stand_in_t5_tokenizer(), **parts)
    pipe.set_progress_bar_config(disable=True)
    source = _with_defaults(Source(spec, arch.kind, True, pipe, 0, 0))
    source.height = source.width = arch.height
    source.note = arch.note
    return source


def stand_in_t5_tokenizer():
    """A T5 tokenizer whose pieces are single characters (random-weight models have no vocabulary of their
    own): T5's special tokens, '</s>' after the text, padding and truncation as a real one."""
    from sdopt.contract.tokenizer_files import t5_tokenizer

    pieces = [(chr(c), -10.0) for c in range(ord("!"), ord("~") + 1)] + [("▁", -5.0)]
    return t5_tokenizer(pieces, model_max_length=512)


def stand_in_tokenizer(pad_token: str = "<|endoftext|>"):
    """A CLIP tokenizer with CLIP's byte-level alphabet and no merges: every character is one token.

    Random-weight models have no vocabulary of their own and none can be downloaded; this one
    exercises the same code path (BOS/EOS, padding to 77, truncation) as a real CLIP tokenizer.
    """
    from sdopt.contract.tokenizer_files import clip_tokenizer

    alphabet = _byte_alphabet()
    vocab = {}
    for ch in alphabet:
        vocab[ch] = len(vocab)
    for ch in alphabet:
        vocab[ch + "</w>"] = len(vocab)
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return clip_tokenizer(vocab, [], pad_token=pad_token, model_max_length=77)


def _byte_alphabet() -> list[str]:
    # The printable stand-ins GPT-2/CLIP byte-level BPE uses for the 256 byte values.
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def _quiet_libraries() -> None:
    """Keep our stdout/stderr to our own lines: silence library chatter that is not an error."""
    for name in ("diffusers", "transformers", "modelopt", "torch.onnx"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="modelopt")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    try:
        from diffusers.utils import logging as dlog
        from transformers.utils import logging as tlog

        dlog.set_verbosity_error()
        tlog.set_verbosity_error()
        dlog.disable_progress_bar()  # "Loading pipeline components" / "Loading weights" bars
        tlog.disable_progress_bar()
    except ImportError:
        pass
