"""Test-wide setup: offline Hugging Face and seeded RNGs.

A run that collects no test (a typo in ``-k``, a marker that selects nothing) keeps pytest's exit code 5:
"no tests ran" is a failure, never a green run.
"""

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

# Read when huggingface_hub, transformers and deepspeed are first imported, which is after this.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

# Under pytest-xdist (scripts/test.sh runs two workers on CI's 2 cores) every worker and every process it starts
# computes on one thread: two workers with torch's default of one thread per core ran up to 5x slower
# (4 spinning OpenMP threads on 2 cores). A user's own setting wins.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT
