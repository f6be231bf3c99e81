"""Notarised UTXO (Corda style): the transaction model, the built-in contracts and verification."""
