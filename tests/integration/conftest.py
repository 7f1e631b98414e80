"""Fixtures shared by the integration tests: the tiny random text-conditional pipeline (built once per module) and
the tiny training cache (once per test process)."""

import pytest

from pipelines import VideoPipeline
from tests.helpers.tiny_pipeline import make_tiny_pipeline
from tests.helpers.train_runs import make_train_data


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_pipeline(tmp_path_factory.mktemp("pipe"))


@pytest.fixture(scope="module")
def pipe(model_dir):
    return VideoPipeline.from_pretrained(model_dir)


@pytest.fixture(scope="session")
def train_data(tmp_path_factory):
    """The tiny tokenizer and 32-clip token cache that tools/train.py's tests train on (``make_train_data``); runs
    write only under their own ``--out``."""
    return make_train_data(tmp_path_factory.mktemp("train"))
