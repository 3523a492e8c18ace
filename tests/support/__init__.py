"""Helpers shared by the test suite: live servers on loopback, polling with a deadline."""
