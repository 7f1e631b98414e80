"""Fixtures shared by the integration tests: the tiny random text-conditional pipeline (built once per module)."""

import pytest

from pipelines import VideoPipeline
from tests.helpers.tiny_pipeline import make_tiny_pipeline


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_pipeline(tmp_path_factory.mktemp("pipe"))


@pytest.fixture(scope="module")
def pipe(model_dir):
    return VideoPipeline.from_pretrained(model_dir)
