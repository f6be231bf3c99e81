"""gRPC adapters: servicers, clients, TLS, and the one place errors become statuses."""
