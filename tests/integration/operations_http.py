"""Reading a node's operations endpoint in tests (docs/operations.md): plain, blocking HTTP.

Async tests call these only when nothing else of theirs runs on the loop, or through
`asyncio.to_thread`.
"""

from __future__ import annotations

import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def get(address: str, path: str, method: str = "GET", body: bytes | None = None) -> tuple[int, str]:
    """(status, body) of one HTTP request to a node's operations endpoint."""
    request = urllib.request.Request(f"http://{address}{path}", data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(address: str) -> Samples:
    """Every sample of `/metrics`: (name, labels) -> value."""
    status, text = get(address, "/metrics")
    assert status == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series has no sample yet (a counter never incremented)."""
    return samples.get((name, frozenset(labels.items())), 0.0)
