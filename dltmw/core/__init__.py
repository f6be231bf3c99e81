"""The pure core of dltmw: every decision the system makes, with no I/O.

Nothing in this package reads a clock, draws randomness, opens a file or socket, or awaits:
time arrives as ticks or as a `now` argument, and randomness is injected. That is what lets the
same code run inside a node process and inside the deterministic simulator, and it is enforced
by `tests/unit/test_layering.py`.
"""
