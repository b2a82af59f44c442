"""A tagging job: choose the taggers for a backend, run them batch by batch as one recorded run.

Each batch's rows are committed in one short transaction; a killed job leaves its run 'running' (or
'failed'), and the next job with the same parameters on the same target resumes that run, skipping the
samples it already tagged (request errors are retried). Runs are never overwritten: a different
configuration is a new run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import core.tags.results as T
import core.tags.vocabulary as vocab
from core.store.database import Store
from core.store.runs import Run
from core.tags.taggers.base import NotComputed, Tagger, load_samples

BACKENDS = ("offline", "openai", "transformers")
Progress = Callable[[int, int, str], None]
OFFLINE_CANNOT = "the offline backend has no model for this tag (use an LLM judge, or train a classifier from labels)"


def cannot(backend: str, tag: str) -> str:
    """Why a tag was not computed, and how to get it (the text stored in its rows' detail)."""
    group = next((g for g, ts in vocab.TAG_GROUPS.items() if tag in ts and g in vocab.HOW_TO_GET), tag)
    how = vocab.HOW_TO_GET.get(group)
    if not how:
        return OFFLINE_CANNOT if backend == "offline" else f"the {backend} backend does not make this tag"
    base = "the offline backend has no model for this tag" if backend == "offline" else \
        f"the {backend} backend does not make this tag"
    return f"{base}; to get {group}: {how}"


@dataclass
class TagReport:
    run_id: int
    backend: str
    target: str
    tags: list[str]
    n_target: int
    n_tagged: int
    resumed: bool
    seconds: float
    status_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    computed: list[str] = field(default_factory=list)          # tags with at least one value
    not_computed: dict[str, str] = field(default_factory=dict)  # tags with none: why

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        """One honest sentence: what was computed for how many samples, and what was not, and why."""
        head = f"Run {self.run_id}{' (resumed)' if self.resumed else ''}: "
        if self.computed:
            n_ok = max(self.status_counts.get(t, {}).get("ok", 0) for t in self.computed)
            head += (f"computed {', '.join(self.computed)} for {n_ok}/{self.n_target} samples "
                     f"in {self.seconds:.0f}s.")
        else:
            head += f"no tag was computed for the {self.n_target} samples."
        if self.not_computed:
            head += " Not computed: " + "; ".join(f"{t} ({why})" for t, why in self.not_computed.items()) + "."
        return head


@dataclass
class JobConfig:
    """Everything that defines a tagging run (its params). Secrets (api_key) are never stored."""

    backend: str = "offline"
    tags: list[str] | None = None        # None: every group the backend computes (core.tags.results.available_groups)
    model: str | None = None             # judge model (openai/transformers)
    base_url: str | None = None          # OpenAI-compatible endpoint
    reward_models: list[str] = field(default_factory=list)
    aggregation: str = "min"             # ensembles: min (WCO) or uwo (Coste et al. 2023)
    lam: float = 0.5                     # UWO's lambda (reward_models.UWO_LAMBDA)
    guard_model: str | None = None       # a Llama Guard model (name or path) for safety
    classifiers: dict[str, int] = field(default_factory=dict)  # tag -> tag model run id
    reward_proxy: int | None = None      # tag model run id; None = newest finished one, if any
    embed_model: str | None = None
    language_mode: str = "high"
    batch_size: int = 64
    concurrency: int = 8
    timeout: float = 60.0
    max_retries: int = 4
    backoff: float = 1.0                 # seconds before the first retry; doubles each time
    prefill: bool = True
    max_new_tokens: int = 256

    def params(self, target: str) -> dict[str, Any]:
        from core.tags.taggers.llm_judge import PROMPT_VERSION

        out = asdict(self) | {"target": target}
        if self.backend in ("openai", "transformers"):
            out["prompt_version"] = PROMPT_VERSION
        return out

    def default_tags(self, store: Store) -> list[str]:
        """The groups this configuration computes (what runs when no tags are named)."""
        from core.tags.taggers.reward_proxy import latest_proxy

        return vocab.available_groups(self.backend, reward_models=bool(self.reward_models),
                                  guard_model=bool(self.guard_model), proxy=latest_proxy(store) is not None)


def build_taggers(store: Store, cfg: JobConfig, api_key: str | None = None) -> list[Tagger]:
    """The taggers that make `cfg.tags` with `cfg.backend`; what none can make is NotComputed."""
    from core.tags.taggers import learned, offline

    wanted, out = list(cfg.tags), []
    if cfg.backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}")

    def take(tagger: Tagger) -> None:
        out.append(tagger)
        for t in tagger.tags:
            if t in wanted:
                wanted.remove(t)

    for tag, run_id in cfg.classifiers.items():
        if tag in wanted:
            take(learned.ClassifierTagger(learned.load_model(store, run_id)))
    if {"turns", "n_chars", "n_tokens"} & set(wanted):
        take(offline.StructureTagger(wanted))
    if "language" in wanted:
        take(offline.LanguageTagger(cfg.language_mode))
    if "response_quality" in wanted and cfg.reward_models:
        from core.tags.taggers.reward_models import RewardModelTagger

        take(RewardModelTagger(cfg.reward_models, aggregation=cfg.aggregation, lam=cfg.lam))
    if "preference_proxy" in wanted:
        _preference_proxy(store, cfg, take)
    if cfg.guard_model and {"safety", "hazards"} & set(wanted):
        from core.tags.taggers.llama_guard import LlamaGuardTagger

        take(LlamaGuardTagger(cfg.guard_model, [t for t in ("safety", "hazards") if t in wanted],
                              max_new_tokens=min(cfg.max_new_tokens, 32)))
    if cfg.backend == "offline":
        if "category" in wanted:
            from core.tags.taggers.zeroshot import ZeroShotCategoryTagger

            take(ZeroShotCategoryTagger(cfg.embed_model))
    else:
        judged = [t for t in wanted if t in _judge_tags()]
        if judged:
            take(_judge(cfg, judged, api_key))
    by_reason: dict[str, list[str]] = {}
    for t in wanted:
        by_reason.setdefault(cannot(cfg.backend, t), []).append(t)
    out += [NotComputed(tags, reason) for reason, tags in by_reason.items()]
    return out


def _judge_tags() -> set[str]:
    from core.tags.taggers.llm_judge import PROMPT_OF_TAG

    return set(PROMPT_OF_TAG)


def _judge(cfg: JobConfig, judged: list[str], api_key: str | None) -> Tagger:
    from core.tags.taggers import llm_judge

    if not cfg.model:
        raise ValueError(f"the {cfg.backend} backend needs --model")
    if cfg.backend == "openai":
        if not cfg.base_url:
            raise ValueError("the openai backend needs --base-url (an OpenAI-compatible endpoint)")
        client = llm_judge.OpenAIClient(cfg.base_url, cfg.model, api_key=api_key, timeout=cfg.timeout,
                                        max_retries=cfg.max_retries, backoff=cfg.backoff,
                                        prefill=cfg.prefill)
        label = f"{cfg.model} at {cfg.base_url}"
    else:
        client = llm_judge.LocalGenerator(cfg.model, max_new_tokens=cfg.max_new_tokens)
        label = f"{cfg.model} (local transformers)"
    return llm_judge.JudgeTagger(client, judged, concurrency=cfg.concurrency, label=label)


def _preference_proxy(store: Store, cfg: JobConfig, take: Callable[[Tagger], None]) -> None:
    from core.tags.taggers import learned, reward_proxy

    run_id = cfg.reward_proxy or reward_proxy.latest_proxy(store)
    if run_id is not None:
        take(reward_proxy.ProxyTagger(learned.load_model(store, run_id)))
        cfg.reward_proxy = run_id
    else:
        take(NotComputed(["preference_proxy"], "no preference proxy trained in this store (train one from a "
                                               "preference dataset: assay tag-train-proxy, or the Tags page)"))


# ---- targets and runs ---------------------------------------------------------------------------------


def target_ids(store: Store, dataset: str | None = None, selection: str | int | None = None,
               limit: int | None = None) -> tuple[str, list[int], int | None]:
    """(target description, sample ids, dataset id or None) of a dataset or a saved selection."""
    if (dataset is None) == (selection is None):
        raise ValueError("tag either a dataset or a selection")
    if dataset is not None:
        info = store.dataset(dataset)
        ids = store.query_df("SELECT id FROM samples WHERE dataset_id = ? ORDER BY id", [info.dataset_id])["id"].tolist()
        target, dataset_id = f"dataset:{dataset}", info.dataset_id
    else:
        from core.browse.selections import selection_ids

        ids = sorted(selection_ids(store, selection))
        target, dataset_id = f"selection:{selection}", None
        ds = store.query_df("SELECT DISTINCT dataset_id FROM samples WHERE id IN (SELECT unnest(?::BIGINT[]))", [ids])
        if len(ds) == 1:
            dataset_id = int(ds["dataset_id"][0])
    if limit is not None:
        ids, target = ids[:limit], f"{target}[:{limit}]"
    return target, [int(i) for i in ids], dataset_id


def _start(store: Store, cfg: JobConfig, target: str, ids: list[int], dataset_id: int | None,
           methods: dict[str, str], resume: bool) -> Run:
    params = cfg.params(target) | {"methods": methods}  # the run record says how each tag is made

    def prepare(con: Any, run_id: int) -> None:
        con.execute("INSERT INTO tag_runs VALUES (?, ?, ?, ?, ?, ?, '{}')",
                    [run_id, cfg.backend, cfg.tags, target, len(ids), json.dumps(methods)])

    return store.run("tag", params, dataset_id=dataset_id, model=cfg.model or cfg.embed_model, sample_filter=target,
                     resume=resume, prepare=prepare)


def run_tagging(store: Store, *, dataset: str | None = None, selection: str | int | None = None,
                config: JobConfig | None = None, api_key: str | None = None, limit: int | None = None,
                resume: bool = True, progress: Progress | None = None, **overrides: Any) -> TagReport:
    """Tag a dataset or a saved selection; a recorded, resumable run. Keyword overrides set JobConfig
    fields (tags may be groups: 'category,difficulty,...')."""
    cfg = config or JobConfig()
    for key, value in overrides.items():
        if not hasattr(cfg, key):
            raise TypeError(f"unknown tagging option {key!r}")
        setattr(cfg, key, value)
    default = not cfg.tags
    cfg.tags = vocab.expand_groups(cfg.tags if cfg.tags else cfg.default_tags(store), extra=cfg.classifiers)
    if default and cfg.backend == "offline":  # the offline category tagger gives no secondary categories
        cfg.tags = [t for t in cfg.tags if t != "other_categories"]
    t0 = time.monotonic()
    target, ids, dataset_id = target_ids(store, dataset, selection, limit)
    taggers = build_taggers(store, cfg, api_key)
    methods = {t: m for tg in taggers for t, m in tg.methods().items()}
    with _start(store, cfg, target, ids, dataset_id, methods, resume) as run:
        run_id, resumed = run.run_id, run.resumed
        _prepare(store, run_id, taggers, ids, progress)
        done = T.done_ids(store, run_id)
        todo = [i for i in ids if i not in done]
        _loop(store, run_id, taggers, todo, len(ids) - len(todo), len(ids), cfg.batch_size, progress)
        for tg in taggers:
            tg.finish(store, run_id)
        _record_language(store, run_id, taggers)
        run.finish(len(ids))
    counts = T.status_counts(store, run_id)
    report_counts = {r["tag"]: {k: int(v) for k, v in r.items() if k != "tag" and v} for r in counts.to_dict("records")}
    metrics = T.tag_runs(store).set_index("run_id").loc[run_id, "metrics"]
    computed = [t for t in cfg.tags if report_counts.get(t, {}).get("ok")]
    why = {t: methods.get(t, "").removeprefix("not computed: ") for t in cfg.tags if t not in computed}
    for t in why:
        detail = store.query_df("SELECT any_value(detail) AS d FROM tags WHERE run_id = ? AND tag = ? "
                                "AND detail IS NOT NULL", [run_id, t])["d"]
        if len(detail) and isinstance(detail[0], str) and not methods.get(t, "").startswith("not computed"):
            why[t] = detail[0]
    return TagReport(run_id, cfg.backend, target, cfg.tags, len(ids), len(T.done_ids(store, run_id)), resumed,
                     time.monotonic() - t0, report_counts, metrics, computed, why)


def _prepare(store: Store, run_id: int, taggers: Sequence[Tagger], ids: list[int], progress: Progress | None) -> None:
    if progress:
        progress(0, len(ids), "loading models and measuring them")
    metrics: dict[str, Any] = {}
    for tg in taggers:
        metrics |= tg.prepare(store, ids)
        if not isinstance(tg, NotComputed):
            for t in tg.tags:
                metrics.setdefault(t, {"method": tg.methods()[t]})
    for t in (t for tg in taggers if isinstance(tg, NotComputed) for t in tg.tags):
        metrics[t] = {"method": "not computed", "accuracy": None}
    for t in ("turns", "n_chars", "n_tokens"):
        if t in metrics:
            metrics[t] |= {"accuracy": 1.0, "measured_on": "exact count"}
    T.set_metrics(store, run_id, metrics)


def _loop(store: Store, run_id: int, taggers: Sequence[Tagger], todo: list[int], done: int, total: int,
          batch_size: int, progress: Progress | None) -> None:
    if progress:
        progress(done, total, "tagging")
    for start in range(0, len(todo), batch_size):
        batch = load_samples(store, todo[start:start + batch_size])
        rows = [r for tg in taggers for r in tg.tag(batch)]
        T.write_tags(store, run_id, T.rows_frame(rows))
        done += len(batch)
        if progress:
            progress(done, total, "tagging")


def _record_language(store: Store, run_id: int, taggers: Sequence[Tagger]) -> None:
    from core.tags.taggers.offline import LanguageTagger

    for tg in taggers:
        if isinstance(tg, LanguageTagger):
            T.set_metrics(store, run_id, {"language": tg.measured()})
