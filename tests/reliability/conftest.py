"""Fixtures of the reliability suite (helpers: reliability_helpers.py)."""

import shutil

import pytest


@pytest.fixture
def artifact_copy(tiny_fp32, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_fp32, copy)
    return copy


@pytest.fixture
def png(tmp_path):
    return tmp_path / "out.png"
