"""Parses every .tf file of a directory with python-hcl2 and prints one JSON
document: {"locals": {...}, "resource": {type: {name: body}}, "variable": {...}}.

Usage: dump.py DIR
"""

import json
import pathlib
import sys

import hcl2

def unquote(v):
    """python-hcl2 keeps HCL's quotes on strings and keys; drop them."""
    if isinstance(v, str) and len(v) >= 2 and v[0] == v[-1] == '"':
        return v[1:-1]
    if isinstance(v, dict):
        return {unquote(k): unquote(x) for k, x in v.items()}
    if isinstance(v, list):
        return [unquote(x) for x in v]
    return v


merged = {"locals": {}, "resource": {}, "variable": {}, "output": {}}
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.tf")):
    with open(path) as f:
        doc = unquote(hcl2.load(f))
    for block in doc.get("locals", []):
        merged["locals"].update(block)
    for block in doc.get("resource", []):
        for rtype, named in block.items():
            merged["resource"].setdefault(rtype, {}).update(named)
    for kind in ("variable", "output"):
        for block in doc.get(kind, []):
            merged[kind].update(block)
json.dump(merged, sys.stdout, indent=1, default=str)
