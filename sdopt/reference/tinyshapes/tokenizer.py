"""A small CLIP-compatible byte-level BPE tokenizer for the tiny-shapes grammar.

Vocabulary layout follows OpenAI CLIP: the 256 byte-level symbols, the same
256 symbols with the end-of-word marker ``</w>``, the merge results, then
``<|startoftext|>`` and ``<|endoftext|>``.  The merges are learned (plain BPE)
on the grammar's words until every word is one token, so grammar captions
tokenise to one token per word, and any other text falls back to byte-level
pieces (never to ``unk``).

``write_tokenizer(dir)`` writes vocab.json, merges.txt, tokenizer.json,
tokenizer_config.json and special_tokens_map.json; the folder loads with
``transformers.CLIPTokenizer.from_pretrained`` (max length 77, padding with
``<|endoftext|>`` like Stable Diffusion v1).
"""

from __future__ import annotations

import json
import os
from collections import Counter

from sdopt.contract.tokenizer_files import write_vocab_files
from sdopt.reference.tinyshapes.grammar import vocabulary_words

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
MODEL_MAX_LENGTH = 77
EOW = "</w>"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2 / CLIP byte -> printable unicode character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def learn_merges(words) -> list[tuple[str, str]]:
    """Plain BPE on a word list (each word once) until every word is a single symbol."""
    b2u = bytes_to_unicode()
    seqs = []
    for w in words:
        syms = [b2u[b] for b in w.encode("utf-8")]
        syms[-1] = syms[-1] + EOW
        seqs.append(syms)
    merges: list[tuple[str, str]] = []
    while True:
        pairs: Counter = Counter()
        for s in seqs:
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += 1
        if not pairs:
            return merges
        # most frequent pair; ties broken deterministically (lexicographic)
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged = best[0] + best[1]
        new = []
        for s in seqs:
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == best:
                    out.append(merged)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            new.append(out)
        seqs = new


def build_vocab(words=None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    words = list(vocabulary_words() if words is None else words)
    merges = learn_merges(words)
    symbols = list(bytes_to_unicode().values())
    vocab_list = symbols + [s + EOW for s in symbols]
    for a, b in merges:
        if a + b not in vocab_list:
            vocab_list.append(a + b)
    vocab_list += [BOS, EOS]
    return {t: i for i, t in enumerate(vocab_list)}, merges


def make_tokenizer(words=None, max_length: int = MODEL_MAX_LENGTH):
    """A transformers CLIP tokenizer built in memory."""
    from sdopt.contract.tokenizer_files import clip_tokenizer

    vocab, merges = build_vocab(words)
    return clip_tokenizer(vocab, merges, model_max_length=max_length)


def write_tokenizer(directory: str, words=None, max_length: int = MODEL_MAX_LENGTH) -> dict:
    """Write the tokenizer files into ``directory`` (padding to `max_length` tokens); returns {bos, eos, pad,
    vocab_size} ids."""
    os.makedirs(directory, exist_ok=True)
    vocab, merges = build_vocab(words)
    tok = make_tokenizer(words, max_length)
    tok.save_pretrained(directory)
    write_vocab_files(directory, vocab, merges)  # classic CLIP files (save_pretrained of a fast one may skip them)
    cfg_path = os.path.join(directory, "tokenizer_config.json")
    with open(cfg_path, encoding="utf-8") as f:
        cfg = json.load(f)
    cfg.update({
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": max_length,
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": EOS,
        "unk_token": EOS,
        "do_lower_case": True,
        "errors": "replace",
    })
    with open(cfg_path, "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2, ensure_ascii=False)
    with open(os.path.join(directory, "special_tokens_map.json"), "w", encoding="utf-8") as f:
        json.dump({"bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "unk_token": EOS}, f, indent=2)
    return {"bos": vocab[BOS], "eos": vocab[EOS], "pad": vocab[EOS], "vocab_size": len(vocab)}


__all__ = ["write_tokenizer", "make_tokenizer", "build_vocab", "learn_merges", "bytes_to_unicode",
           "BOS", "EOS", "MODEL_MAX_LENGTH"]
