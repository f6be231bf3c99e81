"""The `dltmw` command line."""
