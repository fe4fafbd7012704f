"""The tiny-scenes detector reads every render back exactly; alignment scores binding and relation errors
as such."""
import numpy as np
import pytest

from sdopt.reference.tinyscenes import grammar as g
from sdopt.reference.tinyscenes.detect import detect
from sdopt.reference.tinyscenes.evaluate import alignment, score
from sdopt.reference.tinyscenes.render import background, render


@pytest.mark.parametrize("size", [32, 64])
def test_detector_reads_renders_exactly(size):
    pairs = g.sample_pairs(1200, 11)[: 1200 if size == 32 else 200] + g.heldout_pairs(800 if size == 32 else 100)
    wrong = [(c, s) for c, s in pairs if detect(render(c, s, size)) != g.parse(c)]
    assert not wrong, wrong[:5]


def test_render_is_deterministic_and_backgrounds_differ():
    caption = "a small green diamond above a large yellow circle on a two-tone background"
    assert np.array_equal(render(caption, 5), render(caption, 5)) and not np.array_equal(render(caption, 5),
                                                                                         render(caption, 6))
    assert detect(background("two-tone")) is None and detect(background("plain")) is None


def test_scores_name_the_error():
    want = "a large red circle left of a small blue square"
    assert score(want, render(want, 1))["scene"] == 1.0
    colours_swapped = score(want, render("a large blue circle left of a small red square", 1))
    assert colours_swapped["binding_error"] == 1.0 and colours_swapped["color"] == 0.0
    assert colours_swapped["shape"] == colours_swapped["relation"] == 1.0
    order_swapped = score(want, render("a small blue square left of a large red circle", 1))
    assert score(want, render("a large red circle above a small blue square", 1))["relation"] == 0.0
    assert order_swapped["relation"] == 0.0 and order_swapped["binding_error"] == 0.0
    assert order_swapped["color"] == order_swapped["shape"] == order_swapped["size"] == 1.0
    one_missing = score(want, render("a large red circle", 1))
    assert one_missing["count"] == 0.0 and one_missing["color"] == 0.5
    result = alignment([want] * 2, [render(want, 1), render("a large blue circle left of a small red square", 1)])
    assert result["alignment"] == 0.5 and result["binding_error"] == 0.5 and result["per_attribute"]["count"] == 1.0
