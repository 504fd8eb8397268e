"""Statistics only: streaming and batch detectors, drift tests, rate tests, calibration, evaluation.

Nothing here imports the service or touches a network.
"""
