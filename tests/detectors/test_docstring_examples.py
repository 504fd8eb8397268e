"""The examples in the public docstrings run and show what they claim."""
from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["detectors.drift", "detectors.univariate.bocpd", "detectors.rates", "detectors.evaluation.nab", "detectors.univariate.robust_z",
           "detectors.univariate.ewma", "detectors.univariate.cusum", "detectors.univariate.surprise",
           "detectors.univariate.seasonal", "detectors.univariate.spectral",
           "detectors.univariate.likelihood", "detectors.univariate.context", "detectors.univariate.art",
           "detectors.univariate.art_context", "detectors.univariate.trend"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    mod = importlib.import_module(name)
    res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert res.failed == 0
