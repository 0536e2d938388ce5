"""Helpers shared by tests: local servers, processes, kubectl."""
