"""Streaming univariate detectors; importing this package registers all of them."""
from detectors.univariate.art import FuzzyART
from detectors.univariate.art_context import ArtContext
from detectors.univariate.bocpd import BOCPD
from detectors.univariate.context import ContextNovelty
from detectors.univariate.cusum import CUSUM, PageHinkley
from detectors.univariate.ewma import EWMA
from detectors.univariate.likelihood import AnomalyLikelihood
from detectors.univariate.robust_z import RobustZ
from detectors.univariate.seasonal import Seasonal
from detectors.univariate.spectral import SpectralResidual
from detectors.univariate.surprise import Surprise
from detectors.univariate.trend import TheilSen

__all__ = ["BOCPD", "CUSUM", "ArtContext", "ContextNovelty", "FuzzyART", "DEFAULT_DETECTOR", "EWMA", "AnomalyLikelihood", "PageHinkley", "RobustZ", "Seasonal", "SpectralResidual", "Surprise",
           "TheilSen"]

# The detector `incidentd backtest` uses when none is named (NAB: 70.8 standard under NAB's protocol;
# docs/detectors.md). The service picks its own detectors per signal (diagnosis/signals.py).
DEFAULT_DETECTOR = "context"
