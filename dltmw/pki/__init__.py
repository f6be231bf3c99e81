"""Certificate authority tooling: creating organisation CAs and issuing member certificates.

This lives outside `dltmw.core` because issuing draws randomness (keys, serial numbers) and reads
the clock; checking what was issued is pure and lives in `dltmw.core.identity`.
"""
