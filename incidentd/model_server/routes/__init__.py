"""The model server's routes, one module per resource: serving, feedback, ops, admin, faults."""
