"""``python -m incidentd.model_server``: the ``incidentd model-server`` command (one CLI, two spellings)."""
from __future__ import annotations

from incidentd.model_server.cli import main

if __name__ == "__main__":
    main()
