"""orderer."""
