import pytest

from sdopt.reference.tinyshapes import grammar as g


def test_sample_captions_deterministic():
    assert g.sample_captions(50, seed=3) == g.sample_captions(50, seed=3)
    assert g.sample_captions(50, seed=3) != g.sample_captions(50, seed=4)
    assert g.sample_pairs(20, 1) == g.sample_pairs(20, 1)


def test_parse_round_trip_all_captions():
    for caption in g.TRAIN_CAPTIONS + g.HELDOUT_CAPTIONS:
        attrs = g.parse(caption)
        assert set(attrs) == set(g.ATTRIBUTES)
        assert any(g.caption_from(attrs, k) == caption for k in range(len(g.TEMPLATES)))
    assert g.parse("  A Large Blue  Diamond at the center. ") == {
        "size": "large", "color": "blue", "shape": "diamond", "position": "center"}
    with pytest.raises(ValueError):
        g.parse("a photo of a cat")


def test_heldout_disjoint_from_training():
    assert len(g.TRAIN_TUPLES) + len(g.HELDOUT_TUPLES) == len(g.ALL_TUPLES) == 320
    assert not set(g.TRAIN_TUPLES) & set(g.HELDOUT_TUPLES)
    assert not set(g.TRAIN_CAPTIONS) & set(g.HELDOUT_CAPTIONS)
    pairs = g.heldout_pairs(256)
    assert len(pairs) == 256 == len(set(pairs))
    assert pairs == g.heldout_pairs(256) and g.heldout_pairs(64) == pairs[:64]
    assert all(g.is_heldout(c) for c, _ in pairs)
    assert all(s >= g.HELDOUT_SEED_BASE for _, s in pairs)
    train = g.sample_pairs(2000, 0)
    assert not any(g.is_heldout(c) for c, _ in train)
    assert all(0 <= s < g.TRAIN_SEED_LIMIT for _, s in train)
    assert not any(g.is_heldout(c) for c in g.sample_captions(2000, 5))
    # every held-out caption is covered by the 256 pairs
    assert {c for c, _ in pairs} == set(g.HELDOUT_CAPTIONS)


def test_heldout_values_seen_in_training():
    # compositional split: every attribute value (and value pair) of a held-out tuple occurs in training
    for a in range(4):
        for b in range(a + 1, 4):
            seen = {(t[a], t[b]) for t in g.TRAIN_TUPLES}
            assert all((t[a], t[b]) in seen for t in g.HELDOUT_TUPLES)


def test_calibration_prompts():
    prompts = g.calibration_prompts(600)
    assert prompts == g.calibration_prompts(600)
    assert len(set(prompts[:len(g.TRAIN_CAPTIONS)])) == len(g.TRAIN_CAPTIONS)
    assert not set(prompts) & set(g.HELDOUT_CAPTIONS)
    assert set(prompts) <= set(g.TRAIN_CAPTIONS)
