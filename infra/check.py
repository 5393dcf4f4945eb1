"""The checks of infra/check.sh that promtool cannot do alone (Python 3 standard library only).

  check.py names        the metric names the dashboard and the alerts use, one a line
  check.py promql       every dashboard query as a recording rule, for `promtool check rules`
  check.py lint         the dashboard's structure; a firing and a quiet test for every alert;
                        every metric name is one the gateway exports (shared/core/src/telemetry.rs)

The YAML reader knows the subset alerts.yml and alerts.test.yml are written in:
`key: value` lines, list items, and `|` / `>` blocks for long expressions.
"""

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ALERTS = HERE / "prometheus" / "alerts.yml"
TESTS = HERE / "prometheus" / "alerts.test.yml"
DASHBOARD = HERE / "grafana" / "oblivious.json"
TELEMETRY = HERE.parent / "shared" / "core" / "src" / "telemetry.rs"
# Exported besides telemetry.rs's names: the process collector's, and Prometheus's own `up`.
OTHER_NAMES = {"process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds", "up"}

errors = []


def fail(msg):
    errors.append(msg)


def unquote(v):
    v = v.strip()
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
        return v[1:-1]
    return v


def rules(path=ALERTS):
    """The alerting rules as dicts: alert, expr, for, labels, annotations."""
    out, rule, section = [], None, None
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = re.match(r"^(\s*)- (alert|record): (.*)$", line)
        if m:
            rule = {"kind": m.group(2), "name": unquote(m.group(3)), "labels": {}, "annotations": {}}
            rule["indent"] = len(m.group(1)) + 2
            out.append(rule)
            section = None
            continue
        m = re.match(r"^(\s*)([A-Za-z_]+):\s*(.*)$", line)
        if not (m and rule):
            continue
        indent, key, value = len(m.group(1)), m.group(2), m.group(3)
        if value in ("|", "|-", ">", ">-"):  # a block: the lines indented deeper
            block = []
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                block.append(lines[i].strip())
                i += 1
            value = " ".join(b for b in block if b)
        if indent == rule["indent"]:
            section = key if key in ("labels", "annotations") else None
            if not section:
                rule[key] = unquote(value)
        elif indent > rule["indent"] and section:
            rule[section][key] = unquote(value)
        elif indent < rule["indent"]:
            rule = None
    return out


def tested_cases(path=TESTS):
    """alertname → the kinds of cases its tests have ("fires", "quiet")."""
    cases, name = {}, None
    for line in path.read_text().splitlines():
        m = re.match(r"^\s*(?:- )?alertname:\s*(\S+)", line)
        if m:
            name = unquote(m.group(1))
        m = re.match(r"^\s*exp_alerts:\s*(.*?)\s*(#.*)?$", line)
        if m and name:
            cases.setdefault(name, set()).add("quiet" if m.group(1) == "[]" else "fires")
            name = None
    return cases


def panels(dash):
    for p in dash.get("panels", []):
        yield p
        yield from p.get("panels", [])  # a collapsed row holds its panels


def dashboard_queries(dash):
    """(where, PromQL) for every panel target and query variable."""
    for p in panels(dash):
        for t in p.get("targets", []):
            yield f'panel {p.get("id")} "{p.get("title")}" {t.get("refId")}', t.get("expr", "")
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", q)
        if m:
            yield f'variable "{v["name"]}"', m.group(1)
        elif not re.fullmatch(r"\s*label_values\(\s*\w+\s*\)\s*", q):
            fail(f'variable "{v["name"]}": a query other than label_values(...): {q!r}')


def as_promql(expr):
    """A Grafana query as plain PromQL: its interval variables as durations."""
    return re.sub(r"\$\{?__(rate_interval|interval|range)\}?", "5m", expr)


KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
            "offset", "inf", "nan", "start", "end"}


def metric_names(expr):
    """The metric names in a PromQL expression (without a full parser: strings,
    label matchers, ranges and grouping lists are removed, then what remains an
    identifier not called as a function or aggregation is a metric name)."""
    s = re.sub(r'"(\\.|[^"\\])*"|\'(\\.|[^\'\\])*\'|`[^`]*`', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.$])([A-Za-z_:][A-Za-z0-9_:]*)\b(\s*\()?", s):
        if not m.group(2) and m.group(1).lower() not in KEYWORDS:
            names.add(m.group(1))
    return names


def all_names():
    dash = json.loads(DASHBOARD.read_text())
    names = set()
    for _, q in dashboard_queries(dash):
        names |= metric_names(as_promql(q))
    for r in rules():
        names |= metric_names(r.get("expr", ""))
    return names


def exported():
    consts = set(re.findall(r'pub const \w+: &str = "([a-z_:]+)";', TELEMETRY.read_text()))
    if not consts:
        fail(f"no metric names found in {TELEMETRY}")
    return consts | OTHER_NAMES


def is_exported(name, known):
    if name in known:
        return True
    m = re.fullmatch(r"(.+)_(bucket|sum|count)", name)  # a histogram's series
    return bool(m) and m.group(1) in known and not m.group(1).endswith("_total")


def lint():
    dash = json.loads(DASHBOARD.read_text())
    ds = {"type": "prometheus", "uid": "${datasource}"}
    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    if variables.get("datasource", {}).get("type") != "datasource" or variables["datasource"].get("query") != "prometheus":
        fail("the dashboard needs a Prometheus datasource variable named `datasource`")
    if not 36 <= dash.get("schemaVersion", 0) <= 41:
        fail(f'schemaVersion {dash.get("schemaVersion")}: expected ~39')
    ids = [p.get("id") for p in panels(dash)]
    if len(ids) != len(set(ids)) or None in ids:
        fail(f"panel ids must be present and unique: {ids}")
    for p in panels(dash):
        where = f'panel {p.get("id")} "{p.get("title")}"'
        g = p.get("gridPos", {})
        if not (set(g) >= {"h", "w", "x", "y"} and g["x"] + g["w"] <= 24):
            fail(f"{where}: gridPos {g}")
        if p.get("type") == "row":
            continue
        if p.get("datasource") != ds:
            fail(f"{where}: datasource {p.get('datasource')} (want {ds})")
        targets = p.get("targets") or []
        if not targets:
            fail(f"{where}: no targets")
        refs = [t.get("refId") for t in targets]
        if len(refs) != len(set(refs)):
            fail(f"{where}: refIds repeat: {refs}")
        for t in targets:
            if not t.get("expr", "").strip():
                fail(f"{where} {t.get('refId')}: no expr")
            if t.get("datasource") != ds:
                fail(f"{where} {t.get('refId')}: datasource {t.get('datasource')}")

    cases = tested_cases()
    seen = set()
    for r in rules():
        if r["kind"] != "alert":
            continue
        name = r["name"]
        for key in ("expr", "for"):
            if not r.get(key):
                fail(f"alert {name}: no `{key}:`")
        if r["labels"].get("severity") not in ("critical", "warning", "info"):
            fail(f"alert {name}: severity {r['labels'].get('severity')!r} (critical, warning or info)")
        for key in ("summary", "description"):
            if not r["annotations"].get(key):
                fail(f"alert {name}: no {key} annotation")
        if name not in seen:
            seen.add(name)
            for case in sorted({"fires", "quiet"} - cases.get(name, set())):
                fail(f"alert {name}: alerts.test.yml has no case where it {case.replace('quiet', 'stays quiet')}")
    if not seen:
        fail(f"no alerts read from {ALERTS}")
    for name in sorted(set(cases) - seen):
        fail(f"alerts.test.yml tests {name}, which alerts.yml does not define")

    known = exported()
    for name in sorted(all_names()):
        if not is_exported(name, known):
            fail(f"{name} is not a metric the gateway exports (shared/core/src/telemetry.rs)")


def promql_rules():
    """A rule file with each dashboard query as a recording rule."""
    dash = json.loads(DASHBOARD.read_text())
    print("# generated by infra/check.py: the dashboard's queries, for `promtool check rules`")
    print("groups:\n  - name: dashboard\n    rules:")
    for n, (where, q) in enumerate(dashboard_queries(dash)):
        print(f"      # {where}")
        print(f"      - record: dashboard:query:{n}")
        print(f"        expr: {json.dumps(as_promql(q))}")


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "names":
        print("\n".join(sorted(all_names())))
    elif cmd == "promql":
        promql_rules()
    elif cmd == "lint":
        lint()
    else:
        sys.exit(__doc__)
    for e in errors:
        print(f"infra: {e}", file=sys.stderr)
    sys.exit(1 if errors else 0)
