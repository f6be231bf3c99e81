"""Consensus handlers: one interface, chosen per channel (DESIGN section 5).

Each handler is a sans-I/O state machine. Inputs arrive through `step(message)` and `tick()`;
outputs are collected with `ready()`, and the driver MUST execute them in the order the `Ready`
record lists them: persist, then send, then reply (etcd raft's Ready contract), so nobody ever
hears of a decision that a crash could undo.
"""
