"""`python -m dltmw ...`: the same command line as the `dltmw` console script."""

from dltmw.cli.main import main

main()
