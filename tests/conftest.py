import os

# pytest-xdist runs one worker per core (pyproject's addopts): each worker, and every process a test starts, then
# keeps to one thread, as OpenMP threads that outnumber the cores starve each other
XDIST_WORKER = bool(os.environ.get("PYTEST_XDIST_WORKER"))
if XDIST_WORKER:
    os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

import inceptionnext  # noqa: E402,F401  (registers the models with timm)

torch.set_num_threads(1 if XDIST_WORKER else max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
