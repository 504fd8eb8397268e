"""Remediation: actions (clamp, rollback, restart, ...), executors, the safety policy and verification.

Actions fix what diagnosis chose; they never choose. The model registry (``remediation.registry``) gives
rollback an atomic pointer swap; ``remediation.clamp`` repairs weights against the known-good version.
"""
