"""tiny-scenes captions: a scene's caption parses back to it, held-out scenes never reach training, every
caption word is one token."""
import itertools

import pytest

from sdopt.reference.tinyscenes import grammar as g
from sdopt.reference.tinyshapes.tokenizer import make_tokenizer


def test_captions_parse_to_their_scene():
    for scene in g.TRAIN_SCENES[::97] + g.HELDOUT_SCENES[::53] + g.TRAIN_SINGLES[::7]:
        assert g.parse(scene.caption()) == scene
    assert g.parse("A Large Red Circle  left of a small blue square on a two-tone background.") == g.Scene(
        (("large", "red", "circle"), ("small", "blue", "square")), "horizontal", "two-tone")
    assert g.parse("a small cyan diamond above a large white triangle").axis == "vertical"
    for bad in ("a photo of a cat", "a large red circle left of a small red square", "a large red circle above",
                "a large red circle right of a small blue square"):
        with pytest.raises(ValueError):
            g.parse(bad)


def test_heldout_scenes_never_in_training():
    assert len(g.TRAIN_SCENES) + len(g.HELDOUT_SCENES) == 64 * 56 * 2 * 2  # object pairs x axes x backgrounds
    assert not set(g.TRAIN_SCENES) & set(g.HELDOUT_SCENES)
    pairs = g.heldout_pairs(256)
    assert pairs == g.heldout_pairs(256) and g.heldout_pairs(64) == pairs[:64] and len(set(pairs)) == 256
    assert all(g.is_heldout(c) and g.parse(c).axis is not None and s >= g.HELDOUT_SEED_BASE for c, s in pairs)
    assert {c.split()[4] for c, _ in pairs} == {"left", "above"}
    validation = g.validation_pairs(64)
    assert not any(g.is_heldout(c) for c, _ in validation)
    assert all(g.TRAIN_SEED_LIMIT <= s < g.HELDOUT_SEED_BASE for _, s in validation)
    train = g.sample_pairs(3000, 0)
    assert not any(g.is_heldout(c) for c, _ in train)
    assert all(0 <= s < g.TRAIN_SEED_LIMIT for _, s in train)
    singles = sum(g.parse(c).axis is None for c, _ in train) / len(train)
    assert abs(singles - g.ONE_OBJECT_SHARE) < 0.03
    assert g.calibration_prompts(64) == g.calibration_prompts(64) and not any(
        g.is_heldout(c) for c in g.calibration_prompts(64))


def test_heldout_value_pairs_seen_in_training():
    """Held-out scenes are new combinations of seen values: each pair of (object, relation) values occurs
    in training."""
    def facets(scene):
        return [("first",) + scene.objects[0], ("second",) + scene.objects[1], (scene.axis, scene.background)]
    seen = {pair for s in g.TRAIN_SCENES for pair in itertools.combinations(facets(s), 2)}
    assert all(pair in seen for s in g.HELDOUT_SCENES for pair in itertools.combinations(facets(s), 2))


def test_every_caption_word_is_one_token():
    tok = make_tokenizer(g.vocabulary_words())
    caption = "a large red circle left of a small blue square on a two-tone background"
    ids = tok(caption).input_ids
    assert len(ids) == 2 + len(caption.replace("-", " - ").split())
