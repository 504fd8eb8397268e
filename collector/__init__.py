"""What runs beside a model server: instrumentation, the sidecar loop, signal computation, exporters.

Nothing here decides anything about incidents; it measures and ships.
"""
