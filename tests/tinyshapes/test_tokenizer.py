from sdopt.reference.tinyshapes import grammar as g
from sdopt.reference.tinyshapes.tokenizer import write_tokenizer


def test_tokenizer_files_load_with_clip_tokenizer(tmp_path):
    from transformers import CLIPTokenizer

    ids = write_tokenizer(str(tmp_path))
    for name in ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / name).exists()
    tok = CLIPTokenizer.from_pretrained(str(tmp_path))
    assert tok.model_max_length == 77
    enc = tok("a small red circle in the top left", padding="max_length", max_length=77, truncation=True)
    assert len(enc.input_ids) == 77
    assert enc.input_ids[0] == ids["bos"] and enc.input_ids[9] == ids["eos"] == enc.input_ids[-1]
    # every grammar word is one token
    for caption in g.TRAIN_CAPTIONS[:20]:
        assert len(tok(caption).input_ids) == len(caption.split()) + 2
    # byte-level fallback: arbitrary text encodes without unknown tokens and decodes back
    other = tok("zebra 42 ünïcode!").input_ids
    assert ids["eos"] not in other[1:-1]
    assert tok.decode(other, skip_special_tokens=True).replace(" ", "") == "zebra42ünïcode!"
