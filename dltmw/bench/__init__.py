"""The benchmark harness behind `dltmw bench` (issue 6).

It lives inside the installed `dltmw` package, not in the top-level `benchmarks/` folder, so that
`dltmw bench` works the same from a checkout (editable install) and from an installed wheel, and so
that `mypy --strict` (which checks `dltmw` only) covers it. `benchmarks/` keeps the data: the
append-only `RESULTS.md`, the JSON reports and plots, and `python -m benchmarks.limits`.

Modules: `workloads` (what to submit), `driver` (the one place a transaction is submitted and its
commit status awaited), `topology` (the benchmark network), `limits` (this machine's bounds),
`procstats` (CPU and RSS per process), `runner` (one run), `report` (figures, JSON, PNG,
RESULTS.md) and `experiments` (the paper's findings as one command each).
"""
