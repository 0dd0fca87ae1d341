#!/usr/bin/env python3
"""Asks a real Prometheus every query of a Grafana dashboard, as Grafana would, and fails
unless each returns at least one series (for .ci/dashboard-check).

    prometheus_queries.py PROMETHEUS_URL DASHBOARD.json --namespace NS [--within SECONDS]

Grafana's variables are given the values a user would pick: `$namespace` the scrape's
namespace label, `$pod` "All" (`.*`), `$__rate_interval` four scrape intervals. A query is
asked again until it returns a series or the time is up (a rate needs two scrapes).
Expressions are found by helm/integration-hub/ci/dashboard_check.py (panels and variables).
"""

import argparse
import json
import os
import sys
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "helm", "integration-hub", "ci"))
from dashboard_check import expressions  # noqa: E402


def substitute(expr, namespace):
    for name, value in (
        ("${namespace}", namespace), ("$namespace", namespace),
        ("${pod}", ".*"), ("$pod", ".*"),
        ("${__rate_interval}", "4s"), ("$__rate_interval", "4s"),
    ):
        expr = expr.replace(name, value)
    return expr


def query(base, expr):
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as response:
        answer = json.load(response)
    if answer.get("status") != "success":
        raise RuntimeError(f"{answer.get('errorType')}: {answer.get('error')}")
    return answer["data"]["result"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("prometheus")
    ap.add_argument("dashboard")
    ap.add_argument("--namespace", required=True)
    ap.add_argument("--within", type=float, default=60)
    args = ap.parse_args()
    with open(args.dashboard, encoding="utf-8") as f:
        dashboard = json.load(f)
    pending = [(where, substitute(expr, args.namespace)) for where, expr in expressions(dashboard)]
    if not pending:
        sys.exit("the dashboard has no PromQL expression")
    total, deadline, errors = len(pending), time.monotonic() + args.within, {}
    while pending and time.monotonic() < deadline:
        still = []
        for where, expr in pending:
            try:
                result = query(args.prometheus, expr)
            except Exception as err:  # a bad query stays bad: report it at the end
                errors[where] = f"{err}"
                still.append((where, expr))
                continue
            if result:
                value = result[0].get("value", ["", ""])[1]
                print(f"{len(result)} series (first {value}): {where}: {expr}")
            else:
                still.append((where, expr))
        pending = still
        if pending:
            time.sleep(1)
    for where, expr in pending:
        why = errors.get(where, "no series")
        print(f"FAILED: {where}: {why}: {expr}", file=sys.stderr)
    if pending:
        return 1
    print(f"every one of the dashboard's {total} queries returned a series from Prometheus")
    return 0


if __name__ == "__main__":
    sys.exit(main())
