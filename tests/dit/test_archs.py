"""The random-weight transformer architectures: real width, heads and embeddings, fewer blocks, said in the note."""

import pytest
import torch

from sdopt.sources.archs import DIT_ARCHS


@pytest.mark.parametrize("name", sorted(DIT_ARCHS))
def test_arch_builds_at_full_width_with_the_blocks_its_note_names(name):
    import diffusers

    arch = DIT_ARCHS[name]
    model_class = diffusers.SD3Transformer2DModel if arch.kind == "sd3" else diffusers.FluxTransformer2DModel
    with torch.device("meta"):  # shapes only: no memory, no time
        model = model_class(**{**arch.transformer, **arch.depth})
    assert model.config.num_attention_heads * model.config.attention_head_dim == (1536 if arch.kind == "sd3"
                                                                                   else 3072)
    blocks = [len(model.transformer_blocks)] + ([len(model.single_transformer_blocks)] if arch.kind == "flux" else [])
    full = [arch.transformer["num_layers"]] + ([arch.transformer["num_single_layers"]] if arch.kind == "flux" else [])
    for built, of in zip(blocks, full):
        assert f"{built} of {of}" in arch.note
    assert blocks != full


def test_an_unknown_arch_names_the_transformer_ones(capsys):
    from sdopt.app.cli import main

    assert main(["compress", "--model", "arch:sd4", "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert "arch:sd35m" in err and "arch:flux" in err
