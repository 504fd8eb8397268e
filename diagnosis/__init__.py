"""Evidence, the rules engine and rule packs, fault localization and the incident lifecycle. Executes nothing."""
