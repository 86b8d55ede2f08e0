import pathlib

import pytest

GOLDEN = pathlib.Path(__file__).resolve().parents[2] / "core" / "tests" / "golden"


@pytest.fixture
def golden_dir() -> pathlib.Path:
    return GOLDEN

pytest_plugins = ["pytester"]
