"""Load and validate checklist YAML files (``checklists/*.yaml``) into frozen dataclasses.

Pure Python, no Flask or database: the CLI, the loader at start-up and the tests all
use it. Every problem found is reported with its file, line and a plain message.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

PROBE_KINDS: frozenset[str] = frozenset({
    "health", "readiness", "deep_health", "metrics", "https", "tls_expiry",
    "security_headers", "correlation_id", "runbook_present", "oncall_present",
})
STATUSES = ("met", "partial", "not_met", "n_a")
TIERS = (1, 2, 3)
SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]*$"
KEY_PATTERN = r"^[a-z][a-z0-9_]*$"


# --- public data -----------------------------------------------------------------------

@dataclass(frozen=True)
class Item:
    key: str
    title: str
    category: str
    guidance: str
    evidence: tuple[str, ...]
    weight: int
    critical: bool
    tiers: tuple[int, ...]
    probe: str | None
    replaces: tuple[str, ...]
    reattest_days: int | None = None  # evidence older than this needs re-attesting (else a default)

    def applies_to(self, tier: int) -> bool:
        return tier in self.tiers


@dataclass(frozen=True)
class Category:
    key: str
    title: str
    description: str
    items: tuple[Item, ...]


@dataclass(frozen=True)
class Thresholds:
    ready: float = 85.0
    conditions: float = 70.0


# Sign-off roles: "owner" is the service's owner (or backup owner, or a team maintainer),
# "reviewer" anyone holding a reviewer role; any other name is a role admins grant.
SPECIAL_ROLES = ("owner", "reviewer")
ROLE_PATTERN = r"^[a-z][a-z0-9_-]*$"
DEFAULT_SIGNOFF = {1: ("owner", "sre", "security"), 2: ("owner", "sre"), 3: ("owner", "reviewer")}


@dataclass(frozen=True)
class SignoffRules:
    """Who must sign, per tier: one distinct person per role."""

    by_tier: tuple[tuple[int, tuple[str, ...]], ...] = tuple(DEFAULT_SIGNOFF.items())

    def roles_for(self, tier: int) -> tuple[str, ...]:
        return dict(self.by_tier).get(tier, DEFAULT_SIGNOFF[tier])

    @property
    def granted_roles(self) -> tuple[str, ...]:
        """Roles admins grant to people (everything except owner and reviewer)."""
        return tuple(dict.fromkeys(r for _, roles in self.by_tier for r in roles
                                   if r not in SPECIAL_ROLES))


@dataclass(frozen=True)
class Checklist:
    slug: str
    version: str
    title: str
    description: str
    thresholds: Thresholds
    categories: tuple[Category, ...]
    content_hash: str
    signoff: SignoffRules = SignoffRules()

    @property
    def items(self) -> tuple[Item, ...]:
        return tuple(item for category in self.categories for item in category.items)

    def item(self, key: str) -> Item | None:
        return next((item for item in self.items if item.key == key), None)

    def to_json(self) -> dict:
        return {
            "slug": self.slug, "version": self.version, "title": self.title,
            "description": self.description, "content_hash": self.content_hash,
            "thresholds": {"ready": self.thresholds.ready,
                           "conditions": self.thresholds.conditions},
            "signoff": {f"tier_{tier}": list(roles) for tier, roles in self.signoff.by_tier},
            "categories": [
                {"key": c.key, "title": c.title, "description": c.description,
                 "items": [_item_json(item) for item in c.items]}
                for c in self.categories
            ],
        }

    @classmethod
    def from_json(cls, data: dict) -> Checklist:
        categories = tuple(
            Category(key=c["key"], title=c["title"], description=c.get("description", ""),
                     items=tuple(_item_from_json(i, c["key"]) for i in c["items"]))
            for c in data["categories"]
        )
        t = data.get("thresholds", {})
        signoff = data.get("signoff") or {}
        rules = SignoffRules(tuple((tier, tuple(signoff.get(f"tier_{tier}", DEFAULT_SIGNOFF[tier])))
                                   for tier in TIERS))
        return cls(
            signoff=rules,
            slug=data["slug"], version=data["version"], title=data["title"],
            description=data.get("description", ""), content_hash=data["content_hash"],
            thresholds=Thresholds(float(t.get("ready", 85.0)),
                                  float(t.get("conditions", 70.0))),
            categories=categories,
        )


def _item_json(item: Item) -> dict:
    return {"key": item.key, "title": item.title, "guidance": item.guidance,
            "evidence": list(item.evidence), "weight": item.weight,
            "critical": item.critical, "tiers": list(item.tiers), "probe": item.probe,
            "replaces": list(item.replaces),
            **({"reattest_days": item.reattest_days} if item.reattest_days else {})}


def _item_from_json(data: dict, category: str) -> Item:
    return Item(key=data["key"], title=data["title"], category=category,
                guidance=data.get("guidance", ""), evidence=tuple(data.get("evidence", ())),
                weight=data["weight"], critical=data["critical"],
                tiers=tuple(data["tiers"]), probe=data.get("probe"),
                replaces=tuple(data.get("replaces", ())), reattest_days=data.get("reattest_days"))


@dataclass(frozen=True)
class ChecklistProblem:
    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        if self.line is None:
            return f"{self.path}: {self.message}"
        return f"{self.path}:{self.line}: {self.message}"


class ChecklistInvalid(Exception):
    """A checklist file could not be loaded; ``problems`` lists every reason found."""

    def __init__(self, problems: list[ChecklistProblem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


# --- schema ----------------------------------------------------------------------------

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _ItemSchema(_Schema):
    key: Annotated[str, StringConstraints(pattern=KEY_PATTERN)]
    title: Text
    guidance: str = ""
    evidence: list[Text] = []
    weight: Annotated[int, Field(ge=1, le=3)] = 1
    critical: bool = False
    tiers: list[int] = list(TIERS)
    probe: str | None = None
    replaces: list[Annotated[str, StringConstraints(pattern=KEY_PATTERN)]] = []
    reattest_days: Annotated[int, Field(ge=1, le=3650)] | None = None

    @field_validator("tiers")
    @classmethod
    def _tiers_subset(cls, tiers: list[int]) -> list[int]:
        if not tiers or not set(tiers) <= set(TIERS) or len(set(tiers)) != len(tiers):
            raise ValueError(f"tiers must be a non-empty subset of {list(TIERS)}, got {tiers}")
        return sorted(tiers)

    @field_validator("probe")
    @classmethod
    def _known_probe(cls, probe: str | None) -> str | None:
        if probe is not None and probe not in PROBE_KINDS:
            raise ValueError(f"unknown probe {probe!r} (known: {', '.join(sorted(PROBE_KINDS))})")
        return probe


class _CategorySchema(_Schema):
    key: Annotated[str, StringConstraints(pattern=KEY_PATTERN)]
    title: Text
    description: str = ""
    items: Annotated[list[_ItemSchema], Field(min_length=1)]


class _ThresholdsSchema(_Schema):
    ready: Annotated[float, Field(ge=0, le=100)] = 85.0
    conditions: Annotated[float, Field(ge=0, le=100)] = 70.0

    @field_validator("conditions")
    @classmethod
    def _not_above_ready(cls, conditions: float, info) -> float:
        ready = info.data.get("ready")
        if ready is not None and conditions > ready:
            raise ValueError(f"conditions ({conditions:g}) must not exceed ready ({ready:g})")
        return conditions


_Role = Annotated[str, StringConstraints(pattern=ROLE_PATTERN, max_length=40)]


class _SignoffSchema(_Schema):
    tier_1: list[_Role] = list(DEFAULT_SIGNOFF[1])
    tier_2: list[_Role] = list(DEFAULT_SIGNOFF[2])
    tier_3: list[_Role] = list(DEFAULT_SIGNOFF[3])

    @field_validator("tier_1", "tier_2", "tier_3")
    @classmethod
    def _distinct_roles(cls, roles: list[str]) -> list[str]:
        if not roles:
            raise ValueError("at least one role must sign")
        if len(set(roles)) != len(roles):
            raise ValueError(f"each role once (one distinct person per role), got {roles}")
        return roles


class _ChecklistSchema(_Schema):
    slug: Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
    version: Text
    title: Text
    description: str = ""
    thresholds: _ThresholdsSchema = _ThresholdsSchema()
    signoff: _SignoffSchema = _SignoffSchema()
    categories: Annotated[list[_CategorySchema], Field(min_length=1)]


# --- YAML with line numbers ------------------------------------------------------------

class _Loader(yaml.SafeLoader):
    """A SafeLoader that records repeated mapping keys, which PyYAML silently overwrites."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.duplicate_keys: list[yaml.ScalarNode] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    self.duplicate_keys.append(key_node)
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)


def _line_of(root: yaml.Node, loc: tuple) -> int:
    """1-based line of the node that ``loc`` (a pydantic error path) points at, or of the
    deepest node reached when the path leaves the tree (a missing field: its parent)."""
    node = root
    for depth, part in enumerate(loc, start=1):
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            # The last occurrence wins, as it does when PyYAML builds the dict.
            match = [(k, v) for k, v in node.value if getattr(k, "value", None) == part]
            if not match:
                break
            key_node, node = match[-1]
            if depth == len(loc):  # point at "weight: 5", not at a block value below it
                return key_node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                break
            node = node.value[part]
        else:
            break
    return node.start_mark.line + 1


def _describe(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _message(error: dict) -> str:
    kind, loc = error["type"], error["loc"]
    where = _describe(loc[:-1] if kind in ("extra_forbidden", "missing") else loc)
    if kind == "extra_forbidden":
        msg = f"unknown field {loc[-1]!r}"
    elif kind == "missing":
        msg = f"missing required field {loc[-1]!r}"
    elif kind in ("string_too_short", "too_short"):
        msg = "must not be empty"
    elif kind in ("model_type", "dict_type"):
        msg = "must be a mapping"
    elif kind == "string_pattern_mismatch":
        msg = f"{error['input']!r} must match {error['ctx']['pattern']}"
    elif kind == "value_error":
        msg = str(error["ctx"]["error"])
    else:
        msg = error["msg"]
    return f"{where}: {msg}" if where else msg


def _cross_checks(data: dict) -> list[tuple[tuple, str]]:
    """Checks that span the file: unique category and item keys, sane ``replaces``.
    Works on the raw data so these problems are reported alongside schema errors."""
    found: list[tuple[tuple, str]] = []
    categories = data.get("categories")
    categories = categories if isinstance(categories, list) else []
    items: list[tuple[tuple, dict]] = []
    seen_categories: set[str] = set()
    for ci, category in enumerate(categories):
        if not isinstance(category, dict):
            continue
        key = category.get("key")
        if isinstance(key, str):
            if key in seen_categories:
                found.append((("categories", ci, "key"), f"duplicate category key {key!r}"))
            seen_categories.add(key)
        raw_items = category.get("items")
        for ii, item in enumerate(raw_items if isinstance(raw_items, list) else []):
            if isinstance(item, dict):
                items.append((("categories", ci, "items", ii), item))
    keys = {item.get("key") for _, item in items if isinstance(item.get("key"), str)}
    seen: set[str] = set()
    replaced: dict[str, str] = {}
    for loc, item in items:
        key = item.get("key")
        if isinstance(key, str):
            if key in seen:
                found.append(((*loc, "key"), f"duplicate item key {key!r}"))
            seen.add(key)
        olds = item.get("replaces")
        for i, old in enumerate(olds if isinstance(olds, list) else []):
            if not isinstance(old, str):
                continue  # the schema reports it
            if old in keys:
                found.append(((*loc, "replaces", i), f"replaces {old!r}, which is still an item"))
            elif old in replaced and replaced[old] != key:
                found.append(((*loc, "replaces", i),
                              f"{old!r} is already replaced by {replaced[old]!r}"))
            else:
                replaced[old] = key
    return found


# --- loading ---------------------------------------------------------------------------

def parse_checklist(text: str | bytes, path: str = "<string>") -> Checklist:
    """Parse and validate one checklist; raise ChecklistInvalid listing every problem."""
    raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    content_hash = hashlib.sha256(raw).hexdigest()
    try:
        source = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ChecklistInvalid([ChecklistProblem(path, None, f"not UTF-8 text: {exc}")]) from None

    loader = _Loader(source)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        message = " ".join(p for p in (exc.context, exc.problem) if p)
        raise ChecklistInvalid([ChecklistProblem(path, line, f"YAML syntax error: {message}")]) from None
    except yaml.YAMLError as exc:
        raise ChecklistInvalid([ChecklistProblem(path, None, f"YAML error: {exc}")]) from None
    finally:
        loader.dispose()

    if not isinstance(data, dict):
        line = root.start_mark.line + 1 if root is not None else 1
        what = "empty" if data is None else f"a {type(data).__name__}"
        raise ChecklistInvalid([ChecklistProblem(
            path, line, f"a checklist must be a YAML mapping, this file is {what}")])

    problems = [ChecklistProblem(path, k.start_mark.line + 1, f"duplicate key {k.value!r}")
                for k in loader.duplicate_keys]
    try:
        doc = _ChecklistSchema.model_validate(data)
    except ValidationError as exc:
        doc = None
        problems += [ChecklistProblem(path, _line_of(root, e["loc"]), _message(e))
                     for e in exc.errors()]
    problems += [ChecklistProblem(path, _line_of(root, loc), f"{_describe(loc)}: {msg}")
                 for loc, msg in _cross_checks(data)]
    if problems or doc is None:
        problems.sort(key=lambda p: p.line or 0)
        raise ChecklistInvalid(problems)
    return _build(doc, content_hash)


def _build(doc: _ChecklistSchema, content_hash: str) -> Checklist:
    categories = tuple(
        Category(key=c.key, title=c.title, description=c.description.strip(), items=tuple(
            Item(key=i.key, title=i.title, category=c.key, guidance=i.guidance.strip(),
                 evidence=tuple(i.evidence), weight=i.weight, critical=i.critical,
                 tiers=tuple(i.tiers), probe=i.probe, replaces=tuple(i.replaces),
                 reattest_days=i.reattest_days)
            for i in c.items))
        for c in doc.categories
    )
    return Checklist(
        slug=doc.slug, version=doc.version, title=doc.title,
        description=doc.description.strip(), content_hash=content_hash,
        thresholds=Thresholds(float(doc.thresholds.ready), float(doc.thresholds.conditions)),
        categories=categories,
        signoff=SignoffRules(tuple((tier, tuple(getattr(doc.signoff, f"tier_{tier}")))
                                   for tier in TIERS)),
    )


def load_checklist(path: str | os.PathLike) -> Checklist:
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ChecklistInvalid([ChecklistProblem(
            str(path), None, f"cannot read file: {exc.strerror or exc}")]) from None
    return parse_checklist(raw, str(path))


def discover(dirs: Iterable[str | os.PathLike]) -> list[Path]:
    """Every ``*.yaml`` / ``*.yml`` file directly in each existing directory."""
    found: set[Path] = set()
    for directory in map(Path, dirs):
        if directory.is_dir():
            found.update(p.resolve() for p in directory.iterdir()
                         if p.suffix in (".yaml", ".yml") and p.is_file())
    return sorted(found)


def validate_paths(paths: str | os.PathLike | Iterable[str | os.PathLike]
                   ) -> list[ChecklistProblem]:
    """Problems in the given files and directories (``[]`` when all are good), including
    two files that claim the same slug."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    problems: list[ChecklistProblem] = []
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            in_dir = discover([path])
            if not in_dir:
                problems.append(ChecklistProblem(str(path), None, "no *.yaml checklists here"))
            files += in_dir
        elif path.exists():
            files.append(path)
        else:
            problems.append(ChecklistProblem(str(path), None, "no such file or directory"))
    by_slug: dict[str, Path] = {}
    for file in dict.fromkeys(files):
        try:
            checklist = load_checklist(file)
        except ChecklistInvalid as exc:
            problems += exc.problems
            continue
        if checklist.slug in by_slug:
            problems.append(ChecklistProblem(
                str(file), None,
                f"slug {checklist.slug!r} is also used by {by_slug[checklist.slug]}"))
        else:
            by_slug[checklist.slug] = file
    return problems


# --- versions --------------------------------------------------------------------------

@dataclass(frozen=True)
class ChecklistDiff:
    added: tuple[str, ...]
    removed: tuple[str, ...]
    renamed: dict[str, str]
    changed: tuple[str, ...]


_COMPARED = ("title", "weight", "critical", "tiers", "probe")


def _renames(old: Checklist, new: Checklist) -> dict[str, str]:
    old_keys = {item.key for item in old.items}
    new_keys = {item.key for item in new.items}
    return {previous: item.key for item in new.items for previous in item.replaces
            if previous in old_keys and previous not in new_keys}


def diff_checklists(old: Checklist, new: Checklist) -> ChecklistDiff:
    """What changed between two versions of a checklist, by item key."""
    old_items = {item.key: item for item in old.items}
    renamed = _renames(old, new)
    targets = set(renamed.values())
    return ChecklistDiff(
        added=tuple(i.key for i in new.items if i.key not in old_items and i.key not in targets),
        removed=tuple(k for k in old_items if new.item(k) is None and k not in renamed),
        renamed=renamed,
        changed=tuple(
            i.key for i in new.items if i.key in old_items and any(
                getattr(i, name) != getattr(old_items[i.key], name) for name in _COMPARED)),
    )


def carry_over_keys(old: Checklist, new: Checklist) -> dict[str, str]:
    """new item key -> old item key whose answer carries over: the same key, or else the
    first key named in ``replaces`` that exists in the old version."""
    old_keys = {item.key for item in old.items}
    carried: dict[str, str] = {}
    for item in new.items:
        if item.key in old_keys:
            carried[item.key] = item.key
            continue
        previous = next((k for k in item.replaces if k in old_keys), None)
        if previous is not None:
            carried[item.key] = previous
    return carried

