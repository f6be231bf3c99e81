"""Storage adapters: the ledger of one node on one channel."""
