"""The mixture recipe: dataclasses, YAML load/dump, and validation errors that name the field.

A recipe, as YAML:

    name: math-and-chat
    seed: 7
    sources:
      - dataset: gsm8k-train
        count: 500                   # or weight: 2.0, or tokens: 100000
        category: math               # used when the `by` field has no value for a sample
        filters:
          - {field: n_tokens, op: le, value: 1024}
          - {field: meta.category, op: in, value: [writing, coding]}
          - {field: tag.reward, op: percentile_ge, value: 30, by: tag.task_category}
          - {flag: not_contaminated}
          - {flag: not_excluded}
      - dataset: alpaca-gpt4-demo-1k
        weight: 1
        replace: true                # may upsample (repeat) when the source is too small
    targets:
      total: 1000                    # or total_tokens: 500000
      by: source                     # the field proportions refer to (source, meta.x, tag.x, label.s.f)
      proportions: {math: 0.5, alpaca-gpt4-demo-1k: 0.5}
    dedup: {method: exact}           # or {run: 12}; one sample kept per duplicate group, across sources
    selection: {method: random}      # top (score:), diverse / kmq (clusters:, score:, temperature:, embed_run:)
    weights: {field: meta.weight}    # or {run: 5}: a per-sample `weight` field in the export
    export: {formats: [openai, parquet], validation: 0.05, shuffle: true}

Field references (`field:`): a samples column (n_tokens, n_turns, n_chars, row_idx, id, source_id, text),
`source` (the dataset's name), `meta.<key>` (a field of the sample's meta JSON), `tag.<name>` (a machine
tag), `label.<schema>.<field>` (the current hand label), `signal:<name>` (any signal of core/signals, e.g.
`signal:noise.cleanlab.flag` with op is_true, `signal:contamination` eq clean, `selection.score:
signal:reward.proxy`). `export.signals: [tag.category, dup.status]` adds those signals as provenance
columns and records the run behind each in the manifest.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core import safe_yaml
from core.errors import InputError

SAMPLE_FIELDS = ("id", "row_idx", "source_id", "n_turns", "n_chars", "n_tokens", "text")
FIELD_PREFIXES = ("meta.", "tag.", "label.", "signal:")
SIGNAL_PREFIX = "signal:"  # signal:NAME reads any signal of the registry (core/signals), newest finished run
OPS = ("eq", "ne", "in", "not_in", "gt", "ge", "lt", "le", "between", "contains", "not_contains",
       "is_null", "not_null", "is_true", "is_false", "percentile_ge", "percentile_le")
FLAGS = ("not_contaminated", "not_excluded", "not_unsafe")
SELECTION_METHODS = ("random", "top", "diverse", "kmq")
DEDUP_METHODS = ("exact", "near", "semdedup", "semantic")
FORMATS = ("openai", "sharegpt", "alpaca", "trl", "parquet", "hf")  # trl: prompt/chosen/rejected message lists
NO_VALUE_OPS = ("is_null", "not_null", "is_true", "is_false")


class RecipeError(InputError):
    """A recipe that cannot be used; the message names the field (e.g. `sources[1].filters[0].op`)."""

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        super().__init__(f"{where}: {message}")


def check_field(ref: str, where: str) -> str:
    """A field reference is a known samples column, `source`, or prefix + name."""
    if not isinstance(ref, str) or not ref:
        raise RecipeError(where, f"expected a field name, got {ref!r}")
    if ref in SAMPLE_FIELDS or ref == "source":
        return ref
    for prefix in FIELD_PREFIXES:
        if ref.startswith(prefix) and len(ref) > len(prefix):
            if prefix == "label." and ref.count(".") < 2:
                raise RecipeError(where, f"a hand label is label.<schema>.<field>, got {ref!r}")
            return ref
    raise RecipeError(where, f"unknown field {ref!r}; use one of {', '.join(SAMPLE_FIELDS)}, source, "
                             "meta.<key>, tag.<name>, label.<schema>.<field> or signal:<name>")


@dataclass
class FilterSpec:
    """One condition a sample must meet: a field comparison, or a flag such as not_contaminated."""

    field: str | None = None
    op: str | None = None
    value: Any = None
    by: str | None = None  # percentile ops: the category the percentile is taken within
    flag: str | None = None
    run: int | None = None  # flags: a specific contamination run (default: the latest per dataset)

    def describe(self) -> str:
        if self.flag:
            return self.flag.replace("_", " ")
        if self.op in NO_VALUE_OPS:
            return f"{self.field} {self.op.replace('_', ' ')}"
        text = f"{self.field} {self.op} {json.dumps(self.value, ensure_ascii=False)}"
        return text + (f" within {self.by}" if self.by else "")

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class SourceSpec:
    dataset: str
    weight: float | None = None
    count: int | None = None
    tokens: int | None = None
    replace: bool = False
    category: str | None = None
    filters: list[FilterSpec] = field(default_factory=list)

    @property
    def mode(self) -> str:
        return "count" if self.count is not None else "tokens" if self.tokens is not None else "weight"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dataset": self.dataset}
        for key in ("weight", "count", "tokens", "category"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.replace:
            out["replace"] = True
        if self.filters:
            out["filters"] = [f.to_dict() for f in self.filters]
        return out


@dataclass
class Targets:
    total: int | None = None
    total_tokens: int | None = None
    by: str | None = None
    proportions: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if v not in (None, {})}
        return out


@dataclass
class DedupSpec:
    method: str | None = None
    run: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class SelectionSpec:
    method: str = "random"
    score: str | None = None
    clusters: int | None = None
    temperature: float = 1.0
    embed_run: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if v is not None}
        if out.get("temperature") == 1.0:
            out.pop("temperature")
        return out


@dataclass
class WeightSpec:
    field: str | None = None
    run: int | None = None
    default: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if v is not None}
        if out.get("default") == 1.0:
            out.pop("default")
        return out


@dataclass
class ExportSpec:
    formats: list[str] = field(default_factory=lambda: ["openai"])
    validation: float = 0.0
    shuffle: bool = True
    signals: list[str] = field(default_factory=list)  # written as extra provenance columns, runs in the manifest

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if not self.signals:  # absent unless used: older recipes keep their fingerprints
            out.pop("signals")
        return out


@dataclass
class Recipe:
    name: str
    sources: list[SourceSpec]
    seed: int = 0
    targets: Targets = field(default_factory=Targets)
    dedup: DedupSpec | None = None
    selection: SelectionSpec = field(default_factory=SelectionSpec)
    weights: WeightSpec | None = None
    export: ExportSpec = field(default_factory=ExportSpec)
    allow_shortfall: bool = False
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        out["seed"] = self.seed
        out["sources"] = [s.to_dict() for s in self.sources]
        if self.targets.to_dict():
            out["targets"] = self.targets.to_dict()
        if self.dedup is not None:
            out["dedup"] = self.dedup.to_dict()
        out["selection"] = self.selection.to_dict()
        if self.weights is not None:
            out["weights"] = self.weights.to_dict()
        out["export"] = self.export.to_dict()
        if self.allow_shortfall:
            out["allow_shortfall"] = True
        return out

    def to_yaml(self) -> str:
        return dump_recipe(self)

    def fingerprint(self) -> str:
        """SHA-256 of the canonical JSON form: two recipes that mean the same have the same fingerprint."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    @property
    def datasets(self) -> list[str]:
        return [s.dataset for s in self.sources]


# ---- parsing -----------------------------------------------------------------------------------


def _mapping(raw: Any, where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RecipeError(where, f"expected a mapping, got {type(raw).__name__}")
    unknown = [k for k in raw if k not in allowed]
    if unknown:
        raise RecipeError(f"{where}.{unknown[0]}", f"unknown key; expected one of {', '.join(allowed)}")
    return raw


def _number(raw: Any, where: str, *, integer: bool = False, positive: bool = True, allow_zero: bool = False) -> Any:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise RecipeError(where, f"expected a number, got {raw!r}")
    if integer and not float(raw).is_integer():
        raise RecipeError(where, f"expected a whole number, got {raw!r}")
    if positive and (raw < 0 or (raw == 0 and not allow_zero)):
        raise RecipeError(where, f"must be {'at least 0' if allow_zero else 'above 0'}, got {raw!r}")
    return int(raw) if integer else float(raw)


def _choice(raw: Any, where: str, choices: tuple[str, ...]) -> str:
    if raw not in choices:
        raise RecipeError(where, f"expected one of {', '.join(choices)}, got {raw!r}")
    return raw


def _parse_filter(raw: Any, where: str) -> FilterSpec:
    spec = _mapping(raw, where, ("field", "op", "value", "by", "flag", "run"))
    if "flag" in spec:
        extra = [k for k in spec if k not in ("flag", "run")]
        if extra:
            raise RecipeError(f"{where}.{extra[0]}", "a flag filter takes only `flag` (and `run`)")
        run = _number(spec["run"], f"{where}.run", integer=True) if spec.get("run") is not None else None
        return FilterSpec(flag=_choice(spec["flag"], f"{where}.flag", FLAGS), run=run)
    if "field" not in spec:
        raise RecipeError(where, "a filter needs `field` and `op` (or `flag`)")
    ref = check_field(spec["field"], f"{where}.field")
    op = _choice(spec.get("op"), f"{where}.op", OPS)
    value = spec.get("value")
    if op not in NO_VALUE_OPS and value is None:
        raise RecipeError(f"{where}.value", f"operator {op} needs a value")
    if op in ("in", "not_in") and not isinstance(value, list):
        value = [value]
    if op == "between" and (not isinstance(value, list) or len(value) != 2):
        raise RecipeError(f"{where}.value", "between needs [low, high] (either may be null)")
    if op.startswith("percentile"):
        _number(value, f"{where}.value", allow_zero=True)
        if not 0 <= float(value) <= 100:
            raise RecipeError(f"{where}.value", f"a percentile is between 0 and 100, got {value!r}")
    by = check_field(spec["by"], f"{where}.by") if spec.get("by") is not None else None
    if by and not op.startswith("percentile"):
        raise RecipeError(f"{where}.by", "`by` applies to percentile_ge / percentile_le only")
    return FilterSpec(field=ref, op=op, value=value, by=by)


def _parse_source(raw: Any, where: str) -> SourceSpec:
    spec = _mapping(raw, where, ("dataset", "weight", "count", "tokens", "replace", "category", "filters"))
    if not isinstance(spec.get("dataset"), str) or not spec["dataset"]:
        raise RecipeError(f"{where}.dataset", "every source names a dataset")
    given = [k for k in ("weight", "count", "tokens") if spec.get(k) is not None]
    if len(given) > 1:
        raise RecipeError(f"{where}.{given[1]}", f"give one of weight, count or tokens, not {' and '.join(given)}")
    filters = spec.get("filters") or []
    if not isinstance(filters, list):
        raise RecipeError(f"{where}.filters", "expected a list of filters")
    return SourceSpec(
        dataset=spec["dataset"],
        weight=_number(spec["weight"], f"{where}.weight") if spec.get("weight") is not None else None,
        count=_number(spec["count"], f"{where}.count", integer=True) if spec.get("count") is not None else None,
        tokens=_number(spec["tokens"], f"{where}.tokens", integer=True) if spec.get("tokens") is not None else None,
        replace=bool(spec.get("replace", False)),
        category=str(spec["category"]) if spec.get("category") is not None else None,
        filters=[_parse_filter(f, f"{where}.filters[{i}]") for i, f in enumerate(filters)],
    )


def _parse_targets(raw: Any) -> Targets:
    spec = _mapping(raw, "targets", ("total", "total_tokens", "by", "proportions"))
    if spec.get("total") is not None and spec.get("total_tokens") is not None:
        raise RecipeError("targets.total_tokens", "give total or total_tokens, not both")
    props = spec.get("proportions") or {}
    if not isinstance(props, dict):
        raise RecipeError("targets.proportions", "expected a mapping category: share")
    props = {str(k): _number(v, f"targets.proportions.{k}", allow_zero=True) for k, v in props.items()}
    if props:
        total = sum(props.values())
        if total <= 0:
            raise RecipeError("targets.proportions", "the shares add up to 0")
        if abs(total - 1.0) > 1e-6 and abs(total - 100.0) > 1e-6:
            raise RecipeError("targets.proportions", f"the shares add up to {total:g}; make them add up to 1 (or 100)")
        props = {k: v / total for k, v in props.items()}
    by = check_field(spec["by"], "targets.by") if spec.get("by") is not None else None
    if props and not by:
        by = "source"
    return Targets(
        total=_number(spec["total"], "targets.total", integer=True) if spec.get("total") is not None else None,
        total_tokens=(_number(spec["total_tokens"], "targets.total_tokens", integer=True)
                      if spec.get("total_tokens") is not None else None),
        by=by, proportions=props)


def _parse_selection(raw: Any) -> SelectionSpec:
    spec = _mapping(raw, "selection", ("method", "score", "clusters", "temperature", "embed_run"))
    method = _choice(spec.get("method", "random"), "selection.method", SELECTION_METHODS)
    score = check_field(spec["score"], "selection.score") if spec.get("score") is not None else None
    if method in ("top", "kmq") and not score:
        raise RecipeError("selection.score", f"method {method} needs a score field (e.g. tag.reward)")
    return SelectionSpec(
        method=method, score=score,
        clusters=_number(spec["clusters"], "selection.clusters", integer=True) if spec.get("clusters") else None,
        temperature=_number(spec.get("temperature", 1.0), "selection.temperature"),
        embed_run=_number(spec["embed_run"], "selection.embed_run", integer=True) if spec.get("embed_run") else None)


def _parse_dedup(raw: Any) -> DedupSpec | None:
    if raw in (None, False):
        return None
    spec = _mapping(raw, "dedup", ("method", "run"))
    if spec.get("run") is None and spec.get("method") is None:
        raise RecipeError("dedup", "name a dedup run (run: N) or a method (exact, near, semdedup, semantic)")
    method = _choice(spec["method"], "dedup.method", DEDUP_METHODS) if spec.get("method") else None
    run = _number(spec["run"], "dedup.run", integer=True) if spec.get("run") is not None else None
    return DedupSpec(method=method, run=run)


def _parse_weights(raw: Any) -> WeightSpec | None:
    if raw in (None, False):
        return None
    spec = _mapping(raw, "weights", ("field", "run", "default"))
    if (spec.get("field") is None) == (spec.get("run") is None):
        raise RecipeError("weights", "give a weight field (field: meta.x) or a noise run (run: N)")
    return WeightSpec(
        field=check_field(spec["field"], "weights.field") if spec.get("field") else None,
        run=_number(spec["run"], "weights.run", integer=True) if spec.get("run") is not None else None,
        default=_number(spec.get("default", 1.0), "weights.default", allow_zero=True))


def _parse_export(raw: Any) -> ExportSpec:
    spec = _mapping(raw, "export", ("formats", "validation", "shuffle", "signals"))
    formats = spec.get("formats", ["openai"])
    if isinstance(formats, str):
        formats = [formats]
    if not isinstance(formats, list) or not formats:
        raise RecipeError("export.formats", f"expected a list among {', '.join(FORMATS)}")
    formats = [_choice(f, f"export.formats[{i}]", FORMATS) for i, f in enumerate(formats)]
    validation = _number(spec.get("validation", 0.0), "export.validation", allow_zero=True)
    if validation >= 1:
        raise RecipeError("export.validation", f"a fraction below 1, got {validation!r}")
    signals = spec.get("signals") or []
    if isinstance(signals, str):
        signals = [signals]
    if not isinstance(signals, list) or not all(isinstance(n, str) and n for n in signals):
        raise RecipeError("export.signals", "expected a list of signal names, e.g. [tag.category, dup.status]")
    return ExportSpec(formats=list(dict.fromkeys(formats)), validation=validation,
                      shuffle=bool(spec.get("shuffle", True)), signals=list(dict.fromkeys(signals)))


def recipe_from_dict(raw: Any) -> Recipe:
    spec = _mapping(raw, "recipe", ("name", "description", "seed", "sources", "targets", "dedup", "selection",
                                    "weights", "export", "allow_shortfall"))
    sources = spec.get("sources")
    if not isinstance(sources, list) or not sources:
        raise RecipeError("sources", "a recipe needs at least one source (a list of {dataset: ...})")
    seed = spec.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise RecipeError("seed", f"expected a whole number >= 0, got {seed!r}")
    parsed = [_parse_source(s, f"sources[{i}]") for i, s in enumerate(sources)]
    names = [s.dataset for s in parsed]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise RecipeError(f"sources[{i}].dataset", f"{name!r} is listed twice; merge its entries")
    return Recipe(
        name=str(spec.get("name") or "mixture"), description=str(spec.get("description") or ""), seed=seed,
        sources=parsed, targets=_parse_targets(spec.get("targets")), dedup=_parse_dedup(spec.get("dedup")),
        selection=_parse_selection(spec.get("selection")), weights=_parse_weights(spec.get("weights")),
        export=_parse_export(spec.get("export")), allow_shortfall=bool(spec.get("allow_shortfall", False)))


def load_recipe(text_or_path: str | Path) -> Recipe:
    """Parse a recipe from YAML text or a .yaml file; RecipeError names the faulty field."""
    try:  # no aliases, bounded size: a 400-byte alias bomb must not expand to gigabytes
        if isinstance(text_or_path, Path) or (isinstance(text_or_path, str) and "\n" not in text_or_path
                                              and text_or_path.endswith((".yaml", ".yml"))):
            raw = safe_yaml.load_file(text_or_path)
        else:
            raw = safe_yaml.load(str(text_or_path))
    except safe_yaml.YamlError as exc:
        raise RecipeError(exc.where, exc.problem) from None
    return recipe_from_dict(raw)


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False, allow_unicode=True, default_flow_style=None, width=100)
