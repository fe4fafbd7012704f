"""The denoiser stage of a reference family in SD3's layout (``--family tiny-scenes-sd3``).

An SD3Transformer2DModel (patch 2, RMS qk-norm) and two CLIP text encoders with projection (the CLIP-L and
CLIP-G slots) trained jointly from scratch with rectified flow: x_t = (1 - s) x0 + s noise, the transformer
predicting noise - x0 at timestep 1000 s, s drawn logit-normal (SD3's training density); 10 % caption
dropout to "" and an EMA of the weights, as the UNet stage. The pipeline has no T5: diffusers then feeds
256 zero tokens in T5's place (``text_encoder_3=None``), and so does training, at the cost of one token —
identical tokens stay identical through every block, so one of them whose attention keys count 256 times
gives the same transformer output (checked at export against the 256 real ones).
"""

from __future__ import annotations

import math
import os
import shutil

import torch
import torch.nn.functional as F

TEXT_MAX_LENGTH = 24  # tokens per CLIP; the grammar's longest caption takes 18
ABSENT_T5_TOKENS = 256  # StableDiffusion3Pipeline's default max_sequence_length: its zero tokens without T5
TEXT_WIDTH = 256  # joint_attention_dim; the CLIP features (64 + 128) are padded to it as SD3 pads 2048 to 4096
CLIP_SLOTS = ({"hidden": 64, "layers": 2, "heads": 2}, {"hidden": 128, "layers": 3, "heads": 4})
LATENT_CHANNELS = 16
PIPELINE_PARTS = {"model_index.json", "scheduler", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2",
                  "transformer", "vae"}


def clip_config(ids: dict, hidden: int, layers: int, heads: int) -> dict:
    return dict(vocab_size=ids["vocab_size"], hidden_size=hidden, intermediate_size=2 * hidden, projection_dim=hidden,
                num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=TEXT_MAX_LENGTH,
                hidden_act="quick_gelu", bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["pad"])


def transformer_config(latent_size: int, width: int, heads: int, layers: int) -> dict:
    return dict(sample_size=latent_size, patch_size=2, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS,
                num_layers=layers, attention_head_dim=width // heads, num_attention_heads=heads,
                joint_attention_dim=TEXT_WIDTH, caption_projection_dim=width,
                pooled_projection_dim=sum(s["hidden"] for s in CLIP_SLOTS), pos_embed_max_size=16,
                qk_norm="rms_norm")


class AbsentTokensJointAttention:
    """SD3's joint attention in which the last text token stands for `count` identical tokens (its keys weigh
    `count` times in the softmax): the training form of the 256 zero tokens of a pipeline without T5."""

    def __init__(self, count: int):
        self.log_count = math.log(count)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        batch, image_tokens = hidden_states.shape[:2]

        def heads(x, norm):
            x = x.view(batch, -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2)
            return norm(x) if norm is not None else x

        q = torch.cat([heads(attn.to_q(hidden_states), attn.norm_q),
                       heads(attn.add_q_proj(encoder_hidden_states), attn.norm_added_q)], dim=2)
        k = torch.cat([heads(attn.to_k(hidden_states), attn.norm_k),
                       heads(attn.add_k_proj(encoder_hidden_states), attn.norm_added_k)], dim=2)
        v = torch.cat([heads(attn.to_v(hidden_states), None), heads(attn.add_v_proj(encoder_hidden_states), None)],
                      dim=2)
        bias = torch.zeros(k.shape[2], dtype=q.dtype)
        bias[-1] = self.log_count
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.view(1, -1)).transpose(1, 2).flatten(2)
        image, text = out[:, :image_tokens], out[:, image_tokens:]
        if not attn.context_pre_only:
            text = attn.to_add_out(text)
        return attn.to_out[1](attn.to_out[0](image)), text


def prompt_embeddings(encoders, ids, absent_tokens: int):
    """StableDiffusion3Pipeline.encode_prompt without T5 on token ids: each CLIP's penultimate hidden states
    side by side, padded to the text width, then `absent_tokens` zero tokens; the pooled projections side by
    side."""
    features, pooled = [], []
    for encoder in encoders:
        out = encoder(ids, output_hidden_states=True)
        features.append(out.hidden_states[-2])
        pooled.append(out.text_embeds)
    clip = torch.cat(features, dim=-1)
    clip = F.pad(clip, (0, TEXT_WIDTH - clip.shape[-1]))
    zeros = clip.new_zeros(clip.shape[0], absent_tokens, TEXT_WIDTH)
    return torch.cat([clip, zeros], dim=1), torch.cat(pooled, dim=-1)


def new_models(args, latent_size: int, tok_ids: dict):
    from diffusers import SD3Transformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(args.seed + 1)
    transformer = SD3Transformer2DModel(**transformer_config(latent_size, args.dit_width, args.dit_heads,
                                                             args.dit_layers))
    encoders = [CLIPTextModelWithProjection(CLIPTextConfig(**clip_config(tok_ids, **slot))) for slot in CLIP_SLOTS]
    return transformer, encoders


def flow_loss(transformer, encoders, x0, ids, generator):
    """Rectified-flow loss of one batch of scaled latents `x0` and caption token ids."""
    batch = x0.shape[0]
    sigma = torch.sigmoid(torch.randn(batch, generator=generator))
    noise = torch.randn(x0.shape, generator=generator)
    s = sigma.view(-1, 1, 1, 1)
    text, pooled = prompt_embeddings(encoders, ids, 1)
    pred = transformer(hidden_states=(1 - s) * x0 + s * noise, timestep=sigma * 1000, encoder_hidden_states=text,
                       pooled_projections=pooled).sample
    return (pred - (noise - x0)).pow(2).mean()


def use_training_attention(transformer, training: bool) -> None:
    from diffusers.models.attention_processor import JointAttnProcessor2_0

    transformer.set_attn_processor(AbsentTokensJointAttention(ABSENT_T5_TOKENS) if training
                                   else JointAttnProcessor2_0())


def check_absent_token_form(transformer, encoders, ids, latent_size: int) -> float:
    """Largest difference between the transformer on the 256 zero tokens and on the one weighted token
    (its training form); raises when they disagree."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(ids.shape[0], LATENT_CHANNELS, latent_size, latent_size, generator=g)
    t = torch.rand(ids.shape[0], generator=g) * 1000
    with torch.no_grad():
        use_training_attention(transformer, True)
        text, pooled = prompt_embeddings(encoders, ids, 1)
        short = transformer(hidden_states=x, timestep=t, encoder_hidden_states=text, pooled_projections=pooled).sample
        use_training_attention(transformer, False)
        text, pooled = prompt_embeddings(encoders, ids, ABSENT_T5_TOKENS)
        full = transformer(hidden_states=x, timestep=t, encoder_hidden_states=text, pooled_projections=pooled).sample
    diff = float((short - full).abs().max())
    if not diff < 1e-3 * max(1.0, float(full.abs().max())):
        raise RuntimeError(f"the one-token form of the absent T5 tokens differs from 256 zero tokens by {diff}")
    return diff


def save_pipeline(out: str, vae, transformer, encoders, tok_dir: str, scaling: float, shift: float,
                  flow_shift: float) -> None:
    """A StableDiffusion3Pipeline folder without T5 (EMA weights, FlowMatchEulerDiscreteScheduler)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline
    from transformers import CLIPTokenizer

    vae.register_to_config(scaling_factor=float(scaling), shift_factor=float(shift))
    use_training_attention(transformer, False)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer.eval(), scheduler=FlowMatchEulerDiscreteScheduler(shift=flow_shift),
        vae=vae.eval(), text_encoder=encoders[0].eval(), tokenizer=tokenizer, text_encoder_2=encoders[1].eval(),
        tokenizer_2=tokenizer, text_encoder_3=None, tokenizer_3=None)
    pipe.save_pretrained(out, safe_serialization=True)
    for name in ("tokenizer", "tokenizer_2"):  # the tokenizer files exactly as built
        shutil.rmtree(os.path.join(out, name))
        shutil.copytree(tok_dir, os.path.join(out, name))
