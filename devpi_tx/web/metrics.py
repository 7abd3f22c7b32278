# -*- test-case-name: tests.web.test_metrics,tests.service.test_options -*-
"""
Counters of one server process in the Prometheus text format: requests by
route and status, a latency histogram, upstream fetches, cache hits, serials.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Iterable

from devpi_tx.web.paths import OTHER, parse_path

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Label values come from fixed sets only: a request must not be able to add a
# series (every /+junkN would) or put its own bytes into the text format.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PUSH"})


def route_of(method: bytes, path: bytes) -> str:
    """A route name for a request path, one of L{ROUTES}."""
    return parse_path(path).route


def method_of(method: bytes) -> str:
    """The method as a label value, one of L{METHODS} or C{other}."""
    name = method.decode("ascii", "replace")
    return name if name in METHODS else OTHER


def escape_label(value: str) -> str:
    """A label value for the text format: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


class Metrics:
    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, int | str]] = Counter()
        self.buckets = [0] * (len(BUCKETS) + 1)
        self.latency_sum = 0.0
        self.latency_count = 0

    def observe(self, method: bytes, path: bytes, code: int | str, seconds: float) -> None:
        """C{code}: the status sent, or C{"aborted"} for an answer cut off after its status."""
        self.requests[(method_of(method), route_of(method, path), code)] += 1
        self.buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.latency_sum += seconds
        self.latency_count += 1

    def render(self, gauges: Iterable[tuple[str, str, str, float]]) -> bytes:
        """The text exposition format; C{gauges}: (name, type, help, value)."""
        out = [
            "# HELP devpi_tx_requests_total HTTP requests by method, route and status.",
            "# TYPE devpi_tx_requests_total counter",
        ]
        for (method, route, code), count in sorted(
            self.requests.items(), key=lambda item: (item[0][0], item[0][1], str(item[0][2]))
        ):
            labels = f'method="{escape_label(method)}",route="{escape_label(route)}",status="{code}"'
            out.append(f"devpi_tx_requests_total{{{labels}}} {count}")
        out += [
            "# HELP devpi_tx_request_seconds Time to answer a request.",
            "# TYPE devpi_tx_request_seconds histogram",
        ]
        total = 0
        for bound, count in zip((*BUCKETS, float("inf")), self.buckets, strict=True):
            total += count
            le = "+Inf" if bound == float("inf") else repr(bound)
            out.append(f'devpi_tx_request_seconds_bucket{{le="{le}"}} {total}')
        out.append(f"devpi_tx_request_seconds_sum {self.latency_sum}")
        out.append(f"devpi_tx_request_seconds_count {self.latency_count}")
        for name, kind, help_text, value in gauges:
            out += [f"# HELP {name} {_escape_help(help_text)}", f"# TYPE {name} {kind}", f"{name} {value}"]
        return ("\n".join(out) + "\n").encode("utf-8")


Gauges = Callable[[], Iterable[tuple[str, str, str, float]]]
