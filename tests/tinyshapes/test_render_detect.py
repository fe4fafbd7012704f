import numpy as np

from sdopt.reference.tinyshapes import grammar as g
from sdopt.reference.tinyshapes.detect import detect, matches
from sdopt.reference.tinyshapes.evaluate import alignment
from sdopt.reference.tinyshapes.render import IMAGE_SIZE, render


def test_render_shape_and_determinism():
    im = render("a small red circle in the top left", seed=5)
    assert im.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and im.dtype == np.uint8
    assert np.array_equal(im, render("a small red circle in the top left", seed=5))
    assert not np.array_equal(im, render("a small red circle in the top left", seed=6))


def test_parse_render_detect_round_trip():
    for caption in g.TRAIN_CAPTIONS[::7] + g.HELDOUT_CAPTIONS:
        assert detect(render(caption, seed=11)) == g.parse(caption)


def test_detector_accuracy_on_renders():
    pairs = g.sample_pairs(500, seed=123) + g.heldout_pairs(100)
    ok = sum(all(matches(c, render(c, s)).values()) for c, s in pairs)
    assert ok / len(pairs) >= 0.99


def test_detector_other_sizes_and_empty():
    c = "a large purple triangle in the bottom right"
    assert detect(render(c, seed=1, size=64)) == g.parse(c)
    empty = np.full((32, 32, 3), 30, dtype=np.uint8)
    assert set(detect(empty).values()) == {None}
    assert not any(matches(c, empty).values())


def test_alignment_helper():
    pairs = g.heldout_pairs(40)
    caps = [c for c, _ in pairs]
    imgs = [render(c, s) for c, s in pairs]
    res = alignment(caps, imgs)
    assert res["alignment"] == 1.0 and res["n"] == 40
    assert set(res["per_attribute"]) == set(g.ATTRIBUTES)
    # float images in [0, 1] are accepted; a wrong image lowers the score
    res = alignment(caps[:2], [imgs[0] / 255.0, imgs[0]])
    assert res["alignment"] == (1.0 if g.parse(caps[0]) == g.parse(caps[1]) else 0.5)
