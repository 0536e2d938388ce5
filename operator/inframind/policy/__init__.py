"""Policies: the planner/executor interface, the shared feature encoder, heuristics, runtime."""
