"""The HTTP edge of the service: incidents, webhooks, change events, health and metrics."""
