"""Suite-wide fixtures. Subsystem fixtures that start real servers live in tests/support/."""
