"""Guidance as a strategy of its own: the kind chosen from the artifact, each kind's batch and combination."""

import numpy as np

from sdopt.contract.sampling import guidance_embedding
from sdopt.runtime.guidance import ClassifierFree, Embedded, Unguided, choose


def test_the_kind_follows_the_denoiser_spec_and_the_scale():
    assert type(choose(7.5)) is ClassifierFree and choose(7.5).branches == 2
    assert type(choose(1.0)) is Unguided and choose(1.0).branches == 1  # the positive prompt alone
    embedded = choose(7.5, "embedded", 256)
    assert type(embedded) is Embedded and embedded.branches == 1 and embedded.dim == 256
    assert type(choose(7.5, "none")) is Unguided


def test_the_runtime_reads_the_kind_from_the_manifest(tiny_fp32):
    from sdopt.runtime.pipeline import Pipeline

    pipe = Pipeline(tiny_fp32)
    assert pipe.manifest["pipeline"]["denoiser"]["guidance"] == "classifier-free"
    assert type(pipe.guidance(5.0)) is ClassifierFree


def test_each_kind_combines_and_conditions_as_it_should():
    rng = np.random.default_rng(0)
    out = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(ClassifierFree(3.0).combine(out), out[:1] + np.float32(3.0) * (out[1:] - out[:1]))
    np.testing.assert_array_equal(Unguided(1.0).combine(out[:1]), out[:1])
    (name, value), = Embedded(4.0, 16).conditioning(1).items()
    assert name == "timestep_cond" and np.array_equal(value, guidance_embedding([4.0], 16))
    assert ClassifierFree(3.0).conditioning(2) == {}
