"""Attention exported one head at a time (cross- and self-attention of the UNets, joint attention of MMDiT and
FLUX).

diffusers' attention computes every head's (query tokens x key tokens) scores in one batched matmul: at 512²
the SD1.5 UNet's first self-attention holds 2 (guidance) x 8 heads x 4096² floats, 1.07 GB, and its softmax
as much again. `HeadSlicedAttention` computes the same function head by head (a fixed loop over the
module's heads, so batch and image size stay dynamic in the graph): an engine that frees a tensor after
its last use holds one head's scores at a time. The result is the same up to float rounding.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F

from sdopt.contract.graphs import ATTENTION_FORMS


class HeadSlicedAttention:
    """A diffusers attention processor (`Attention.set_processor`)."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        image = hidden_states.ndim == 4
        if image:
            batch, channels, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        batch, context_length = context.shape[0], context.shape[1]
        query, key, value = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        head_dim = key.shape[-1] // attn.heads
        query, key, value = (x.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for x in (query, key, value))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, context_length, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        heads = [F.scaled_dot_product_attention(
            query[:, h:h + 1], key[:, h:h + 1], value[:, h:h + 1],
            attn_mask=None if attention_mask is None else attention_mask[:, h:h + 1], dropout_p=0.0, is_causal=False)
            for h in range(attn.heads)]
        hidden_states = torch.cat(heads, dim=1).transpose(1, 2).reshape(batch, -1, attn.heads * head_dim)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states.to(query.dtype)))
        if image:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channels, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


class HeadSlicedJointAttention:
    """diffusers' joint attention (SD3's MMDiT: image and text tokens attend together, `JointAttnProcessor2_0`)
    one head at a time: the same projections, norms, token order (image, then text) and output split."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        batch, image_tokens = hidden_states.shape[0], hidden_states.shape[1]

        def heads(x):
            return x.view(batch, -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2)

        query, key, value = heads(attn.to_q(hidden_states)), heads(attn.to_k(hidden_states)), \
            heads(attn.to_v(hidden_states))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if encoder_hidden_states is not None:
            text_query, text_key = heads(attn.add_q_proj(encoder_hidden_states)), \
                heads(attn.add_k_proj(encoder_hidden_states))
            text_value = heads(attn.add_v_proj(encoder_hidden_states))
            if attn.norm_added_q is not None:
                text_query = attn.norm_added_q(text_query)
            if attn.norm_added_k is not None:
                text_key = attn.norm_added_k(text_key)
            query, key, value = (torch.cat(pair, dim=2) for pair in ((query, text_query), (key, text_key),
                                                                       (value, text_value)))
        out = torch.cat([F.scaled_dot_product_attention(query[:, h:h + 1], key[:, h:h + 1], value[:, h:h + 1],
                                                        dropout_p=0.0, is_causal=False)
                         for h in range(attn.heads)], dim=1)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * query.shape[-1]).to(query.dtype)
        if encoder_hidden_states is not None:
            out, encoder_hidden_states = out[:, :image_tokens], out[:, image_tokens:]
            if not attn.context_pre_only:
                encoder_hidden_states = attn.to_add_out(encoder_hidden_states)
        out = attn.to_out[1](attn.to_out[0](out))
        return out if encoder_hidden_states is None else (out, encoder_hidden_states)


def rotary(x, cos, sin):
    """FLUX's rotary position embedding of x (B, tokens, heads, head_dim) by cos / sin (tokens, head_dim), as
    diffusers' `apply_rotary_emb` computes it, in slices that keep the token count dynamic in a traced graph
    (diffusers' reshape there is traced with the example's token count)."""
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    rotated = torch.stack([-x[..., 1::2], x[..., 0::2]], dim=-1).flatten(3)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


class HeadSlicedFluxAttention:
    """diffusers' FLUX attention (`FluxAttnProcessor`: text tokens then image tokens, rotary positions) one head
    at a time."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 image_rotary_emb=None):
        from diffusers.models.transformers.transformer_flux import _get_qkv_projections

        query, key, value, text_query, text_key, text_value = _get_qkv_projections(attn, hidden_states,
                                                                                   encoder_hidden_states)
        query, key, value = (x.unflatten(-1, (attn.heads, -1)) for x in (query, key, value))
        query, key = attn.norm_q(query), attn.norm_k(key)
        if attn.added_kv_proj_dim is not None:
            text_query, text_key, text_value = (x.unflatten(-1, (attn.heads, -1))
                                                for x in (text_query, text_key, text_value))
            query = torch.cat([attn.norm_added_q(text_query), query], dim=1)
            key = torch.cat([attn.norm_added_k(text_key), key], dim=1)
            value = torch.cat([text_value, value], dim=1)
        if image_rotary_emb is not None:
            query, key = rotary(query, *image_rotary_emb), rotary(key, *image_rotary_emb)
        query, key, value = (x.transpose(1, 2) for x in (query, key, value))  # (B, heads, tokens, head_dim)
        out = torch.cat([F.scaled_dot_product_attention(query[:, h:h + 1], key[:, h:h + 1], value[:, h:h + 1],
                                                        attn_mask=attention_mask, dropout_p=0.0, is_causal=False)
                         for h in range(attn.heads)], dim=1)
        out = out.transpose(1, 2).flatten(2, 3).to(query.dtype)
        if encoder_hidden_states is None:
            return out
        text_tokens = encoder_hidden_states.shape[1]
        encoder_hidden_states, out = out[:, :text_tokens], out[:, text_tokens:]
        out = attn.to_out[1](attn.to_out[0](out.contiguous()))
        return out, attn.to_add_out(encoder_hidden_states.contiguous())


# diffusers' processors -> the head-sliced one computing the same function (others are left as they are)
SLICED = {"AttnProcessor": HeadSlicedAttention, "AttnProcessor2_0": HeadSlicedAttention,
          "JointAttnProcessor2_0": HeadSlicedJointAttention, "FluxAttnProcessor": HeadSlicedFluxAttention}


def _attention_modules(module: torch.nn.Module) -> list:
    return [m for m in module.modules()
            if hasattr(m, "set_processor") and type(getattr(m, "processor", None)).__name__ in SLICED]


@contextmanager
def attention_form(module: torch.nn.Module, form: str):
    """Inside the block, the diffusers attention modules of `module` compute in `form`; their own processors
    are put back after."""
    if form not in ATTENTION_FORMS:
        raise ValueError(f"attention form {form!r}: choose from {', '.join(ATTENTION_FORMS)}")
    modules = _attention_modules(module) if form != "batched" else []
    saved = [m.processor for m in modules]
    try:
        for m in modules:
            m.set_processor(SLICED[type(m.processor).__name__]())
        yield len(modules)
    finally:
        for m, processor in zip(modules, saved):
            m.set_processor(processor)
