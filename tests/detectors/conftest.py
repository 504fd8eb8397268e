"""Shared fixtures: every registered detector, imported once."""
from __future__ import annotations

import detectors.rates
import detectors.univariate  # noqa: F401  (registers the univariate detectors)
