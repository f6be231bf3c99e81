"""`python -m benchmarks.limits`: this machine's signature, gRPC and sqlite rates on their own.

The probe itself is `dltmw.bench.limits` (installed with the package, so every `dltmw bench` runs
it in the same run); this entry point prints it alone, with the bounds it implies for the default
benchmark network.
"""

from dltmw.bench.limits import main

if __name__ == "__main__":
    main()
