"""CLIP tokenizers built in memory and saved for other tools, the same under transformers 4.57+ and 5.x.

transformers 5 builds its (tokenizers-backed) `CLIPTokenizer` from a vocabulary and merges in memory; 4.x
builds `CLIPTokenizerFast` from vocab.json and merges.txt files, and loads folders as the slow, pure-Python
`CLIPTokenizer`, which has no `backend_tokenizer`.
"""

from __future__ import annotations

import inspect
import json
import tempfile
from pathlib import Path


def write_vocab_files(folder: Path, vocab: dict[str, int], merges: list[tuple[str, str]]) -> None:
    """vocab.json and merges.txt, as CLIP's own tokenizer folders hold them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
                                       encoding="utf-8")


def clip_tokenizer(vocab: dict[str, int], merges: list[tuple[str, str]], **options):
    """A fast (tokenizers-backed) transformers CLIP tokenizer; `options` as CLIPTokenizer takes them."""
    from transformers import CLIPTokenizer

    if "vocab" in inspect.signature(CLIPTokenizer.__init__).parameters:  # transformers 5
        return CLIPTokenizer(vocab=vocab, merges=merges, **options)
    from transformers import CLIPTokenizerFast

    with tempfile.TemporaryDirectory() as folder:
        write_vocab_files(Path(folder), vocab, merges)
        return CLIPTokenizerFast(vocab_file=f"{folder}/vocab.json", merges_file=f"{folder}/merges.txt", **options)


def backend_tokenizer(tokenizer):
    """The `tokenizers.Tokenizer` behind a transformers tokenizer, converted from a slow one if need be."""
    if hasattr(tokenizer, "backend_tokenizer"):
        return tokenizer.backend_tokenizer
    from transformers.convert_slow_tokenizer import convert_slow_tokenizer

    return convert_slow_tokenizer(tokenizer)


T5_SPECIALS = ("<pad>", "</s>", "<unk>")  # T5's ids 0, 1, 2


def t5_tokenizer(pieces: list[tuple[str, float]], **options):
    """A fast transformers T5 tokenizer over a unigram vocabulary (`pieces`: (piece, log-probability), words
    marked with a leading '▁' as sentencepiece does): T5's special tokens, '</s>' after every text, no
    sentencepiece model needed. `options` as T5TokenizerFast takes them."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    vocab = [(token, 0.0) for token in T5_SPECIALS] + [p for p in pieces if p[0] not in T5_SPECIALS]
    backend = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                           special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                           extra_ids=0, **options)
