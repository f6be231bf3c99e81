"""Generated stubs of the dltmw.v1 wire contract."""
