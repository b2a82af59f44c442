"""The demo store: real public datasets from ../shared/datasets, each with its licence."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from core.ingest import IngestReport, ingest
from core.store import PROJECT_ROOT, Store


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
