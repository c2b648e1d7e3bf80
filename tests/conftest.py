import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile(
    "thorough", max_examples=400, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

#: Real data beside the project (never inside it); tests skip when absent.
def _shared_data() -> Path:
    """``$STGKERN_SHARED_DATA``, else ``../shared/data`` beside the checkout."""
    env = os.environ.get("STGKERN_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


SHARED_DATA = _shared_data()


def _cupy_device():
    try:
        import cupy
        cupy.cuda.runtime.getDeviceCount()
        return cupy
    except Exception:  # no CuPy, no driver or no device
        return None


@pytest.fixture(scope="session")
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(params=["cpu", pytest.param("gpu", marks=pytest.mark.cuda)])
def xp(request):
    """Array module for the backend under test: numpy, or cupy when a GPU is present."""
    if request.param == "cpu":
        return np
    cupy = _cupy_device()
    if cupy is None:
        pytest.skip("CuPy with a CUDA device is not available")
    return cupy


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


# CUDA fixtures (CuPy device, host emulation of the .cu sources, launch geometries)
from cuda_support import cp, emu, small_blocks  # noqa: E402,F401
