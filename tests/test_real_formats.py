"""Every real fine-tuning file in ../shared/real-formats loads with automatic detection and nothing lost,
checked against expected.json (written from each project's documented format, not from Assay's code);
plus made-up files of the same families with variations (issue 12)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from core.browse.samples import get_sample
from core.ingest.importer import IngestError, ingest
from core.store.database import Store

REAL = Path(__file__).resolve().parent.parent.parent / "shared" / "real-formats"


def _expected() -> list[dict[str, Any]]:
    if not (REAL / "expected.json").is_file():
        return []
    return json.loads((REAL / "expected.json").read_text())["files"]


EXPECTED = _expected()


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, dict[str, Any]]:
    """Each real file loaded once, detection automatic."""
    if not EXPECTED:
        pytest.skip(f"{REAL} is absent")
    store = Store(tmp_path_factory.mktemp("real") / "real.duckdb", busy_timeout=10)
    reports = {e["file"]: ingest(store, REAL / e["file"], name=e["file"]) for e in EXPECTED}
    return store, reports


def _turn_text(turn: dict[str, Any]) -> str:
    """What a check may find in a turn: its content, reasoning and tool calls."""
    return " ".join([turn["content"] or "", turn.get("reasoning") or "", json.dumps(turn.get("tool_calls") or [])])


def _check_turns(got: list[dict[str, Any]], want: list[dict[str, Any]], prefix_chars: int, where: str) -> None:
    assert len(got) == len(want), f"{where}: {[t['role'] for t in got]}"
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert "*" in w["roles"] or g["role"] in w["roles"], f"{where} turn {i}: role {g['role']!r}, not {w['roles']}"
        # the prefix is at most prefix_chars of the turn with leading whitespace dropped (shorter where the
        # independent script cut it, empty where `contains` says what to find)
        assert (g["content"] or "").lstrip().startswith(w["prefix"][:prefix_chars]), f"{where} turn {i}"
        for needle in w.get("contains", []):
            assert needle in _turn_text(g), f"{where} turn {i}: {needle!r} not found"
        if "len" in w:
            assert len(g["content"]) == w["len"], f"{where} turn {i}"


@pytest.mark.parametrize("expected", EXPECTED, ids=[e["file"] for e in EXPECTED])
def test_real_file_loads_as_its_project_documents(loaded: tuple[Store, dict[str, Any]],
                                                   expected: dict[str, Any]) -> None:
    store, reports = loaded
    report = reports[expected["file"]]
    assert report.n_samples == expected["n_samples"]
    assert not report.warnings
    ids = store.query_df("SELECT s.id FROM samples s JOIN datasets d USING (dataset_id) WHERE d.name = ? "
                         "ORDER BY s.row_idx", [expected["file"]]).id.tolist()
    for check in expected["checks"]:
        sample = get_sample(store, ids[check["index"]])
        where = f"{expected['file']} record {check['index']}"
        _check_turns(sample["messages"], check["turns"], 40, where)
        if "rejected" in check:
            rejected = sample["rejected"]
            assert rejected is not None, f"{where}: no rejected side"
            want = check["rejected"]
            # a rejected side may be stored whole (prompt + answer) or as the answer alone
            _check_turns(rejected[len(rejected) - len(want):], want, 40, where + " rejected")
        if "label" in check:
            assert sample["kto_label"] is check["label"], where


def test_nothing_lost_and_accounted(loaded: tuple[Store, dict[str, Any]]) -> None:
    _store, reports = loaded
    # kept in the raw record only, and said so: Magpie's generation settings (a nested object) and
    # LLaMA-Factory v1's per-turn loss weights
    expected_unused = {"magpie_example_instructions.jsonl": ["gen_input_configs"],
                       "lf_v1_sft_demo.jsonl": ["messages[].loss_weight"],
                       "lf_v1_dpo_demo.jsonl": ["chosen_messages[].loss_weight", "rejected_messages[].loss_weight"]}
    for file, report in reports.items():
        unused = [f["field"] for f in report.fields if f["raw_only"]]
        assert unused == expected_unused.get(file, []), file
        assert report.not_used == [f"{u}, in {report.n_records} of {report.n_records} records" for u in unused]
    swift = reports["swift_llm_example_train.jsonl"]
    assert {f["field"]: f["turns"] for f in swift.fields} == {"system": 1, "query": 3, "response": 3, "history": 1}
    magpie = {f["field"]: f for f in reports["magpie_example_instructions.jsonl"].fields}
    assert magpie["task_category"]["metadata"] == 5 and magpie["instruction"]["turns"] == 5


def test_tool_calls_and_tools_are_structured(loaded: tuple[Store, dict[str, Any]]) -> None:
    store, _ = loaded
    ids = store.query_df("SELECT s.id FROM samples s JOIN datasets d USING (dataset_id) WHERE d.name = ? "
                         "ORDER BY s.row_idx", ["lf_glaive_toolcall_en_demo.json"]).id.tolist()
    sample = get_sample(store, ids[0])
    call = sample["messages"][3]["tool_calls"][0]
    assert call == {"type": "function", "function": {"name": "search_recipes",
                                                     "arguments": '{"ingredients": ["chicken", "bell peppers", "rice"]}'}}
    assert sample["tools"][0]["function"]["name"] == "search_recipes"
    assert "search_recipes(" in sample["text"]  # tool calls are searchable
    ids = store.query_df("SELECT s.id FROM samples s JOIN datasets d USING (dataset_id) WHERE d.name = ? "
                         "ORDER BY s.row_idx", ["lf_reason_tool_use_demo.jsonl"]).id.tolist()
    reasoned = get_sample(store, ids[11])
    assert reasoned["messages"][2]["reasoning"].startswith("Okay, the user wants me to extract")
    assert reasoned["messages"][2]["content"] == ""
    assert reasoned["messages"][2]["reasoning"][:30] in reasoned["text"]


# ---- made-up files of the same families, with variations ---------------------------------------------


def _write(path: Path, records: list[dict[str, Any]], jsonl: bool) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n" if jsonl else json.dumps(records, indent=1))
    return path


VARIANTS: dict[str, tuple[list[dict[str, Any]], str, list[list[str]], bool]] = {
    # name: (records, expected shape, expected roles per record, has rejected side)
    "openai-tools-extra-columns": ([
        {"id": "a", "lang": "en", "messages": [
            {"role": "developer", "content": "sys"}, {"role": "user", "content": "q"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "r"}, {"role": "assistant", "content": "a"}]},
        {"id": "b", "lang": "de", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
    ], "openai", [["system", "user", "assistant", "tool", "assistant"], ["user", "assistant"]], False),
    "sharegpt-system-column": ([
        {"system": "Be short.", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "t"},
                                                  {"from": "function_call", "value": '{"name": "f", "arguments": {}}'},
                                                  {"from": "observation", "value": "r"}, {"from": "gpt", "value": "a"}]},
    ], "sharegpt", [["system", "user", "assistant", "tool", "assistant"]], False),
    "ranking-alpaca": ([
        {"instruction": "Do it", "input": "now", "chosen": "done", "rejected": "no"},
    ], "preference", [["user", "assistant"]], True),
    "prompt-completion-strings-kto": ([
        {"prompt": "q1", "completion": "a1", "label": True}, {"prompt": "q2", "completion": "a2", "label": False},
    ], "prompt_completion", [["user", "assistant"], ["user", "assistant"]], False),
    "query-response-no-history": ([
        {"query": "q", "response": "a", "system": "s", "history": []},
        {"query": "q2", "response": "a2", "history": [["h", "i"]]},
    ], "query_response", [["system", "user", "assistant"], ["user", "assistant", "user", "assistant"]], False),
    "firefly-with-system": ([
        {"system": "sys", "conversation": [{"human": "a", "assistant": "b"}]},
    ], "firefly", [["system", "user", "assistant"]], False),
    "implicit-prompt-multi-turn": ([
        {"chosen": [{"role": "user", "content": "1"}, {"role": "assistant", "content": "2"},
                    {"role": "user", "content": "3"}, {"role": "assistant", "content": "good"}],
         "rejected": [{"role": "user", "content": "1"}, {"role": "assistant", "content": "2"},
                      {"role": "user", "content": "3"}, {"role": "assistant", "content": "bad"}]},
    ], "preference", [["user", "assistant", "user", "assistant"]], True),
}


@pytest.mark.parametrize("jsonl", [True, False], ids=["jsonl", "json"])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_variants_of_each_family_load(store: Store, tmp_path: Path, name: str, jsonl: bool) -> None:
    records, shape, roles, paired = VARIANTS[name]
    path = _write(tmp_path / (name + (".jsonl" if jsonl else ".json")), records, jsonl)
    report = ingest(store, path, name=name)
    assert report.shape == shape and report.n_samples == len(records) and not report.warnings
    ids = store.query_df("SELECT id FROM samples ORDER BY row_idx").id.tolist()
    for sample_id, want in zip(ids, roles, strict=True):
        sample = get_sample(store, sample_id)
        assert [t["role"] for t in sample["messages"]] == want
        assert (sample["rejected"] is not None) == paired
    if name == "prompt-completion-strings-kto":
        assert [get_sample(store, i)["kto_label"] for i in ids] == [True, False]
    if name == "implicit-prompt-multi-turn":
        assert get_sample(store, ids[0])["meta"]["prompt_turns"] == 3  # the shared prefix is the prompt


def test_unused_turns_warn_and_refuse_under_strict(store: Store, tmp_path: Path) -> None:
    records = [{"question": f"q{i}", "answer": "a", "history": [["u", "v"]]} for i in range(5)]
    path = _write(tmp_path / "h.jsonl", records, True)
    report = ingest(store, path, name="h", shape="qa")
    assert report.not_used == ["history, in 5 of 5 records"]
    assert report.warnings and "history" in report.warnings[0]
    with pytest.raises(IngestError, match="history") as e:
        ingest(store, path, name="h2", shape="qa", strict=True)
    assert "h2" not in store.dataset_names() and len(str(e.value)) < 400


def test_unknown_shape_message_is_short_with_a_map_line(store: Store, tmp_path: Path) -> None:
    records = [{"title": f"t{i}", "body": "b", "score": i, **{f"x{k}": k for k in range(40)}} for i in range(3)]
    path = _write(tmp_path / "odd.jsonl", records, True)
    with pytest.raises(IngestError) as e:
        ingest(store, path, name="odd")
    msg = str(e.value)
    assert len(msg) < 600 and "title (3)" in msg and "--map prompt=title --map response=body" in msg
    assert msg.count(":") < 12  # two or three closest shapes, not all of them
    from core.ingest.importer import ingest as again
    assert again(store, path, name="odd", mapping={"prompt": "title", "response": "body"}).n_samples == 3


@pytest.mark.parametrize("mode, expected", [("line", ["one", "two  ", "three"]),
                                            ("paragraph", ["one\ntwo  ", "three"])])
def test_txt_line_and_paragraph_modes(store: Store, tmp_path: Path, mode: str, expected: list[str]) -> None:
    path = tmp_path / "doc.txt"
    path.write_bytes(b"one\r\ntwo  \n\n   \nthree")
    report = ingest(store, path, name=mode, txt_mode=mode)
    assert report.format == "txt" and report.shape == "text"
    texts = store.query_df("SELECT text FROM samples ORDER BY row_idx").text.tolist()
    assert texts == expected


def test_txt_overlong_line_is_a_named_bad_record(tmp_path: Path) -> None:
    from core.ingest.readers import FormatError, iter_txt_batches

    path = tmp_path / "long.txt"
    path.write_bytes(b"ok\n" + b"x" * 5000 + b"\nfine\n")
    with pytest.raises(FormatError, match="long.txt line 2: line longer than 1,000 bytes"):
        list(iter_txt_batches(path, max_bytes=1000))
    skipped: list[tuple[str, str]] = []
    batches = list(iter_txt_batches(path, max_bytes=1000, on_error=lambda loc, msg: skipped.append((loc, msg))))
    assert [r.record["text"] for b in batches for r in b] == ["ok", "fine"] and skipped[0][0] == "long.txt line 2"


# ---- the sample view ----------------------------------------------------------------------------------

XSS = "<script>alert(1)</script> **bold**"


def test_sample_view_shows_tool_calls_results_reasoning_and_rejected(monkeypatch: pytest.MonkeyPatch,
                                                                     store: Store) -> None:
    from streamlit.testing.v1 import AppTest

    from core.browse.samples import query_samples
    from core.ingest.importer import ingest_records

    call = {"id": "c9", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "' + XSS + '"}'}}
    ingest_records(store, [{"messages": [
        {"role": "user", "content": "Find it"},
        {"role": "assistant", "content": None, "reasoning_content": f"Think {XSS}", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c9", "name": "lookup", "content": f"result {XSS}"},
        {"role": "assistant", "content": "Found."}], "tools": [{"type": "function", "function": {"name": "lookup"}}]}],
        name="tools")
    ingest_records(store, [{"prompt": "2+2?", "chosen": "4", "rejected": f"5 {XSS}"}], name="pairs")
    monkeypatch.setenv("ASSAY_DB", str(store.path))
    root = Path(__file__).resolve().parent.parent
    at = AppTest.from_file(str(root / "pages" / "1_Datasets.py"), default_timeout=60)
    at.query_params["dataset"] = "tools"
    at.run()
    at.number_input(key="sample_id_input").set_value(int(query_samples(store, "tools").ids[0])).run()
    assert not at.exception, at.exception
    texts = [t.value for t in at.text]
    assert texts[texts.index("REASONING") - 1] == "ASSISTANT"
    assert "TOOL CALL · lookup · c9" in texts and "TOOL RESULT · lookup · c9" in texts
    assert f"result {XSS}" in texts
    codes = [c.value for c in at.code]
    assert f"Think {XSS}" in codes and call["function"]["arguments"] in codes
    assert at.json[1].value  # the tools tab holds the function definitions
    rendered = [m.value for m in at.markdown] + [c.value for c in at.caption]
    assert not any("<script" in m or "**bold**" in m for m in rendered)  # data is never markdown

    at = AppTest.from_file(str(root / "pages" / "1_Datasets.py"), default_timeout=60)
    at.query_params["dataset"] = "pairs"
    at.run()
    at.number_input(key="sample_id_input").set_value(int(query_samples(store, "pairs").ids[0])).run()
    texts = [t.value for t in at.text]
    assert "CHOSEN" in texts and "REJECTED" in texts and f"5 {XSS}" in texts and "4" in texts


# ---- the field report on the command line and the home page --------------------------------------------


def _history_file(tmp_path: Path) -> Path:
    return _write(tmp_path / "h.jsonl", [{"question": f"q{i}", "answer": "a", "history": [["u", "v"]]}
                                        for i in range(5)], True)


def test_cli_reports_fields_and_strict_refuses(store: Store, tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    from core.cli.main import main

    path = _history_file(tmp_path)
    assert main(["--db", str(store.path), "ingest", str(path), "--name", "h", "--shape", "qa"]) == 0
    out = capsys.readouterr().out
    assert "into turns: question, answer" in out and "not used: history, in 5 of 5 records" in out
    assert main(["--db", str(store.path), "--json", "ingest", str(path), "--name", "h2", "--shape", "qa"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["not_used"] == ["history, in 5 of 5 records"] and report["warnings"]
    assert {f["field"]: f["raw_only"] for f in report["fields"]} == {"question": 0, "answer": 0, "history": 5}
    assert main(["--db", str(store.path), "ingest", str(path), "--name", "h3", "--shape", "qa", "--strict"]) == 2
    assert "history" in capsys.readouterr().err


def test_home_page_shows_where_upload_fields_went(monkeypatch: pytest.MonkeyPatch, store: Store,
                                                  tmp_path: Path) -> None:
    from streamlit.testing.v1 import AppTest

    report = ingest(store, _history_file(tmp_path), name="h", shape="qa")
    monkeypatch.setenv("ASSAY_DB", str(store.path))
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=60)
    at.session_state["load_report"] = report  # what the upload form leaves for the page after its rerun
    at.run()
    assert not at.exception, at.exception
    texts = "\n".join(t.value for t in at.text)
    assert "not used: history, in 5 of 5 records" in texts and "into turns: question, answer" in texts
    assert any("not used" in w.value for w in at.warning)


def test_txt_beside_shards_is_not_a_shard(store: Store, tmp_path: Path) -> None:
    folder = tmp_path / "shards"
    folder.mkdir()
    _write(folder / "part-0.jsonl", [{"text": "a"}], True)
    (folder / "README.txt").write_text("notes about the data\n")
    assert ingest(store, folder, name="shards").n_samples == 1
