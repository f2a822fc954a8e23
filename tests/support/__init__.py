"""Helpers shared by the test suite: polling with a deadline, free ports, real-server fixtures."""
