"""Helpers shared by the test suites: the LLM API simulator as a subprocess."""
