"""The daemon's Prometheus endpoint (`--metrics-listen`), read as a test reads it."""

from __future__ import annotations

import urllib.request


def scrape(port: int) -> dict[str, float]:
    """Every sample of http://127.0.0.1:`port`/metrics, by series with its labels."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def sample(samples: dict[str, float], name: str, **labels: str) -> float:
    """The value of the series `name` whose labels include `labels` (0 when absent)."""
    for key, value in samples.items():
        series, _, rest = key.partition("{")
        if series == name and all(f'{k}="{v}"' in rest for k, v in labels.items()):
            return value
    return 0.0
