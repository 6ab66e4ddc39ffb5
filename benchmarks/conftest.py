"""pytest options for the benchmarks: the slow peer cases run only with ``--bench-slow``."""

import pytest


def pytest_addoption(parser):
    parser.addoption("--bench-slow", action="store_true", default=False,
                     help="also run the slow peer benchmarks (numpy.histogramdd on 10M points, "
                          "torch.histogramdd on 10M 3-D points: seconds per call)")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running tests")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--bench-slow"):
        return
    skip = pytest.mark.skip(reason="slow peer benchmark: pass --bench-slow to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
