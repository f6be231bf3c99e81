"""Private payloads (Tessera style): the envelope scheme and private execution, pure."""
