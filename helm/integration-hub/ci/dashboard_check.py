#!/usr/bin/env python3
"""Checks that every PromQL expression of a Grafana dashboard names only metrics a scrape of
the real service exported.

    dashboard_check.py SCRAPE DASHBOARD.json [--expect-failure]

SCRAPE is a /metrics page in the Prometheus text format. The exported names are the sample
names on it plus the names its `# TYPE` lines imply (a histogram `x` exports `x_bucket`,
`x_sum` and `x_count`). Every panel's `targets[].expr` (rows and nested panels included) and
every query variable's query must name at least one metric, and each name must be exported.
With --expect-failure the exit status is inverted (the self-test on a broken copy).
"""

import json
import re
import sys

IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
# PromQL words that are not metric names when they stand without a following "(".
KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "inf", "nan", "atan2",
}


def exported_names(scrape):
    names = set()
    for line in scrape.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split()
            if len(parts) >= 4 and parts[1] == "TYPE":
                name, kind = parts[2], parts[3]
                names.add(name)
                if kind == "histogram":
                    names.update(f"{name}_{s}" for s in ("bucket", "sum", "count"))
                elif kind == "summary":
                    names.update(f"{name}_{s}" for s in ("sum", "count"))
                elif kind == "counter" and not name.endswith("_total"):
                    names.add(f"{name}_total")
            continue
        match = IDENT.match(line)
        if match:
            names.add(match.group(0))
    return names


def strip_promql(expr):
    """The expression without what never names a metric: strings, label matchers, ranges,
    grouping label lists, Grafana variables and numbers."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', " ", expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", " ", expr)
    expr = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr
    )
    expr = re.sub(r"\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*", " ", expr)
    expr = re.sub(r"\b\d+(\.\d+)?([eE][-+]?\d+)?[smhdwy]?\b", " ", expr)
    return expr


def metric_names(expr):
    stripped = strip_promql(expr)
    names = []
    for match in IDENT.finditer(stripped):
        word = match.group(0)
        rest = stripped[match.end():].lstrip()
        if rest.startswith("(") or word in KEYWORDS:
            continue  # a function, an aggregation or a keyword
        names.append(word)
    return names


def variable_expr(query):
    """The PromQL inside a Grafana Prometheus variable query, or None."""
    if isinstance(query, dict):
        query = query.get("query", "")
    query = (query or "").strip()
    match = re.fullmatch(r"label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)", query, re.S)
    if match:
        return match.group(1)
    match = re.fullmatch(r"(?:query_result|metrics)\((.*)\)", query, re.S)
    if match:
        return match.group(1)
    if re.fullmatch(r"label_values\(\s*[A-Za-z_][A-Za-z0-9_]*\s*\)", query):
        return None  # every series: names no metric
    return query or None


def panels(items):
    for panel in items or []:
        yield panel
        yield from panels(panel.get("panels"))


def expressions(dashboard):
    """(where, expr) for every PromQL expression of the dashboard."""
    for panel in panels(dashboard.get("panels")):
        for target in panel.get("targets") or []:
            expr = target.get("expr")
            if expr is not None:
                where = f'panel "{panel.get("title")}" target {target.get("refId")}'
                yield where, expr
    for variable in (dashboard.get("templating") or {}).get("list") or []:
        if variable.get("type") == "query":
            expr = variable_expr(variable.get("query"))
            if expr is not None:
                yield f'variable "{variable.get("name")}"', expr


def check(scrape, dashboard):
    exported = exported_names(scrape)
    problems, used, count = [], set(), 0
    for where, expr in expressions(dashboard):
        count += 1
        names = metric_names(expr)
        if not names:
            problems.append(f"{where}: names no metric: {expr}")
        for name in names:
            used.add(name)
            if name not in exported:
                problems.append(f"{where}: {name} is not exported by the service: {expr}")
    if count == 0:
        problems.append("the dashboard has no PromQL expression")
    return problems, used, exported, count


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    expect_failure = "--expect-failure" in argv
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(args[0], encoding="utf-8") as f:
        scrape = f.read()
    with open(args[1], encoding="utf-8") as f:
        dashboard = json.load(f)
    problems, used, exported, count = check(scrape, dashboard)
    if expect_failure:
        if problems:
            print(f"self-test: a broken dashboard fails as it should ({problems[0]})")
            return 0
        print("self-test FAILED: a dashboard naming a missing metric passed", file=sys.stderr)
        return 1
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(
        f"{count} expressions name {len(used)} metrics, all exported by the service: "
        + ", ".join(sorted(used))
    )
    # A histogram's own name and its _sum and _count are not series a panel would miss.
    unused = sorted(
        n for n in exported
        if n.startswith("integration_hub_") and n not in used
        and f"{n}_bucket" not in exported and not n.endswith(("_sum", "_count"))
    )
    if unused:
        print("exported but on no panel: " + ", ".join(unused))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
