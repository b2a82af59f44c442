"""Record shapes: detection and normalisation, on real shared datasets and small literal records."""

from __future__ import annotations

import csv
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from core.ingest.shapes import (
    MAPPING_KEYS,
    SHAPES,
    Normalised,
    RecordError,
    ShapeError,
    check_mapping,
    describe_shapes,
    detect_shape,
    normalise,
)


def load_lines(shared: Path, relpath: str, n: int | None = None) -> list[Any]:
    """The first `n` JSON lines (all when n is None) of a file under the shared datasets folder."""
    out: list[Any] = []
    with open(shared / relpath, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                out.append(json.loads(line))
                if n is not None and len(out) >= n:
                    break
    return out


def load_json_list(shared: Path, relpath: str, n: int | None = None) -> list[Any]:
    with open(shared / relpath, encoding="utf-8") as f:
        return json.load(f)[:n]


def all_samples(records: list[dict], shape: str, **kw: Any) -> list[Normalised]:
    return [s for r in records for s in normalise(r, shape, **kw)]


def assert_json_meta(samples: list[Normalised]) -> None:
    for s in samples:
        json.dumps(s.meta, allow_nan=False)  # flat and JSON-serialisable
        assert all(isinstance(v, (str, int, float, bool, list, type(None))) for v in s.meta.values())


# --------------------------------------------------------------------------- detection on real files

REAL_FILES = [
    ("alpaca-gpt4-demo-1k/alpaca_en_demo.json", "alpaca"),
    ("alpaca-eval/gpt4_model_outputs.json", "alpaca"),
    ("gsm8k/train.jsonl", "qa"),
    ("gsm8k/test.jsonl", "qa"),
    ("mt-bench/mt_bench_question.jsonl", "turns"),
    ("mt-bench/vicuna_bench_question.jsonl", "turns"),
    ("arena-hard/arena_hard_v0.1_question.jsonl", "turns"),
    ("self-instruct-user-oriented/user_oriented_instructions.jsonl", "self_instruct"),
    ("alpaca/seed_tasks.jsonl", "self_instruct"),
    ("oasst-sample/en_100_tree.jsonl", "oasst"),
    ("oasst-sample/en_100_message.jsonl", "oasst"),
    ("hh-rlhf-harmless-test/harmless-base_test.jsonl", "hh"),
]


def _load_any(shared: Path, relpath: str, n: int | None = None) -> list[Any]:
    return load_json_list(shared, relpath, n) if relpath.endswith(".json") else load_lines(shared, relpath, n)


@pytest.mark.parametrize("relpath, shape", REAL_FILES)
def test_detects_real_files_and_normalises_every_record(shared: Path, relpath: str, shape: str) -> None:
    records = _load_any(shared, relpath)
    assert detect_shape(records[:100]) == shape
    samples = all_samples(records, shape)
    assert len(samples) >= len(records)
    for s in samples:
        assert s.messages and all(m["role"] in {"system", "user", "assistant"} for m in s.messages)
        assert all(type(m["content"]) is str for m in s.messages)
    assert_json_meta(samples)
    ids = [s.source_id for s in samples if s.source_id is not None]
    assert len(ids) == len(set(ids)), "samples made from records with ids get distinct ids"


def test_unknown_real_shape_raises_shape_error_listing_keys(shared: Path) -> None:
    records = load_lines(shared, "gsm8k/example_model_solutions.jsonl", 20)
    with pytest.raises(ShapeError) as e:
        detect_shape(records)
    msg = str(e.value)
    assert "ground_truth" in msg and "6b_finetuning" in msg  # the keys seen
    assert "qa (question/answer)" in msg and "alpaca (instruction/input/output)" in msg  # the closest shapes
    assert "--map prompt=question --map response=ground_truth" in msg and len(msg) < 420  # short, and a way out


# --------------------------------------------------------------------------- real shapes, in detail


def test_alpaca_real(shared: Path) -> None:
    records = load_json_list(shared, "alpaca-gpt4-demo-1k/alpaca_en_demo.json")
    with_input = 0
    for r in records:
        (s,) = normalise(r, "alpaca")
        user, assistant = s.messages
        expected = r["instruction"] + ("\n\n" + r["input"] if r["input"] else "")
        with_input += bool(r["input"])
        assert user == {"role": "user", "content": expected}
        assert assistant == {"role": "assistant", "content": r["output"]}
        assert s.source_id is None and s.rejected is None and s.meta == {}
    assert with_input == 412  # the README's count of records with a non-empty input


def test_gsm8k_qa_real(shared: Path) -> None:
    records = load_lines(shared, "gsm8k/train.jsonl")
    assert len(records) == 7473
    for r in records[:500]:
        (s,) = normalise(r, "qa")
        assert [m["role"] for m in s.messages] == ["user", "assistant"]
        assert s.messages[0]["content"] == r["question"] and s.messages[1]["content"] == r["answer"]


def test_mt_bench_turns_with_reference(shared: Path) -> None:
    records = load_lines(shared, "mt-bench/mt_bench_question.jsonl")
    by_id = {r["question_id"]: r for r in records}
    (plain,) = normalise(by_id[81], "turns")
    assert [m["role"] for m in plain.messages] == ["user", "user"]
    assert [m["content"] for m in plain.messages] == by_id[81]["turns"]
    assert plain.source_id == "81" and plain.meta["category"] == "writing"
    assert plain.meta["has_reference"] is False
    (ref,) = normalise(by_id[101], "turns")  # reasoning question with reference answers
    assert [m["role"] for m in ref.messages] == ["user", "assistant", "user", "assistant"]
    assert ref.messages[1]["content"] == by_id[101]["reference"][0]
    assert ref.messages[3]["content"] == by_id[101]["reference"][1]
    assert ref.meta["has_reference"] is True and "reference" not in ref.meta


def test_arena_hard_dict_turns(shared: Path) -> None:
    records = load_lines(shared, "arena-hard/arena_hard_v0.1_question.jsonl", 50)
    for r in records:
        (s,) = normalise(r, "turns")
        assert [m["content"] for m in s.messages] == [t["content"] for t in r["turns"]]
        assert all(m["role"] == "user" for m in s.messages)
        assert s.source_id == r["question_id"]
        assert s.meta["cluster"] == r["cluster"] and s.meta["category"] == "arena-hard-v0.1"


def test_self_instruct_real(shared: Path) -> None:
    records = load_lines(shared, "self-instruct-user-oriented/user_oriented_instructions.jsonl")
    samples = all_samples(records, "self_instruct")
    assert len(samples) == sum(len(r["instances"]) for r in records)
    r = records[0]
    s = samples[0]
    assert s.source_id == f"{r['id']}#0"
    inst = r["instances"][0]
    assert s.messages[0]["content"] == r["instruction"] + "\n\n" + inst["input"]
    assert s.messages[1] == {"role": "assistant", "content": inst["output"]}
    assert s.meta["motivation_app"] == "Grammarly" and s.meta["instance_index"] == 0


def test_self_instruct_many_instances_get_distinct_ids() -> None:
    rec = {
        "id": "t1",
        "instruction": "Add one.",
        "instances": [{"input": "1", "output": "2"}, {"input": "", "output": "3"}],
    }
    a, b = normalise(rec, "self_instruct")
    assert (a.source_id, b.source_id) == ("t1#0", "t1#1")
    assert b.messages[0]["content"] == "Add one."  # empty input adds nothing


# --------------------------------------------------------------------------- OpenAssistant


def _live(children: list[dict] | None) -> list[dict]:
    return [c for c in children or [] if not c.get("deleted")]


def _count_leaves(node: dict) -> int:
    kids = _live(node.get("replies"))
    return 1 if not kids else sum(_count_leaves(k) for k in kids)


def _index(node: dict, out: dict[str, dict]) -> dict[str, dict]:
    out[node["message_id"]] = node
    for k in node.get("replies") or []:
        _index(k, out)
    return out


@pytest.mark.parametrize("relpath", ["oasst-sample/en_100_tree.jsonl", "oasst-sample/en_100_message.jsonl"])
def test_oasst_one_sample_per_leaf_with_ranks_and_votes(shared: Path, relpath: str) -> None:
    records = load_lines(shared, relpath)
    total = 0
    ranked = 0
    for rec in records:
        root = rec["prompt"] if "message_tree_id" in rec else rec
        index = _index(root, {})
        samples = normalise(rec, "oasst")
        assert len(samples) == _count_leaves(root)
        total += len(samples)
        for s in samples:
            ids = s.meta["oasst_message_ids"]
            assert ids[0] == root["message_id"] and s.source_id == f"{root['message_id']}/{ids[-1]}"
            assert not _live(index[ids[-1]].get("replies"))  # ends at a leaf
            nodes = [index[i] for i in ids]
            assert [m["content"] for m in s.messages] == [n["text"] for n in nodes]
            roles = {"prompter": "user", "assistant": "assistant"}
            assert [m["role"] for m in s.messages] == [roles[n["role"]] for n in nodes]
            assert s.meta["oasst_ranks"] == [n.get("rank") for n in nodes if n["role"] == "assistant"]
            ranked += sum(r is not None for r in s.meta["oasst_ranks"])
            ups = [(n.get("emojis") or {}).get("+1", 0) for n in nodes]
            if any(ups):
                assert s.meta["oasst_emoji_up"] == ups
            assert s.meta["oasst_synthetic"] == [bool(n.get("synthetic")) for n in nodes]
        assert len({s.source_id for s in samples}) == len(samples)
        assert_json_meta(samples)
    assert total == 626 and ranked > 0


def test_oasst_both_formats_agree(shared: Path) -> None:
    trees = load_lines(shared, "oasst-sample/en_100_tree.jsonl", 10)
    messages = load_lines(shared, "oasst-sample/en_100_message.jsonl", 10)
    for t, m in zip(trees, messages, strict=True):
        a, b = normalise(t, "oasst"), normalise(m, "oasst")
        assert [s.messages for s in a] == [s.messages for s in b]
        assert [s.source_id for s in a] == [s.source_id for s in b]


def test_oasst_skips_deleted_messages() -> None:
    tree = {
        "message_id": "r",
        "role": "prompter",
        "text": "Hi?",
        "replies": [
            {"message_id": "a", "role": "assistant", "text": "Hello.", "rank": 0, "emojis": {"+1": 2}},
            {
                "message_id": "b",
                "role": "assistant",
                "text": "gone",
                "deleted": True,
                "replies": [{"message_id": "c", "role": "prompter", "text": "orphan"}],
            },
        ],
    }
    (s,) = normalise(tree, "oasst")
    assert s.source_id == "r/a" and s.meta["oasst_ranks"] == [0] and s.meta["oasst_emoji_up"] == [0, 2]
    assert normalise({**tree, "deleted": True}, "oasst") == []


def test_oasst_bad_role_names_the_path() -> None:
    tree = {
        "message_tree_id": "t",
        "prompt": {
            "message_id": "r",
            "role": "prompter",
            "text": "Hi",
            "replies": [{"message_id": "a", "role": "robot", "text": "x"}],
        },
    }
    with pytest.raises(RecordError) as e:
        normalise(tree, "oasst")
    assert e.value.field == "prompt.replies[0].role" and "expected prompter or assistant" in str(e.value)


# --------------------------------------------------------------------------- hh transcripts


def test_hh_real_roles_alternate_and_text_round_trips(shared: Path) -> None:
    records = load_lines(shared, "hh-rlhf-harmless-test/harmless-base_test.jsonl")
    names = {"user": "Human", "assistant": "Assistant"}
    alternating = 0
    for r in records:
        (s,) = normalise(r, "hh")
        for convo, original in ((s.messages, r["chosen"]), (s.rejected, r["rejected"])):
            assert convo is not None
            roles = [m["role"] for m in convo]
            # roles follow the transcript's markers, found independently
            assert [names[x] for x in roles] == re.findall(r"\n\n(Human|Assistant):", original)
            alternating += all(a != b for a, b in zip(roles, roles[1:], strict=False)) and roles[0] == "user"
            assert "".join(f"\n\n{names[m['role']]}: {m['content']}" for m in convo) == original
        assert 1 <= s.meta["shared_prefix_turns"] < len(s.messages)
        assert s.messages[: s.meta["shared_prefix_turns"]] == s.rejected[: s.meta["shared_prefix_turns"]]
    # a handful of real transcripts have two Assistant turns in a row; they are kept as written
    assert alternating >= 0.99 * 2 * len(records)


def test_hh_bad_transcript() -> None:
    with pytest.raises(RecordError) as e:
        normalise({"chosen": "\n\nHuman: hi\n\nAssistant: yo", "rejected": "no markers"}, "hh")
    assert e.value.field == "rejected" and "expected a transcript starting with 'Human:'" in str(e.value)


# --------------------------------------------------------------------------- literal records


def test_dolly() -> None:
    rec = {
        "instruction": "Summarise.",
        "context": "Long text.",
        "response": "Short.",
        "category": "summarization",
    }
    assert detect_shape([rec]) == "dolly"
    (s,) = normalise(rec, "dolly")
    assert s.messages == [
        {"role": "user", "content": "Summarise.\n\nLong text."},
        {"role": "assistant", "content": "Short."},
    ]
    assert s.meta == {"category": "summarization"}
    (s2,) = normalise({**rec, "context": ""}, "dolly")
    assert s2.messages[0]["content"] == "Summarise."


def test_sharegpt_with_system_and_roles() -> None:
    rec = {
        "id": "c1",
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "Hi"},
            {"from": "gpt", "value": "Hello"},
            {"from": "user", "value": "Bye"},
            {"from": "chatgpt", "value": "Bye!"},
        ],
    }
    assert detect_shape([rec]) == "sharegpt"
    (s,) = normalise(rec, "sharegpt")
    assert [m["role"] for m in s.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert s.source_id == "c1" and s.meta == {"id": "c1"}


def test_sharegpt_unknown_from_names_the_index() -> None:
    rec = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "robot", "value": "{}"}]}
    with pytest.raises(RecordError) as e:
        normalise(rec, "sharegpt")
    assert e.value.field == "conversations[1].from"
    assert "expected one of" in str(e.value) and "'robot'" in str(e.value)


def test_openai_system_and_list_of_parts() -> None:
    rec = {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look:"},
                    {"type": "image_url", "image_url": {}},
                    {"type": "text", "text": "what is it?"},
                ],
            },
            {"role": "assistant", "content": "A cat."},
        ],
        "source": "x",
        "score": 0.5,
    }
    assert detect_shape([rec]) == "openai"
    (s,) = normalise(rec, "openai")
    assert s.messages == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Look:\nwhat is it?"},
        {"role": "assistant", "content": "A cat."},
    ]
    assert s.meta == {"source": "x", "score": 0.5}


def test_preference_string_form() -> None:
    rec = {"prompt": "2+2?", "chosen": "4", "rejected": "5", "score": 1.0}
    assert detect_shape([rec]) == "preference"
    (s,) = normalise(rec, "preference")
    assert s.messages == [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    assert s.rejected == [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "5"}]
    assert s.meta == {"score": 1.0, "shared_prefix_turns": 1, "prompt_turns": 1}


def test_preference_message_lists_do_not_duplicate_the_prompt() -> None:
    prompt = [{"role": "user", "content": "2+2?"}]
    full = {  # UltraFeedback style: chosen/rejected are whole conversations that start with the prompt
        "prompt": "2+2?",
        "chosen": prompt + [{"role": "assistant", "content": "4"}],
        "rejected": prompt + [{"role": "assistant", "content": "5"}],
        "messages": prompt + [{"role": "assistant", "content": "4"}],
    }
    assert detect_shape([full]) == "preference"
    (s,) = normalise(full, "preference")
    assert [m["content"] for m in s.messages] == ["2+2?", "4"]
    assert [m["content"] for m in s.rejected or []] == ["2+2?", "5"]
    answers_only = {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": "4"}],
        "rejected": {"role": "assistant", "content": "5"},
    }
    (t,) = normalise(answers_only, "preference")
    assert [m["content"] for m in t.messages] == ["2+2?", "4"]
    assert [m["content"] for m in t.rejected or []] == ["2+2?", "5"]
    assert t.meta["shared_prefix_turns"] == 1


def test_preference_string_answer_without_prompt() -> None:
    with pytest.raises(RecordError) as e:
        normalise({"chosen": "4", "rejected": "5"}, "preference")
    assert e.value.field == "chosen" and "needs a prompt field" in str(e.value)


def test_text_shape() -> None:
    rec = {"text": "Once upon a time.", "url": "http://x", "tags": ["a", "b"], "nested": {"no": 1}}
    assert detect_shape([rec]) == "text"
    (s,) = normalise(rec, "text")
    assert s.messages == [{"role": "text", "content": "Once upon a time."}]
    assert s.meta == {"url": "http://x", "tags": ["a", "b"]}  # dicts stay in the raw record only
    (d,) = normalise({"document": "Doc."}, "text")
    assert d.messages[0]["content"] == "Doc."


@pytest.mark.parametrize(
    "rec, q, a",
    [({"prompt": "p", "completion": "c"}, "p", "c"), ({"query": "q", "response": "r"}, "q", "r")],
)
def test_qa_variants(rec: dict, q: str, a: str) -> None:
    assert detect_shape([rec]) == "qa"
    (s,) = normalise(rec, "qa")
    assert [m["content"] for m in s.messages] == [q, a]


# --------------------------------------------------------------------------- mapped


def test_mapped_hate_offensive_csv(shared: Path) -> None:
    with open(shared / "hate-offensive-crowd/labeled_data.csv", encoding="utf-8", newline="") as f:
        rows = [row for _, row in zip(range(50), csv.DictReader(f), strict=False)]
    with pytest.raises(ShapeError):
        detect_shape(rows)  # a tweet column is no known shape: the user maps it
    samples = all_samples(rows, "mapped", mapping={"text": "tweet"})
    assert [s.messages[0]["content"] for s in samples] == [r["tweet"] for r in rows]
    assert all(s.messages[0]["role"] == "text" for s in samples)
    assert samples[0].meta["class"] == rows[0]["class"] and "tweet" not in samples[0].meta


def test_mapped_prompt_response_and_id(shared: Path) -> None:
    records = load_lines(shared, "gsm8k/test.jsonl", 20)
    for i, r in enumerate(records):
        r = {**r, "n": i}
        (s,) = normalise(r, "mapped", {"prompt": "question", "response": "answer", "id": "n"})
        assert s.messages == [
            {"role": "user", "content": r["question"]},
            {"role": "assistant", "content": r["answer"]},
        ]
        assert s.source_id == str(i)


def test_mapped_system_input_preference_and_turns() -> None:
    rec = {"sys": "S", "q": "Q", "ctx": "C", "a": "A"}
    (s,) = normalise(rec, "mapped", {"system": "sys", "instruction": "q", "context": "ctx", "output": "a"})
    assert s.messages == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Q\n\nC"},
        {"role": "assistant", "content": "A"},
    ]
    (p,) = normalise(
        {"q": "Q", "good": "G", "bad": "B"}, "mapped", {"prompt": "q", "chosen": "good", "rejected": "bad"}
    )
    assert p.rejected == [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "B"}]
    (t,) = normalise({"dialog": [{"from": "human", "value": "hi"}]}, "mapped", {"conversations": "dialog"})
    assert t.messages == [{"role": "user", "content": "hi"}]


def test_mapping_errors() -> None:
    with pytest.raises(ValueError) as e:
        normalise({"a": "x"}, "mapped", {"body": "a"})
    assert "unknown mapping key 'body'" in str(e.value)
    assert all(k in str(e.value) for k in MAPPING_KEYS)
    with pytest.raises(ValueError):
        check_mapping({"text": "a", "prompt": "b"})
    with pytest.raises(ValueError):
        check_mapping({"chosen": "a"})
    with pytest.raises(ValueError):
        normalise({"a": "x"}, "mapped")
    with pytest.raises(ValueError):
        normalise({"text": "x"}, "text", {"text": "text"})
    with pytest.raises(RecordError) as r:
        normalise({"question": "q"}, "mapped", {"prompt": "question", "response": "answer"})
    assert r.value.field == "answer" and "missing" in str(r.value) and "'response'" in str(r.value)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "rec, shape, field, expect",
    [
        (
            {"instruction": "i", "input": "", "output": ["a"]},
            "alpaca",
            "output",
            "expected a string, got list",
        ),
        ({"instruction": None, "output": "o"}, "alpaca", "instruction", "expected a string, got None"),
        ({"instruction": "i"}, "alpaca", "output", "missing; expected a string"),
        ({"question": 12, "answer": "a"}, "qa", "question", "expected a string, got int"),
        ({"text": 3.5}, "text", "text", "expected a string, got float"),
        ({"messages": "hi"}, "openai", "messages", "expected a list of messages, got str"),
        (
            {"messages": [{"role": "user", "content": 5}]},
            "openai",
            "messages[0].content",
            "expected a string or a list of text parts, got int",
        ),
        (
            {"messages": [{"role": "user", "content": None}]},
            "openai",
            "messages[0].content",
            "expected a string or a list of text parts, got None",
        ),
        ({"turns": ["a", 7]}, "turns", "turns[1]", "expected a string, got int"),
        (
            {"instruction": "i", "instances": [{"input": "x"}]},
            "self_instruct",
            "instances[0].output",
            "missing",
        ),
        (
            {"chosen": "\n\nHuman: a", "rejected": 3},
            "hh",
            "rejected",
            "expected a Human:/Assistant: transcript",
        ),
    ],
)
def test_record_errors_name_field_and_expectation(rec: dict, shape: str, field: str, expect: str) -> None:
    with pytest.raises(RecordError) as e:
        normalise(rec, shape)
    assert e.value.field == field
    assert f"field {field!r}" in str(e.value) and expect in str(e.value)


@pytest.mark.parametrize(
    "rec, shape",
    [
        ({"instruction": "  ", "input": "", "output": "\n"}, "alpaca"),
        ({"question": "", "answer": " "}, "qa"),
        ({"text": "   "}, "text"),
        ({"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": []}]}, "openai"),
        ({"chosen": "\n\nHuman: \n\nAssistant: ", "rejected": "\n\nHuman: x\n\nAssistant: y"}, "hh"),
    ],
)
def test_empty_text(rec: dict, shape: str) -> None:
    with pytest.raises(RecordError) as e:
        normalise(rec, shape)
    assert "empty text; expected at least one non-empty turn" in str(e.value)


def test_non_dict_record_and_unknown_shape() -> None:
    with pytest.raises(RecordError) as e:
        normalise(["not", "a", "dict"], "alpaca")  # type: ignore[arg-type]
    assert "expected a JSON object, got list" in str(e.value)
    with pytest.raises(ValueError) as v:
        normalise({"text": "x"}, "nope")
    assert "unknown shape 'nope'" in str(v.value) and "alpaca" in str(v.value)


def test_mixed_shapes_need_ninety_percent_agreement() -> None:
    qa = {"question": "q", "answer": "a"}
    alpaca = {"instruction": "i", "output": "o"}
    assert detect_shape([qa] * 19 + [alpaca]) == "qa"  # 95% agree: the odd record fails later, alone
    with pytest.raises(ShapeError) as e:
        detect_shape([qa] * 8 + [alpaca] + [qa] + [{"foo": 1}] * 2)
    msg = str(e.value)
    assert "record 8" in msg and "'alpaca'" in msg and "most look like 'qa'" in msg


def test_detect_shape_edge_cases() -> None:
    with pytest.raises(ShapeError, match="no records"):
        detect_shape([])
    with pytest.raises(ShapeError, match="not JSON objects"):
        detect_shape(["a bare string"])  # type: ignore[list-item]
    with pytest.raises(ShapeError) as e:
        detect_shape([{"foo": 1, "bar": 2}])
    assert "foo (1)" in str(e.value) and "Closest shapes" in str(e.value) and "--map" in str(e.value)
    hh_rec = {"chosen": "Human: hi\n\nAssistant: yo", "rejected": "Human: hi\n\nAssistant: no"}
    assert detect_shape([hh_rec]) == "hh"
    (s,) = normalise(hh_rec, "hh")
    assert s.messages[0] == {"role": "user", "content": "hi"}
    assert detect_shape([{"message_id": "m", "replies": [], "text": "t", "role": "prompter"}]) == "oasst"


def test_describe_shapes_covers_every_shape() -> None:
    desc = describe_shapes()
    assert tuple(desc) == SHAPES
    assert all(isinstance(v, str) and v and "\n" not in v for v in desc.values())


def test_meta_turns_nan_and_numpy_into_plain_json() -> None:
    np = pytest.importorskip("numpy")
    rec = {
        "text": "x",
        "score": float("nan"),
        "n": np.int64(3),
        "f": np.float32(0.5),
        "long": list(range(500)),
    }
    (s,) = normalise(rec, "text")
    assert s.meta == {"score": None, "n": 3, "f": 0.5}
    json.dumps(s.meta, allow_nan=False)


def test_simple_shapes_are_fast(shared: Path) -> None:
    # The ingest target is 30,000 rows/s end to end; normalising should be a small share of it.
    records = load_lines(shared, "gsm8k/train.jsonl")
    start = time.perf_counter()
    for r in records:
        normalise(r, "qa")
    rate = len(records) / (time.perf_counter() - start)
    assert rate > 50_000, f"qa normalise ran at {rate:,.0f} records/s"


# --------------------------------------------------------------------------- issue 12: tools, reasoning, layouts


def test_tool_calls_in_every_form_become_openai_calls() -> None:
    openai = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}},
        {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}}]}
    legacy = {"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": '{"a":1}'}}
    parts = {"role": "assistant", "content": [{"type": "reasoning", "value": "hm"},
                                              {"type": "tool_call", "value": '{"name": "f", "arguments": {"a": 1}}'}]}
    sharegpt = {"from": "function_call", "value": '[{"name": "f", "arguments": {"a": 1}}, {"name": "g", "arguments": {}}]'}
    (a,) = normalise({"messages": [{"role": "user", "content": "q"}, openai]}, "openai")
    assert a.messages[1] == {"role": "assistant", "content": "", "tool_calls": openai["tool_calls"]}
    (b,) = normalise({"messages": [{"role": "user", "content": "q"}, legacy]}, "openai")
    assert b.messages[1]["tool_calls"] == [{"type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}]
    (c,) = normalise({"messages": [{"role": "user", "content": "q"}, parts]}, "openai")
    assert c.messages[1]["reasoning"] == "hm"
    assert c.messages[1]["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"a": 1}'}
    (d,) = normalise({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "Let me look."},
                                        sharegpt, {"from": "observation", "value": "r"}]}, "sharegpt")
    assert [m["role"] for m in d.messages] == ["user", "assistant", "tool"]  # text and its calls: one turn
    assert d.messages[1]["content"] == "Let me look." and len(d.messages[1]["tool_calls"]) == 2
    with pytest.raises(RecordError) as e:
        normalise({"conversations": [{"from": "function_call", "value": "not json"}]}, "sharegpt")
    assert e.value.field == "conversations[0].value"


def test_turn_text_makes_calls_and_reasoning_searchable() -> None:
    from core.ingest.shapes import turn_text

    turn = {"role": "assistant", "content": "ok", "reasoning": "why",
            "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]}
    assert turn_text(turn) == 'why\nok\nf({"a": 1})'
    assert turn_text({"role": "user", "content": "plain"}) == "plain"


@pytest.mark.parametrize("rec, shape, used", [
    ({"conversations": [{"from": "human", "value": "q"}], "chosen": {"from": "gpt", "value": "a"},
      "rejected": {"from": "gpt", "value": "b"}}, "preference", {"conversations", "chosen", "rejected"}),
    ({"query": "q", "response": "r", "system": "s", "history": [["u", "v"]]}, "query_response",
     {"query", "response", "system", "history"}),
    ({"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "assistant", "content": "a"}],
      "label": False}, "prompt_completion", {"prompt", "completion", "label"}),
    ({"input": {"messages": [{"role": "user", "content": "q"}]}, "preferred_output": [{"role": "assistant", "content": "a"}],
      "non_preferred_output": [{"role": "assistant", "content": "b"}]}, "preference",
     {"input", "preferred_output", "non_preferred_output"}),
    ({"instruction": "i", "response": "r"}, "qa", {"instruction", "response"}),
    ({"instruction": "i", "difficulty": "easy"}, "instruction", {"instruction"}),
])
def test_detection_prefers_the_shape_that_uses_most_fields(rec: dict, shape: str, used: set[str]) -> None:
    assert detect_shape([rec]) == shape
    (s,) = normalise(rec, shape)
    assert used <= s.used


def test_kto_label_and_tools_are_first_class() -> None:
    rec = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "label": False,
           "tools": '[{"name": "f", "parameters": {}}]'}
    (s,) = normalise(rec, "openai")
    assert s.kto_label is False and "label" not in s.meta
    assert s.tools == [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    (t,) = normalise({"messages": rec["messages"], "label": "spam"}, "openai")
    assert t.kto_label is None and t.meta["label"] == "spam"  # not a boolean: an ordinary field


def test_implicit_prompt_is_the_shared_prefix() -> None:
    turn = [{"role": "user", "content": "q"}]
    (s,) = normalise({"chosen": turn + [{"role": "assistant", "content": "a"}],
                      "rejected": turn + [{"role": "assistant", "content": "b"}]}, "preference")
    assert s.meta["prompt_turns"] == 1 and len(s.rejected or []) == 2


def test_empty_tool_calls_are_no_calls() -> None:
    (s,) = normalise({"messages": [{"role": "user", "content": "q"},
                                   {"role": "assistant", "content": "a", "tool_calls": []}]}, "openai")
    assert s.messages[1] == {"role": "assistant", "content": "a"}
