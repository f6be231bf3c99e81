"""The node runtime: configuration, roles, and the drivers that feed cores and execute outputs."""
