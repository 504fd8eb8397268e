"""One module per CLI command group; each exposes ``register(app)`` and keeps heavy imports inside."""
