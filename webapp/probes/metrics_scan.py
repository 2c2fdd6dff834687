"""What the metrics rule needs from a Prometheus text page — each family's name, type and
sample names — read with a few regular expressions instead of prometheus_client's parser.

That parser walks every line character by character in Python: a fifth of a 1,000-service
sweep's CPU. This scanner accepts only lines in the plain, common form (one space between
the parts, no escapes, no exemplars) and returns None at the first line it is not sure of;
the caller then runs the full parsers, so every page gets exactly the families the
prometheus_client parser would give (tests/test_probe_rules.py compares the two).
"""

from __future__ import annotations

import re
from typing import NamedTuple

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="[^"\\]*"'
_SAMPLE = re.compile(rf"({_NAME})(?:\{{((?:{_LABEL}(?:,{_LABEL})*)?)\}})? ([^ \t]+)(?: ([^ \t]+))?")
_LABEL_NAME = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="[^"\\]*"')
_HELP = re.compile(rf"# HELP ({_NAME})(?: .*)?")
_TYPE = re.compile(rf"# TYPE ({_NAME}) (\w+)")
_ASCII_SPACE = re.compile(r"[ \t\n\r\x0b\x0c]+")  # how the parser splits comment lines
TYPES = {"counter", "gauge", "summary", "histogram", "gaugehistogram", "unknown", "info", "stateset", "untyped"}
# Sample names a family of each type owns; other types own only the family's name.
_SUFFIXES = {"summary": ("_count", "_sum", ""), "histogram": ("_count", "_sum", "_bucket")}


class Family(NamedTuple):
    name: str
    type: str
    sample_names: tuple[str, ...]


def _number(token: str) -> bool:
    if "_" in token or token != token.strip():  # float() takes 1_000 and " 1"; the parser does not
        return False
    try:
        float(token)
    except ValueError:
        return False
    return True


def _family(name: str, typ: str, samples: list[str]) -> Family:
    """The parser's `build_metric`: counters are named without `_total`, their samples with."""
    if typ == "counter":
        if name.endswith("_total"):
            name = name[:-6]
        else:
            samples = [sample + "_total" for sample in samples]
    return Family(name, "unknown" if typ == "untyped" else typ, tuple(samples))


def scan(text: str) -> list[Family] | None:
    """The families of a Prometheus text page, or None if a line is not in the plain form
    (the full parser decides those pages). Mirrors `text_fd_to_metric_families`."""
    families: list[Family] = []
    name, typ, samples, allowed = "", "untyped", [], ()
    for raw in text.split("\n"):
        line = raw.strip()
        if not line:
            continue
        if line[0] == "#":
            help_line = _HELP.fullmatch(line)
            type_line = None if help_line else _TYPE.fullmatch(line)
            if help_line is None and type_line is None:
                if '"' in line:
                    return None
                parts = _ASCII_SPACE.split(line, 2)
                if len(parts) > 1 and parts[1] in ("HELP", "TYPE"):
                    return None  # a HELP or TYPE line in an unusual form
                continue  # a plain comment
            candidate = (help_line or type_line).group(1)
            if candidate != name:
                if name:
                    families.append(_family(name, typ, samples))
                name, typ, samples = candidate, "untyped", []
                allowed = (candidate,)
            if type_line is not None:
                typ = type_line.group(2)
                if typ not in TYPES or (typ == "counter" and name == "_total"):
                    return None  # the parser refuses these (a counter "_total" has no name left)
                allowed = tuple(name + suffix for suffix in _SUFFIXES.get(typ, ("",)))
            continue
        sample = _SAMPLE.fullmatch(line)
        if sample is None or not _number(sample.group(3)) or (sample.group(4) and not _number(sample.group(4))):
            return None
        labels = sample.group(2)
        if labels:
            label_names = _LABEL_NAME.findall(labels)
            if len(set(label_names)) != len(label_names) or any(n.startswith("__") for n in label_names):
                return None  # the parser refuses these
        sample_name = sample.group(1)
        if sample_name in allowed:
            samples.append(sample_name)
            continue
        if name:
            families.append(_family(name, typ, samples))
        name, typ, samples, allowed = "", "untyped", [], ()
        families.append(_family(sample_name, "untyped", [sample_name]))
    if name:
        families.append(_family(name, typ, samples))
    return families
