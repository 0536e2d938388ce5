"""Benchmarks on the simulator: scenarios of (load, task, arrival) cells, every policy side by side.

`scenarios` says what runs and runs it, `report` turns the outcomes into a
table, `results/bench.json` and plots, `cli` is `inframind bench`.
Benchmarks are not tests: nothing here asserts a number.
"""
