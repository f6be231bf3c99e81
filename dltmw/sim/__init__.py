"""Deterministic simulation of PBFT-lite: real cores, seeded network, byzantine replicas.

Nothing here reads a wall clock; one seeded `random.Random` per run drives every choice.
"""
