"""Where detection reads metrics from: the embedded store or Prometheus, behind one interface."""
