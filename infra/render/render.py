#!/usr/bin/env python3
"""Renders a Grafana dashboard JSON against a Prometheus as one static HTML page
(Python 3 standard library only; no Grafana, no JavaScript).

    render.py --prometheus http://127.0.0.1:9091 --from 1700000000 --to 1700000180 \\
              [--dashboard infra/grafana/oblivious.json] [--out dashboard.html] \\
              [--scrape-interval 15s] [--rate-interval 1m] [--var job=oblivious] [--width 1600]

`--from`/`--to` take Unix seconds, `now` or `now-15m` (default: the dashboard's
own `time`). For every panel on the dashboard's 24-column `gridPos` grid
(rows become section headers) each target's `expr` is run against the HTTP API
— `/api/v1/query_range` for timeseries, `/api/v1/query` at the range's end for
stat, bargauge, gauge and table panels and for targets marked `instant` — after
the template variables are filled in as Grafana would:

* `$__interval` / `$__interval_ms`: the range over the panel's width in pixels
  (Grafana's max data points), at least the data source's scrape interval,
  rounded like Grafana rounds it; it is also the query step.
* `$__rate_interval`: max(`$__interval` + scrape interval, 4 × scrape interval).
  `--scrape-interval` is the data source's "scrape interval" setting (Grafana's
  default is 15s, hence `1m`); `--rate-interval` sets it outright.
* `$__range`, `$__range_s`, `$__range_ms`, `$__from`, `$__to`.
* Dashboard variables: `query` variables of the form `label_values(...)` are
  asked of Prometheus (`/api/v1/label/NAME/values`); one set to All takes its
  `allValue` (else every value as a regex alternation); the `datasource`
  variable only names the data source. `--var NAME=VALUE` overrides any.

`legendFormat` `{{label}}` templates name the series. Time series are drawn
as inline SVG polylines (gaps where Prometheus has no point) with axes and a
legend (table legends get their `calcs`); stats and gauges show the reduced
value in the panel's unit (none, short, s, ms, bytes, percent, percentunit,
reqps, ops, currencyUSD…) coloured by the thresholds; tables honour the
`organize` transformation, value mappings and `sortBy`. A panel whose queries
return nothing shows "No data", one whose query fails shows the error.
Prints `height=PIXELS` (the page's height, for a screenshot window) and
`panels=N nodata=M errors=K`.
"""
import argparse
import datetime as dt
import html
import json
import math
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DASHBOARD = os.path.join(HERE, "..", "grafana", "oblivious.json")

# Grafana's grid: 24 columns, 30 px rows with 8 px gutters.
ROW_H, MARGIN, COLS = 30, 8, 24
HEADER_H = 74
# Grafana's dark theme and its classic palette.
BG, PANEL_BG, BORDER, TEXT, MUTED, GRID = "#111217", "#181b1f", "#2c3235", "#ccccdc", "#8e8e9e", "#2a2d33"
PALETTE = ["#73BF69", "#F2CC0C", "#8AB8FF", "#FF780A", "#F2495C", "#5794F2", "#B877D9", "#705DA0",
           "#37872D", "#FADE2A", "#447EBC", "#C15C17", "#890F02", "#0A437C", "#6D1F62", "#584477"]
NAMED = {"green": "#73BF69", "red": "#F2495C", "orange": "#FF9830", "yellow": "#FADE2A", "blue": "#5794F2",
         "purple": "#B877D9", "text": TEXT, "transparent": "transparent", "dark-red": "#C4162A",
         "dark-green": "#37872D", "dark-orange": "#FA6400", "dark-yellow": "#E0B400", "semi-dark-red": "#E02F44",
         "semi-dark-green": "#56A64B", "semi-dark-orange": "#FF780A", "semi-dark-yellow": "#F2CC0C",
         "light-red": "#FF7383", "light-green": "#96D98D", "super-light-green": "#C8F2C2"}
CALC_NAMES = {"mean": "Mean", "max": "Max", "min": "Min", "lastNotNull": "Last *", "last": "Last",
              "sum": "Total", "count": "Count", "firstNotNull": "First *", "first": "First", "range": "Range",
              "delta": "Delta", "diff": "Difference"}


# ---------------------------------------------------------------- time and intervals

def parse_duration(s):
    """`15s`, `1m`, `1h30m`, `500ms` → seconds."""
    total, units = 0.0, {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)", s.strip())
    if not parts or "".join(a + b for a, b in parts) != s.strip():
        raise ValueError(f"not a duration: {s!r}")
    for n, u in parts:
        total += float(n) * units[u]
    return total


def parse_time(s, now):
    s = str(s).strip()
    if s == "now":
        return now
    m = re.fullmatch(r"now-(.+)", s)
    if m:
        return now - parse_duration(m.group(1))
    return float(s)


def prom_duration(seconds):
    """Seconds as a Prometheus duration Grafana would write (`4s`, `1m`, `90s`)."""
    seconds = max(seconds, 0.001)
    if seconds < 1:
        return f"{int(round(seconds * 1000))}ms"
    s = int(round(seconds))
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s % n == 0:
            return f"{s // n}{unit}"
    return f"{s}s"


def round_interval(seconds):
    """Grafana's kbn.roundInterval: snaps a computed interval to a familiar one."""
    steps = [(0.015, 0.01), (0.035, 0.02), (0.075, 0.05), (0.15, 0.1), (0.35, 0.2), (0.75, 0.5), (1.5, 1),
             (3.5, 2), (7.5, 5), (12.5, 10), (17.5, 15), (25, 20), (45, 30), (90, 60), (210, 120), (450, 300),
             (750, 600), (1050, 900), (1500, 1200), (2700, 1800), (5400, 3600), (9000, 7200), (16200, 10800),
             (32400, 21600), (86400, 43200)]
    for limit, value in steps:
        if seconds < limit:
            return value
    return 86400 * max(1, round(seconds / 86400))


# ---------------------------------------------------------------- Prometheus

class Prom:
    def __init__(self, base):
        self.base = base.rstrip("/")
        self.calls = 0

    def get(self, path, params):
        self.calls += 1
        url = f"{self.base}{path}?{urllib.parse.urlencode(params, doseq=True)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as e:
            try:
                body = json.load(e)
            except ValueError:
                raise RuntimeError(f"HTTP {e.code} from {path}") from None
        except OSError as e:
            raise RuntimeError(f"{path}: {e}") from None
        if body.get("status") != "success":
            raise RuntimeError(f"{body.get('errorType', 'error')}: {body.get('error', body)}")
        return body["data"]


def number(s):
    try:
        v = float(s)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) or math.isinf(v) else v


# ---------------------------------------------------------------- variables

VAR_RE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)\]\]|\$(\w+)")
REGEX_META = re.compile(r"([\\^$.|?*+()\[\]{}])")


class Vars:
    """The dashboard's template variables and Grafana's built-ins for one render."""

    def __init__(self, dash, prom, start, end, scrape, overrides):
        self.values, self.shown = {}, {}
        self.start, self.end, self.scrape = start, end, scrape
        self.multi = {v.get("name") for v in dash.get("templating", {}).get("list", [])
                      if v.get("multi") or v.get("includeAll")}
        for v in dash.get("templating", {}).get("list", []):
            name = v.get("name")
            if name in overrides:
                self.values[name] = [overrides[name]]
                self.shown[v.get("label") or name] = overrides[name]
                continue
            try:
                vals, shown = self.resolve(v, prom)
            except RuntimeError as e:
                vals, shown = [], f"error: {e}"
            self.values[name] = vals
            self.shown[v.get("label") or name] = shown

    def resolve(self, v, prom):
        kind = v.get("type")
        if kind == "datasource":
            return ["prometheus"], "Prometheus"
        if kind == "constant":
            return [str(v.get("query", ""))], str(v.get("query", ""))
        if kind in ("custom", "interval"):
            options = [o.strip() for o in str(v.get("query", "")).split(",") if o.strip()]
        elif kind == "textbox":
            options = [str(v.get("query", ""))]
        elif kind == "query":
            q = v.get("query")
            q = q.get("query", "") if isinstance(q, dict) else str(q or v.get("definition", ""))
            options = self.label_values(self.sub(q, {}), prom)
            if v.get("regex"):
                options = [o for o in options if re.search(v["regex"], o)]
        else:
            return [], f"({kind} not supported)"
        if v.get("sort") in (1, 3, 5, 7):
            options = sorted(options)
        elif v.get("sort") in (2, 4, 6, 8):
            options = sorted(options, reverse=True)
        current = (v.get("current") or {}).get("value")
        current = current if isinstance(current, list) else [current] if current else []
        if v.get("includeAll") and (current == ["$__all"] or not current):
            if v.get("allValue") is not None:
                return [v["allValue"]], "All"
            return options, "All"
        chosen = [c for c in current if c in options] or options[:1]
        return chosen, ", ".join(chosen) or "(none)"

    def label_values(self, q, prom):
        m = re.fullmatch(r"\s*label_values\(\s*(?:(.*),\s*)?(\w+)\s*\)\s*", q)
        if not m:
            raise RuntimeError(f"query variable {q!r}: only label_values(...) is supported")
        params = {"start": self.start, "end": self.end}
        if m.group(1):
            params["match[]"] = m.group(1)
        return prom.get(f"/api/v1/label/{m.group(2)}/values", params)

    def sub(self, text, builtins):
        def one(m):
            name, fmt = m.group(1) or m.group(3) or m.group(4), m.group(2)
            if name in builtins:
                return builtins[name]
            if name not in self.values:
                return m.group(0)
            vals = self.values[name]
            if fmt == "raw" or (name not in self.multi and len(vals) == 1 and fmt != "regex"):
                return ",".join(vals)
            if len(vals) == 1 and vals[0] in (".*", ".+"):
                return vals[0]
            escaped = [REGEX_META.sub(r"\\\\\1", x) for x in vals]
            return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
        return VAR_RE.sub(one, text)

    def builtins(self, width_px, rate_override):
        rng = self.end - self.start
        interval = round_interval(max(rng / max(width_px, 1), self.scrape))
        rate = rate_override if rate_override else max(interval + self.scrape, 4 * self.scrape)
        return interval, {
            "__interval": prom_duration(interval), "__interval_ms": str(int(interval * 1000)),
            "__rate_interval": prom_duration(rate), "__rate_interval_ms": str(int(rate * 1000)),
            "__range": prom_duration(rng), "__range_s": str(int(round(rng))), "__range_ms": str(int(rng * 1000)),
            "__from": str(int(self.start * 1000)), "__to": str(int(self.end * 1000)),
        }


# ---------------------------------------------------------------- units

def auto_decimals(v):
    a = abs(v)
    if a == 0 or a >= 100:
        return 0
    if a >= 10:
        return 1
    if a >= 1:
        return 2
    return min(6, max(2, 1 - math.floor(math.log10(a)) + 1))


def fixed(v, decimals):
    d = auto_decimals(v) if decimals is None else decimals
    s = f"{v:.{d}f}"
    if decimals is None and "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def scaled(v, decimals, factor, suffixes):
    i = 0
    while abs(v) >= factor and i < len(suffixes) - 1:
        v /= factor
        i += 1
    return fixed(v, decimals) + suffixes[i]


def fmt(v, unit, decimals=None):
    """A value as Grafana writes it in `unit`."""
    if v is None:
        return "-"
    unit = unit or "short"
    if unit == "none":
        return fixed(v, decimals)
    if unit == "short":
        return scaled(v, decimals, 1000, ["", " K", " Mil", " Bil", " Tri"])
    if unit == "percent":
        return fixed(v, decimals) + "%"
    if unit == "percentunit":
        return fixed(v * 100, decimals) + "%"
    if unit in ("s", "ms", "µs", "ns"):
        secs = v * {"s": 1, "ms": 1e-3, "µs": 1e-6, "ns": 1e-9}[unit]
        a = abs(secs)
        if a == 0:
            return "0 s"
        if a < 1e-6:
            return fixed(secs * 1e9, decimals) + " ns"
        if a < 1e-3:
            return fixed(secs * 1e6, decimals) + " µs"
        if a < 1:
            return fixed(secs * 1e3, decimals) + " ms"
        if a < 60:
            return fixed(secs, decimals) + " s"
        if a < 3600:
            return fixed(secs / 60, decimals) + " min"
        if a < 86400:
            return fixed(secs / 3600, decimals) + " hour"
        return fixed(secs / 86400, decimals) + " day"
    if unit in ("bytes", "decbytes"):
        f, names = (1024, [" B", " KiB", " MiB", " GiB", " TiB"]) if unit == "bytes" else \
            (1000, [" B", " kB", " MB", " GB", " TB"])
        return scaled(v, decimals, f, names)
    if unit in ("reqps", "rps", "ops", "wps", "iops"):
        return scaled(v, decimals, 1000, ["", " K", " Mil"]) + {"reqps": " req/s", "rps": " req/s",
                                                                 "ops": " ops/s", "wps": " wps",
                                                                 "iops": " io/s"}[unit]
    if unit.startswith("currency"):
        sym = {"currencyUSD": "$", "currencyEUR": "€", "currencyGBP": "£", "currencyJPY": "¥"}.get(unit, "")
        sign = "-" if v < 0 else ""
        return sign + sym + scaled(abs(v), decimals, 1000, ["", "K", "M", "B"])
    return fixed(v, decimals) + " " + unit


# ---------------------------------------------------------------- series

class Series:
    def __init__(self, labels, points, name):
        self.labels, self.points, self.name = labels, points, name  # points: [(t, v|None)]

    def values(self):
        return [v for _, v in self.points if v is not None]


def legend_name(fmt_, labels, expr):
    if fmt_ and fmt_ != "__auto":
        return re.sub(r"\{\{\s*([\w.]+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt_)
    metric = labels.get("__name__", "")
    rest = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    if not metric and not rest:
        return expr
    return f"{metric}{{{rest}}}" if rest else metric


def reduce_calc(values, calc):
    if not values:
        return None
    return {"lastNotNull": values[-1], "last": values[-1], "firstNotNull": values[0], "first": values[0],
            "mean": sum(values) / len(values), "max": max(values), "min": min(values), "sum": sum(values),
            "count": float(len(values)), "range": max(values) - min(values),
            "delta": values[-1] - values[0], "diff": values[-1] - values[0]}.get(calc, values[-1])


def color_of(c):
    return NAMED.get(c, c) if c else TEXT


def threshold_color(v, fc):
    steps = (fc.get("thresholds") or {}).get("steps") or [{"color": "green", "value": None}]
    color = steps[0].get("color", "green")
    for s in steps:
        if s.get("value") is None or (v is not None and v >= s["value"]):
            color = s.get("color", color)
    return color_of(color)


def esc(s):
    return html.escape(str(s), quote=True)


# ---------------------------------------------------------------- drawing

def nice_step(span, target):
    raw = span / max(target, 1)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def time_ticks(start, end, width):
    span = end - start
    target = max(2, int(width / 90))
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400):
        if span / step <= target:
            break
    first = math.ceil(start / step) * step
    fmt_ = "%H:%M:%S" if step < 60 else "%H:%M"
    return [(t, dt.datetime.fromtimestamp(t).strftime(fmt_)) for t in range(int(first), int(end) + 1, int(step))]


def svg_timeseries(series, start, end, w, h, fc):
    unit, dec = fc.get("unit"), fc.get("decimals")
    custom = fc.get("custom") or {}
    vals = [v for s in series for v in s.values()]
    lo = fc.get("min") if fc.get("min") is not None else min(0.0, min(vals))
    hi = fc.get("max") if fc.get("max") is not None else max(vals)
    if fc.get("min") is None and min(vals) > 0 and (max(vals) - min(vals)) < 0.5 * max(vals):
        lo = min(vals)  # Grafana's soft range: a band that does not include 0
    if hi <= lo:
        hi = lo + (abs(lo) if lo else 1)
    scale = 1.0
    if unit in ("bytes", "decbytes"):  # ticks at round KiB/MiB/GiB (kB/MB/GB) values
        base = 1024 if unit == "bytes" else 1000
        scale = base ** max(0, int(math.log(max(abs(hi), abs(lo), 1), base)))
    step = nice_step((hi - lo) / scale, max(2, int(h / 45))) * scale
    lo = math.floor(lo / step) * step
    hi = math.ceil(hi / step - 1e-9) * step
    ticks = [lo + i * step for i in range(int(round((hi - lo) / step)) + 1)]
    tick_dec = dec if dec is not None else max(0, -math.floor(math.log10(step / scale))) if step / scale < 1 else 0
    if unit in ("s", "percentunit", "bytes", "short", "reqps", "ops"):
        tick_dec = None if dec is None else dec  # these scale their own suffix
    labels = [fmt(t, unit, tick_dec) for t in ticks]
    left = 10 + 6.6 * max(len(x) for x in labels)
    bottom, top, right = 18, 6, 8
    pw, ph = max(w - left - right, 10), max(h - top - bottom, 10)

    def X(t):
        return left + (t - start) / (end - start) * pw

    def Y(v):
        return top + ph - (v - lo) / (hi - lo) * ph

    out = [f'<svg width="{w:.0f}" height="{h:.0f}" xmlns="http://www.w3.org/2000/svg" font-size="11" '
           f'fill="{MUTED}">']
    for t, lab in zip(ticks, labels):
        y = Y(t)
        out.append(f'<line x1="{left:.1f}" x2="{left + pw:.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>')
        out.append(f'<text x="{left - 6:.1f}" y="{y + 4:.1f}" text-anchor="end">{esc(lab)}</text>')
    for t, lab in time_ticks(start, end, pw):
        x = X(t)
        if x - 3.3 * len(lab) < left - 4 or x + 3.3 * len(lab) > w:
            continue  # would run into the y axis's labels or off the panel
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + ph:.1f}" stroke="{GRID}"/>')
        out.append(f'<text x="{x:.1f}" y="{top + ph + 14:.1f}" text-anchor="middle">{lab}</text>')
    fill = custom.get("fillOpacity", 0) / 100
    width = custom.get("lineWidth", 1)
    base = Y(max(lo, min(0.0, hi)))
    for s in series:
        segs, cur = [], []
        for t, v in s.points:
            if v is None:
                if cur:
                    segs.append(cur)
                cur = []
            else:
                cur.append((X(t), Y(min(max(v, lo), hi))))
        if cur:
            segs.append(cur)
        for seg in segs:
            pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in seg)
            if len(seg) == 1:
                out.append(f'<circle cx="{seg[0][0]:.1f}" cy="{seg[0][1]:.1f}" r="2" fill="{s.color}"/>')
                continue
            if fill > 0:
                out.append(f'<polygon points="{seg[0][0]:.1f},{base:.1f} {pts} {seg[-1][0]:.1f},{base:.1f}" '
                           f'fill="{s.color}" fill-opacity="{fill}" stroke="none"/>')
            out.append(f'<polyline points="{pts}" fill="none" stroke="{s.color}" stroke-width="{width}" '
                       f'stroke-linejoin="round"/>')
    out.append("</svg>")
    return "".join(out)


def legend_html(series, legend, fc, max_rows):
    unit, dec = fc.get("unit"), fc.get("decimals")
    calcs = legend.get("calcs") or []
    mode = legend.get("displayMode", "list")
    sort_by, desc = legend.get("sortBy"), legend.get("sortDesc")
    rows = list(series)
    if sort_by:
        key = {v: k for k, v in CALC_NAMES.items()}.get(sort_by, sort_by)
        rows.sort(key=lambda s: reduce_calc(s.values(), key) or -math.inf, reverse=bool(desc))
    hidden = max(0, len(rows) - max_rows)
    rows = rows[:max_rows] if hidden else rows
    sw = '<i style="background:{}"></i>'
    if mode == "table":
        head = "".join(f"<th>{CALC_NAMES.get(c, c)}</th>" for c in calcs)
        body = "".join(
            "<tr><td class=n>" + sw.format(s.color) + esc(s.name) + "</td>"
            + "".join(f"<td>{esc(fmt(reduce_calc(s.values(), c), unit, dec))}</td>" for c in calcs) + "</tr>"
            for s in rows)
        more = f'<tr><td class=more colspan="{len(calcs) + 1}">+{hidden} more</td></tr>' if hidden else ""
        return f'<table class=legend><tr><th class=n>Name</th>{head}</tr>{body}{more}</table>'
    items = "".join(
        "<span>" + sw.format(s.color) + esc(s.name)
        + "".join(f" <b>{CALC_NAMES.get(c, c)}: {esc(fmt(reduce_calc(s.values(), c), unit, dec))}</b>"
                  for c in calcs) + "</span>" for s in rows)
    return f'<div class=legendlist>{items}{f" <span>+{hidden} more</span>" if hidden else ""}</div>'


def big_values(items, fc, opts, w, h):
    """Stat panel: one big value per series (name below when several, or only the name)."""
    unit, dec = fc.get("unit"), fc.get("decimals")
    text_mode = opts.get("textMode", "auto")
    color_mode = opts.get("colorMode", "value")
    n = len(items)
    horizontal = opts.get("orientation", "auto") != "vertical" and w / max(n, 1) >= h * 0.6
    cw, ch = (w / n, h) if horizontal else (w, h / n)
    cells = []
    for name, v in items:
        color = threshold_color(v, fc)
        value = fmt(v, unit, dec) if v is not None else "No data"
        show_name = text_mode in ("name", "value_and_name") or (text_mode == "auto" and n > 1)
        main = name if text_mode == "name" else value
        size = min(ch * (0.42 if show_name and text_mode != "name" else 0.55), cw / max(len(main), 3) * 1.7)
        style = f"color:{color}" if color_mode == "value" else f"background:{color};color:#fff"
        if color_mode == "none":
            style = f"color:{TEXT}"
        sub = f'<div class=statname>{esc(name)}</div>' if show_name and text_mode != "name" else ""
        cells.append(f'<div class=stat style="width:{cw:.0f}px;height:{ch:.0f}px;{style}">'
                     f'<div style="font-size:{size:.0f}px;line-height:1.1">{esc(main)}</div>{sub}</div>')
    return f'<div class=stats style="flex-direction:{"row" if horizontal else "column"}">' + "".join(cells) + "</div>"


def bargauge(items, fc, opts, w, h):
    unit, dec = fc.get("unit"), fc.get("decimals")
    vals = [v for _, v in items if v is not None]
    lo = fc.get("min", 0) if fc.get("min") is not None else min(0, min(vals))
    hi = fc.get("max") if fc.get("max") is not None else max(vals)
    if hi <= lo:
        hi = lo + 1
    n = len(items)
    row_h = min(h / n, 44)
    rows = []
    for name, v in items:
        color = threshold_color(v, fc)
        frac = 0 if v is None else max(0.0, min(1.0, (v - lo) / (hi - lo)))
        bar_h = max(8, row_h - 22)
        rows.append(
            f'<div class=bg style="height:{row_h:.0f}px"><div class=bgname>{esc(name)}</div>'
            f'<div class=bgrow><div class=bgtrack style="height:{bar_h:.0f}px;'
            f'{"background:#22252b" if opts.get("showUnfilled", True) else ""}">'
            f'<div style="width:{frac * 100:.1f}%;height:100%;background:{color};opacity:.85"></div></div>'
            f'<div class=bgval style="color:{color};font-size:{min(bar_h, 18):.0f}px">{esc(fmt(v, unit, dec))}</div>'
            f'</div></div>')
    return "".join(rows)


def gauge(items, fc, opts, w, h):
    unit, dec = fc.get("unit"), fc.get("decimals")
    lo = fc.get("min") if fc.get("min") is not None else 0
    hi = fc.get("max") if fc.get("max") is not None else 100 if unit == "percent" else 1 if unit == "percentunit" \
        else max([v for _, v in items if v is not None] + [1])
    n = len(items)
    cw = w / n
    out = []
    for name, v in items:
        r = min(cw / 2.3, h * 0.75 - 10)
        cx, cy = cw / 2, r + 10
        frac = 0 if v is None else max(0.0, min(1.0, (v - lo) / (hi - lo or 1)))

        def arc(f0, f1):
            a0, a1 = math.pi * (1 - f0), math.pi * (1 - f1)
            x0, y0 = cx + r * math.cos(a0), cy - r * math.sin(a0)
            x1, y1 = cx + r * math.cos(a1), cy - r * math.sin(a1)
            return f"M{x0:.1f},{y0:.1f} A{r:.1f},{r:.1f} 0 0 1 {x1:.1f},{y1:.1f}"
        color = threshold_color(v, fc)
        out.append(
            f'<svg width="{cw:.0f}" height="{h:.0f}"><path d="{arc(0, 1)}" stroke="#22252b" stroke-width="{r / 5:.1f}" '
            f'fill="none"/><path d="{arc(0, frac)}" stroke="{color}" stroke-width="{r / 5:.1f}" fill="none"/>'
            f'<text x="{cx:.1f}" y="{cy - r * 0.1:.1f}" text-anchor="middle" fill="{color}" '
            f'font-size="{r / 2.6:.0f}">{esc(fmt(v, unit, dec))}</text>'
            f'<text x="{cx:.1f}" y="{cy + 18:.1f}" text-anchor="middle" fill="{MUTED}" font-size="12">'
            f'{esc(name if n > 1 else "")}</text></svg>')
    return '<div class=stats>' + "".join(out) + "</div>"


def table(frames, panel, fc):
    cols, rows = [], []
    for labels, t, v in frames:
        row = {"Time": dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S"), **labels,
               "Value": fmt(v, fc.get("unit"), fc.get("decimals")) if v is not None else ""}
        for k in row:
            if k not in cols:
                cols.append(k)
        rows.append(row)
    cols = ["Time"] + sorted(c for c in cols if c not in ("Time", "Value", "__name__")) + ["Value"]
    rename = {}
    for tr in panel.get("transformations") or []:
        if tr.get("id") == "organize":
            o = tr.get("options") or {}
            cols = [c for c in cols if not (o.get("excludeByName") or {}).get(c)]
            order = o.get("indexByName") or {}
            if order:
                cols.sort(key=lambda c: order.get(c, 999))
            rename.update(o.get("renameByName") or {})
    overrides = {}
    for ov in (panel.get("fieldConfig") or {}).get("overrides") or []:
        m = ov.get("matcher") or {}
        if m.get("id") == "byName":
            overrides.setdefault(m.get("options"), []).extend(ov.get("properties") or [])
    for sb in reversed((panel.get("options") or {}).get("sortBy") or []):
        col = sb.get("displayName")
        rows.sort(key=lambda r: str(r.get(col, "")), reverse=bool(sb.get("desc")))

    def cell(col, val):
        style = ""
        for prop in overrides.get(col, []):
            if prop.get("id") == "mappings":
                for mapping in prop.get("value") or []:
                    res = (mapping.get("options") or {}).get(val) if mapping.get("type") == "value" else None
                    if res:
                        val = res.get("text", val)
                        if res.get("color"):
                            style = f' style="color:{color_of(res["color"])}"'
        return f"<td{style}>{esc(val)}</td>"
    head = "".join(f"<th>{esc(rename.get(c, c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(cell(c, str(r.get(c, ""))) for c in cols) + "</tr>" for r in rows)
    return f'<table class=tbl><tr>{head}</tr>{body}</table>'


# ---------------------------------------------------------------- panels

def run_targets(panel, prom, variables, start, end, width_px, rate_override, instant_panel):
    """(series, frames, errors): every target's answer, named by its legendFormat."""
    interval, builtins = variables.builtins(width_px, rate_override)
    series, frames, errors = [], [], []
    for t in panel.get("targets") or []:
        if t.get("hide") or not t.get("expr"):
            continue
        expr = variables.sub(t["expr"], builtins)
        try:
            if instant_panel or t.get("instant") and not t.get("range"):
                data = prom.get("/api/v1/query", {"query": expr, "time": f"{end:.3f}"})
                result = data["result"] if data["resultType"] == "vector" else \
                    [{"metric": {}, "value": data["result"]}] if data["resultType"] == "scalar" else []
                for r in result:
                    v = number(r["value"][1])
                    series.append(Series(r["metric"], [(float(r["value"][0]), v)],
                                         legend_name(t.get("legendFormat"), r["metric"], expr)))
                    frames.append((r["metric"], float(r["value"][0]), v))
            else:
                step = interval
                s0, e0 = math.floor(start / step) * step, math.floor(end / step) * step
                data = prom.get("/api/v1/query_range", {"query": expr, "start": s0, "end": e0, "step": step})
                grid = [s0 + i * step for i in range(int(round((e0 - s0) / step)) + 1)]
                for r in data["result"]:
                    got = {round(float(ts), 3): number(v) for ts, v in r["values"]}
                    pts = [(g, got.get(round(g, 3))) for g in grid]
                    series.append(Series(r["metric"], pts, legend_name(t.get("legendFormat"), r["metric"], expr)))
        except RuntimeError as e:
            errors.append(f"{t.get('refId', '?')}: {e}")
    return series, frames, errors


def render_panel(panel, prom, variables, start, end, col_w, rate, stats):
    g = panel.get("gridPos") or {"x": 0, "y": 0, "w": 12, "h": 8}
    x, y = g.get("x", 0) * col_w, g.get("y", 0) * (ROW_H + MARGIN) + HEADER_H
    w, h = g.get("w", 12) * col_w - MARGIN, g.get("h", 8) * ROW_H + (g.get("h", 8) - 1) * MARGIN
    kind, title = panel.get("type"), panel.get("title", "")
    box = f'left:{x + MARGIN:.0f}px;top:{y:.0f}px;width:{w:.0f}px;height:{h:.0f}px'
    if kind == "row":
        hidden = len(panel.get("panels") or []) if panel.get("collapsed") else 0
        arrow = "&#9656;" if panel.get("collapsed") else "&#9662;"
        extra = f' <span class=muted>({hidden} panels)</span>' if hidden else ""
        return f'<div class=row style="{box}">{arrow} {esc(title)}{extra}</div>'
    stats["panels"] += 1
    fc = (panel.get("fieldConfig") or {}).get("defaults") or {}
    opts = panel.get("options") or {}
    iw, ih = w - 16, h - 36  # inside the padding, below the title
    instant = kind in ("stat", "bargauge", "gauge", "table")
    series, frames, errors = [], [], []
    if kind in ("timeseries", "graph", "stat", "bargauge", "gauge", "table"):
        series, frames, errors = run_targets(panel, prom, variables, start, end, iw, rate, instant)
    for i, s in enumerate(series):
        s.color = PALETTE[i % len(PALETTE)]
    has_data = any(s.values() for s in series) if kind != "table" else bool(frames)
    body = ""
    if kind not in ("timeseries", "graph", "stat", "bargauge", "gauge", "table"):
        body = f'<div class=nodata>Panel type "{esc(kind)}" is not rendered</div>'
    elif not has_data:
        stats["nodata"] += 1
        stats["nodata_titles"].append(title)
        body = '<div class=nodata>No data</div>'
    elif kind in ("timeseries", "graph"):
        legend = opts.get("legend") or {"displayMode": "list", "showLegend": True}
        shown = [s for s in series if s.values()]
        leg = ""
        if legend.get("showLegend", True) and legend.get("displayMode") != "hidden":
            table_mode = legend.get("displayMode") == "table"
            row_px = 17
            max_rows = max(1, int((ih * 0.45) / row_px) - (1 if table_mode else 0))
            if not table_mode:
                max_rows = max(1, int(ih * 0.3 / row_px)) * 3
            leg = legend_html(shown, legend, fc, max_rows)
            rows = min(len(shown), max_rows) + (1 if table_mode else 0) + (1 if len(shown) > max_rows else 0)
            leg_h = rows * row_px + 4 if table_mode else min(math.ceil(len(shown) / 3), max_rows // 3 + 1) * row_px + 4
        else:
            leg_h = 0
        body = svg_timeseries(shown, start, end, iw, ih - leg_h, fc) + leg
    else:
        calc = ((opts.get("reduceOptions") or {}).get("calcs") or ["lastNotNull"])[0]
        items = [(s.name, reduce_calc(s.values(), calc)) for s in series if s.values()]
        if kind == "stat":
            body = big_values(items, fc, opts, iw, ih)
        elif kind == "bargauge":
            body = bargauge(items, fc, opts, iw, ih)
        elif kind == "gauge":
            body = gauge(items, fc, opts, iw, ih)
        else:
            body = table(frames, panel, fc)
    if errors:
        stats["errors"] += 1
        body = f'<div class=err>{esc("; ".join(errors))}</div>' + ("" if has_data else "")
    return (f'<div class=panel style="{box}"><div class=title>{esc(title)}</div>'
            f'<div class=body style="height:{ih:.0f}px">{body}</div></div>')


CSS = f"""
*{{box-sizing:border-box}}
body{{margin:0;background:{BG};color:{TEXT};font:12px/1.35 Inter,"Helvetica Neue",Arial,"DejaVu Sans",sans-serif}}
.page{{position:relative}}
.top{{position:absolute;left:8px;right:8px;top:8px;height:58px}}
.top h1{{font-size:18px;font-weight:500;margin:0 0 6px}}
.top .vars span{{display:inline-block;margin-right:8px;border:1px solid {BORDER};border-radius:2px}}
.top .vars b{{display:inline-block;background:#22252b;padding:2px 8px;font-weight:500;color:{TEXT}}}
.top .vars i{{display:inline-block;padding:2px 8px;font-style:normal}}
.top .range{{position:absolute;right:0;top:2px;text-align:right;color:{MUTED}}}
.row{{position:absolute;font-size:14px;font-weight:500;padding-top:6px;color:{TEXT}}}
.panel{{position:absolute;background:{PANEL_BG};border:1px solid {BORDER};border-radius:2px;overflow:hidden}}
.title{{height:28px;padding:6px 8px 0;font-weight:500;font-size:13px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}}
.body{{padding:0 8px;overflow:hidden;position:relative}}
.nodata{{display:flex;height:100%;align-items:center;justify-content:center;color:{MUTED};font-size:13px}}
.err{{color:#F2495C;font-size:11px;padding:4px 0;word-break:break-all}}
.legend{{border-collapse:collapse;width:100%;font-size:11px}}
.legend th{{color:{MUTED};font-weight:500;text-align:right;padding:0 6px;height:17px}}
.legend td{{text-align:right;padding:0 6px;height:17px;white-space:nowrap}}
.legend .n{{text-align:left;max-width:240px;overflow:hidden;text-overflow:ellipsis}}
.legend .more,.legendlist span.more{{color:{MUTED};text-align:left}}
.legend i,.legendlist i{{display:inline-block;width:14px;height:4px;border-radius:2px;margin:0 6px 2px 0;vertical-align:middle}}
.legendlist{{font-size:11px;line-height:17px}}
.legendlist span{{margin-right:14px;white-space:nowrap}}
.legendlist b{{font-weight:400;color:{MUTED}}}
.stats{{display:flex;height:100%}}
.stat{{display:flex;flex-direction:column;align-items:center;justify-content:center;font-weight:500;text-align:center;overflow:hidden}}
.statname{{font-size:12px;color:{TEXT};font-weight:400}}
.bg{{display:flex;flex-direction:column;justify-content:center}}
.bgname{{font-size:12px;line-height:16px;height:17px;white-space:nowrap;overflow:hidden}}
.bgrow{{display:flex;align-items:center}}
.bgtrack{{flex:1;border-radius:2px;overflow:hidden}}
.bgval{{width:110px;text-align:right;font-weight:500;white-space:nowrap}}
.tbl{{border-collapse:collapse;width:100%;font-size:12px}}
.tbl th{{text-align:left;color:#6e9fff;font-weight:500;border-bottom:1px solid {BORDER};padding:4px 6px}}
.tbl td{{border-bottom:1px solid {BORDER};padding:4px 6px}}
.muted{{color:{MUTED}}}
"""

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prometheus", required=True, help="Prometheus base URL, e.g. http://127.0.0.1:9090")
    ap.add_argument("--dashboard", default=DEFAULT_DASHBOARD)
    ap.add_argument("--from", dest="start", help="Unix seconds, now or now-DURATION (default: the dashboard's)")
    ap.add_argument("--to", dest="end", help="Unix seconds or now (default: the dashboard's)")
    ap.add_argument("--out", default="dashboard.html")
    ap.add_argument("--width", type=int, default=1600, help="page width, px")
    ap.add_argument("--scrape-interval", default="15s", help="the data source's scrape interval setting")
    ap.add_argument("--rate-interval", help="set $__rate_interval outright (e.g. 1m)")
    ap.add_argument("--var", action="append", default=[], help="NAME=VALUE: a dashboard variable's value")
    a = ap.parse_args()

    with open(a.dashboard, encoding="utf-8") as f:
        dash = json.load(f)
    now = dt.datetime.now().timestamp()
    start = parse_time(a.start or (dash.get("time") or {}).get("from", "now-1h"), now)
    end = parse_time(a.end or (dash.get("time") or {}).get("to", "now"), now)
    if end <= start:
        sys.exit("--to must be after --from")
    rate = parse_duration(a.rate_interval) if a.rate_interval else None
    prom = Prom(a.prometheus)
    overrides = dict(v.split("=", 1) for v in a.var)
    variables = Vars(dash, prom, start, end, parse_duration(a.scrape_interval), overrides)

    panels = []
    for p in dash.get("panels") or []:
        panels.append(p)
        if not p.get("collapsed"):
            panels.extend(p.get("panels") or [])
    col_w = (a.width - MARGIN) / COLS
    stats = {"panels": 0, "nodata": 0, "errors": 0, "nodata_titles": []}
    parts = [render_panel(p, prom, variables, start, end, col_w, rate, stats) for p in panels]
    bottom = max((((p.get("gridPos") or {}).get("y", 0) + (p.get("gridPos") or {}).get("h", 8))
                  for p in panels), default=0)
    height = HEADER_H + bottom * (ROW_H + MARGIN) + MARGIN

    fmt_t = "%Y-%m-%d %H:%M:%S"
    tz = dt.datetime.now().astimezone().strftime("%Z")
    var_html = "".join(f"<span><b>{esc(k)}</b><i>{esc(v)}</i></span>" for k, v in variables.shown.items())
    _, b = variables.builtins(col_w * 8, rate)
    range_html = (f"{dt.datetime.fromtimestamp(start).strftime(fmt_t)} to "
                  f"{dt.datetime.fromtimestamp(end).strftime(fmt_t)} {tz} ({prom_duration(end - start)})<br>"
                  f"rendered by infra/render/render.py from {esc(a.prometheus)} · "
                  f"$__rate_interval={b['__rate_interval']} · $__range={b['__range']}")
    page = (f'<!doctype html><html><head><meta charset="utf-8"><title>{esc(dash.get("title", "dashboard"))}'
            f'</title><style>{CSS}</style></head><body><div class=page style="width:{a.width}px;height:{height}px">'
            f'<div class=top><h1>{esc(dash.get("title", ""))}</h1><div class=vars>{var_html}</div>'
            f'<div class=range>{range_html}</div></div>' + "\n".join(parts) + "</div></body></html>\n")
    with open(a.out, "w", encoding="utf-8") as f:
        f.write(page)
    print(f"height={height}")
    print(f"panels={stats['panels']} nodata={stats['nodata']} errors={stats['errors']} queries={prom.calls}")
    for t in stats["nodata_titles"]:
        print(f"no data: {t}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
