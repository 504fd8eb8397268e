"""Third-party model servers the demo and the fault bench run on, with their fault hooks (demo and test
code: incidentd's watching and acting code never imports this package)."""
