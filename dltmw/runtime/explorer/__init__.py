"""The explorer: a read-only web page of a node's ledgers, served by its operations endpoint.

`api.py` answers the JSON API and serves the static page (`static/`: HTML, JS and CSS shipped in
the package, no build step, nothing fetched from elsewhere); `view.py` turns ledger bytes into
what the page shows. docs/operations.md describes the routes and who may read them.
"""
