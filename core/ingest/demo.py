"""The demo store: real public datasets from ../shared/datasets, each with its licence; where that folder
is absent and the Hugging Face hub is reachable, the same datasets from the hub (load_demo_from_hub)."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.ingest.importer import IngestReport, ingest
from core.store.database import PROJECT_ROOT, Store


@dataclass(frozen=True)
class DemoDataset:
    name: str
    path: str  # relative to the shared datasets folder
    license: str
    synthetic: bool = False
    is_eval: bool = False
    shape: str | None = None
    mapping: dict[str, str] | None = field(default=None, hash=False)
    description: str = ""
    label_field: str | None = None  # a class field whose values' names the dataset's README states


DEMO: tuple[DemoDataset, ...] = (
    DemoDataset("gsm8k-train", "gsm8k/train.jsonl", "MIT", description="Grade-school maths word problems (train)"),
    DemoDataset("gsm8k-test", "gsm8k/test.jsonl", "MIT", is_eval=True,
                description="GSM8K test split: an evaluation set, checked for contamination"),
    DemoDataset("mt-bench", "mt-bench/mt_bench_question.jsonl", "Apache-2.0", is_eval=True,
                description="80 two-turn benchmark questions in 8 categories"),
    DemoDataset("arena-hard", "arena-hard/arena_hard_v0.1_question.jsonl", "Apache-2.0", is_eval=True,
                description="500 hard user prompts in 250 topic clusters"),
    DemoDataset("alpaca-gpt4-demo-1k", "alpaca-gpt4-demo-1k/alpaca_en_demo.json", "CC-BY-NC-4.0", synthetic=True,
                description="Alpaca instructions answered by GPT-4 (non-commercial)"),
    DemoDataset("self-instruct-user-oriented", "self-instruct-user-oriented/user_oriented_instructions.jsonl",
                "Apache-2.0", description="252 expert-written instructions with app categories"),
    DemoDataset("oasst-sample", "oasst-sample/en_100_tree.jsonl", "Apache-2.0",
                description="100 OpenAssistant conversation trees, one sample per root-to-leaf path"),
    DemoDataset("hh-rlhf-harmless-test", "hh-rlhf-harmless-test/harmless-base_test.jsonl", "MIT",
                description="Anthropic HH harmless preference pairs (offensive content by design)"),
    DemoDataset("hate-offensive-crowd", "hate-offensive-crowd/labeled_data.csv", "MIT", shape="mapped",
                mapping={"text": "tweet"}, description="Tweets with 3-class crowd votes (offensive content by design)",
                label_field="class"),
)


def shared_datasets_dir() -> Path:
    env = os.environ.get("ASSAY_SHARED_DATASETS")
    return Path(env) if env else PROJECT_ROOT.parent / "shared" / "datasets"


def load_demo(store: Store, shared: Path | None = None, *, if_empty: bool = True,
              names: list[str] | None = None) -> list[IngestReport]:
    """Load the demo datasets that exist under `shared` and are not in the store yet."""
    folder = shared or shared_datasets_dir()
    if not folder.is_dir():
        return []
    present = set(store.dataset_names())
    if if_empty and present:
        return []
    reports = []
    for demo in DEMO:
        if (names and demo.name not in names) or demo.name in present or not (folder / demo.path).exists():
            continue
        reports.append(ingest(
            store, folder / demo.path, name=demo.name, shape=demo.shape, mapping=demo.mapping,
            license=demo.license, synthetic=demo.synthetic, is_eval=demo.is_eval, description=demo.description,
        ))
        if demo.label_field:
            _name_labels(store, demo, (folder / demo.path).parent)
    return reports


# ---- the same datasets from the Hugging Face hub, for a clone without ../shared ----------------------

HUB_ENDPOINT = "https://huggingface.co"
# A branch name, not a commit: used where no commit of the repository could be confirmed when this was
# written. The commit actually downloaded is recorded in the dataset's description ("...@<commit>").
UNPINNED = "main"
Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class HubSource:
    """Where the hub keeps a demo dataset: a dataset repository, a revision, the file(s) to fetch (a glob
    inside the repository), and how much of it the demo takes (a sample like the local one)."""

    repo_id: str
    pattern: str
    revision: str = UNPINNED
    limit: int | None = None
    keep: Callable[[dict[str, Any]], bool] | None = field(default=None, hash=False)
    shape: str | None = None  # where the hub's columns differ from the local file's


def _english_tree(record: dict[str, Any]) -> bool:
    return (record.get("prompt") or {}).get("lang") == "en"


# Commits given in full were read off the hub's own commit/tree pages for these files; the rest follow
# the branch `main` (see UNPINNED). Licences are the DEMO entries' (the source repositories' licences).
HUB_SOURCES: dict[str, HubSource] = {
    "gsm8k-train": HubSource("openai/gsm8k", "main/train-*.parquet"),
    "gsm8k-test": HubSource("openai/gsm8k", "main/test-*.parquet"),
    "mt-bench": HubSource("HuggingFaceH4/mt_bench_prompts", "raw/question.jsonl",
                          revision="916399161f7a163d1552d1f2c3f07acab192ed19"),
    "arena-hard": HubSource("lmarena-ai/arena-hard-auto", "data/arena-hard-v0.1/question.jsonl",
                            revision="c75cc2581ae7ac4b66ce5c804c002fe5a7c6339e"),
    "alpaca-gpt4-demo-1k": HubSource("vicgalle/alpaca-gpt4", "data/train-*.parquet", limit=999,
                                     shape="alpaca"),
    "oasst-sample": HubSource("OpenAssistant/oasst1", "*_oasst_ready.trees.jsonl.gz", limit=100, keep=_english_tree),
    "hh-rlhf-harmless-test": HubSource("Anthropic/hh-rlhf", "harmless-base/test.jsonl.gz"),
    "hate-offensive-crowd": HubSource("tdavidson/hate_speech_offensive", "data/train-*.parquet",
                                      revision="f3cd1b0e9a2f2c3103437b3863d7580570f99992"),
}


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers (never when HF_HUB_OFFLINE is set)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", HUB_ENDPOINT).rstrip("/")
    try:
        with urllib.request.urlopen(urllib.request.Request(endpoint + "/api/whoami-v2", method="HEAD"),
                                    timeout=timeout):
            return True
    except urllib.error.HTTPError:  # 401 without a token: the hub is there
        return True
    except (OSError, ValueError):
        return False


def fetch_hub_file(source: HubSource, cache_dir: Path | None = None) -> tuple[Path, str]:
    """The file of `source` in the local hub cache (downloaded first where the hub is reachable), and
    the commit it belongs to. Offline (HF_HUB_OFFLINE=1) it is read from the cache alone."""
    from huggingface_hub import snapshot_download

    folder = Path(snapshot_download(source.repo_id, repo_type="dataset", revision=source.revision,
                                    allow_patterns=[source.pattern], cache_dir=cache_dir))
    files = sorted(folder.glob(source.pattern))
    if not files:
        raise FileNotFoundError(f"{source.repo_id}@{source.revision}: no file matches {source.pattern!r}")
    return files[0], folder.name  # a snapshot folder is named by its commit


def _sample(path: Path, source: HubSource, folder: Path) -> Path:
    """The file itself, or (with a limit or a filter) its first matching records as JSON Lines."""
    if source.limit is None and source.keep is None:
        return path
    import gzip
    import json

    import pyarrow.parquet as pq

    def records() -> Iterator[dict[str, Any]]:
        if path.suffix == ".parquet":
            for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
                yield from batch.to_pylist()
            return
        with (gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")) as f:
            yield from (json.loads(line) for line in f if line.strip())

    out = folder / (path.name.split(".")[0] + ".sample.jsonl")
    n = 0
    with out.open("w", encoding="utf-8") as f:
        for record in records():
            if source.keep is None or source.keep(record):
                f.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
                n += 1
                if source.limit is not None and n >= source.limit:
                    break
    return out


def load_demo_from_hub(store: Store, *, cache_dir: Path | None = None, if_empty: bool = True,
                       names: list[str] | None = None, progress: Progress | None = None) -> list[IngestReport]:
    """Load the demo datasets from the Hugging Face hub (by id, at the revisions above, with their
    licences) into `store`; `progress(fraction, what)` as each one is fetched and loaded."""
    import tempfile

    tell = progress or (lambda fraction, what: None)
    present = set(store.dataset_names())
    if if_empty and present:
        return []
    todo = [d for d in DEMO if d.name in HUB_SOURCES and (not names or d.name in names) and d.name not in present]
    reports = []
    with tempfile.TemporaryDirectory(prefix="assay-demo-") as scratch:
        for i, demo in enumerate(todo):
            source = HUB_SOURCES[demo.name]
            tell(i / max(len(todo), 1), f"{demo.name}: fetching {source.repo_id} from the hub")
            path, commit = fetch_hub_file(source, cache_dir)
            tell((i + 0.5) / max(len(todo), 1), f"{demo.name}: loading")
            origin = f"hub {source.repo_id}@{commit}, {path.name}" + (f", first {source.limit}" if source.limit else "")
            reports.append(ingest(
                store, _sample(path, source, Path(scratch)), name=demo.name, shape=source.shape or demo.shape,
                mapping=demo.mapping,
                license=demo.license, synthetic=demo.synthetic, is_eval=demo.is_eval,
                description=f"{demo.description} ({origin})",
            ))
    tell(1.0, f"loaded {len(reports)} demo datasets from the hub")
    return reports


def demo_source(shared: Path | None = None) -> str:
    """Where the demo can come from here: "folder" (../shared/datasets), "hub", or "none"."""
    if (shared or shared_datasets_dir()).is_dir():
        return "folder"
    return "hub" if hub_reachable() else "none"


def readme_class_names(text: str) -> dict[str, str]:
    """Class names as a dataset README states them: "3-class (0 hate_speech, 1 offensive_language, 2 neither)"
    -> {"0": "hate speech", "1": "offensive language", "2": "neither"}; {} when it states none."""
    import re

    found = re.search(r"\d+-class \(([^)]*)\)", text)
    pairs = re.findall(r"(\d+)\s+([^,]+)", found.group(1)) if found else []
    return {value: name.strip().replace("_", " ") for value, name in pairs}


def _name_labels(store: Store, demo: DemoDataset, folder: Path) -> None:
    from core.noise.label_names import set_label_names

    for readme in sorted(folder.glob("README*")):
        names = readme_class_names(readme.read_text(encoding="utf-8", errors="replace"))
        if names:
            set_label_names(store, demo.name, demo.label_field, names)
            return
