"""Deterministic simulation: seeded, virtual-time, in-process, replayable from a seed.

Two parts. PBFT-lite replicas and notary clusters on their pure cores with a seeded message
network and byzantine behaviours (`world.py`, `runner.py`, `byzantine.py`, `script.py`). And
whole networks of production nodes — `runtime.Node` with its servicers, roles, drivers and
sqlite stores, and SDK clients — with only the transport, the clock, the threads and the
randomness swapped (`vloop.py`, `wire.py`, `grpc_client.py`, `grpc_server.py`, `hosts.py`,
`deployment.py`), running the scenarios of `scenarios/`. See docs/simulation.md.

Nothing here reads a wall clock; one seeded `random.Random` per run drives every choice.
"""
