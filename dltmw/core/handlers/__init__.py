"""Consensus handlers: one interface, chosen per channel (DESIGN section 5).

Each handler is a sans-I/O state machine implementing the one core contract
(`dltmw.core.effects`): inputs arrive through `step(message)` and `tick(now)`; outputs are
collected with `ready()` as one `Effects` record that the driver MUST execute in order —
persist, then apply what was decided, then send, then reply (etcd raft's Ready contract) — so
nobody ever hears of a decision that a crash could undo.
"""
