"""Write it back: ingest -> mixture export -> ingest gives identical turns (tool calls, reasoning, tools,
KTO labels and rejected sides included), for every family of fine-tuning files (issue 12)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from core.ingest.importer import ingest, ingest_records
from core.mixture.export import export_mixture
from core.mixture.recipe import load_recipe
from core.store.database import Store

REAL = Path(__file__).resolve().parent.parent.parent / "shared" / "real-formats"

CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
CALL2 = {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": '{"tz":"CET"}'}}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]

# Made-up records of each family, with the variations real files have (system prompts, extra columns,
# missing optional fields, parallel calls, reasoning, KTO labels).
OPENAI_TOOLS = [
    {"messages": [{"role": "system", "content": "Use tools."}, {"role": "user", "content": "Weather and time?"},
                  {"role": "assistant", "content": None, "tool_calls": [CALL, CALL2]},
                  {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": "18C"},
                  {"role": "tool", "tool_call_id": "call_2", "content": "12:00"},
                  {"role": "assistant", "content": "18C at noon.", "reasoning_content": "Both tools answered."}],
     "tools": TOOLS, "source": "made-up"},
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}], "tools": TOOLS,
     "source": "made-up"},
]
SHAREGPT_TOOLS = [
    {"conversations": [{"from": "human", "value": "Weather in Paris?"},
                       {"from": "function_call", "value": '{"name": "get_weather", "arguments": {"city": "Paris"}}'},
                       {"from": "observation", "value": '{"temp": 18}'},
                       {"from": "gpt", "value": "It is 18C."}],
     "tools": json.dumps([{"name": "get_weather", "description": "d", "parameters": {"type": "object"}}])},
    {"conversations": [{"from": "human", "value": "Two at once"},
                       {"from": "function_call", "value": json.dumps([{"name": "a", "arguments": {}},
                                                                     {"name": "b", "arguments": {"x": 1}}])},
                       {"from": "observation", "value": "done"}, {"from": "gpt", "value": "Both done."}],
     "tools": ""},
]
PARTS = [  # LLaMA-Factory v1: content parts with `value`, reasoning and tool_call parts
    {"messages": [{"role": "user", "content": [{"type": "text", "value": "Find it"}]},
                  {"role": "assistant", "content": [{"type": "reasoning", "value": "Use find."},
                                                    {"type": "tool_call", "value": '{"name": "find", "arguments": {"q": "it"}}'}]},
                  {"role": "tool", "content": [{"type": "text", "value": "found"}]},
                  {"role": "assistant", "content": [{"type": "reasoning", "value": "Done."}, {"type": "text", "value": "Here."}]}]},
]
KTO = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}], "label": i % 2 == 0}
       for i in range(4)]
TRL_PAIRS = [
    {"prompt": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "2+2?"}],
     "chosen": [{"role": "assistant", "content": "4"}], "rejected": [{"role": "assistant", "content": "5"}], "score": 1},
    {"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello!"}],
     "rejected": [{"role": "assistant", "content": "Go away."}]},
]
IMPLICIT = [{"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "good"}],
             "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "bad"}]}]
OPENAI_PREF = [{"input": {"messages": [{"role": "user", "content": "Name a colour"}]},
                "preferred_output": [{"role": "assistant", "content": "Blue"}],
                "non_preferred_output": [{"role": "assistant", "content": "Seven"}]}]
SE_PAIRED = [{"question": "Why?", "response_j": "Because.", "response_k": "No idea.", "qid": 3}]
LF_RANKING = [{"conversations": [{"from": "system", "value": "sys"}, {"from": "human", "value": "Q"}],
               "chosen": {"from": "gpt", "value": "good"}, "rejected": {"from": "gpt", "value": "bad"}}]
PROMPT_COMPLETION = [{"prompt": [{"role": "user", "content": "Say hi"}],
                      "completion": [{"role": "assistant", "content": "hi"}]},
                     {"prompt": [{"role": "user", "content": "Say bye"}],
                      "completion": [{"role": "assistant", "content": "bye"}]}]
SWIFT = [{"system": "You help.", "query": "And now?", "response": "Now this.", "history": [["First?", "First."]]},
         {"query": "Only?", "response": "Only."}]
FIREFLY = [{"conversation_id": 1, "category": "chat", "conversation": [{"human": "A", "assistant": "B"},
                                                                       {"human": "C", "assistant": "D"}]}]
MAGPIE = [{"instruction": "Write a poem", "task_category": "Creative", "difficulty": "easy"}]
INSTRUCTION_RESPONSE = [{"instruction": "Time?", "response": "Noon."}]

FAMILIES = {  # name: (records, export format that reads back); one export per format holds every family
    "openai-tools": (OPENAI_TOOLS, "openai"),
    "parts-reasoning": (PARTS, "openai"),
    "kto": (KTO, "openai"),
    "query-history": (SWIFT, "openai"),
    "magpie": (MAGPIE, "openai"),
    "sharegpt-tools": (SHAREGPT_TOOLS, "sharegpt"),
    "firefly": (FIREFLY, "sharegpt"),
    "instruction-response": (INSTRUCTION_RESPONSE, "sharegpt"),
    "trl-pairs": (TRL_PAIRS, "trl"),
    "implicit-prompt": (IMPLICIT, "trl"),
    "openai-preference": (OPENAI_PREF, "trl"),
    "stack-exchange-paired": (SE_PAIRED, "trl"),
    "lf-ranking": (LF_RANKING, "trl"),
    "kto-trl": (KTO, "trl-single"),  # TRL's unpaired forms: prompt/completion (+ label)
    "prompt-completion": (PROMPT_COMPLETION, "trl-single"),
}
# Real files of each family, grouped the same way (exports of a group share one file).
REAL_GROUPS = {
    "openai": ["lf_glaive_toolcall_en_demo.json", "lf_reason_tool_use_demo.jsonl", "lf_kto_en_demo.json",
               "openai_cookbook_toy_chat_fine_tuning.jsonl", "firefly_dummy_data.jsonl", "lf_wiki_demo.txt",
               "magpie_example_instructions.jsonl", "lf_mllm_demo.json"],
    "sharegpt": ["lf_glaive_toolcall_en_demo.json", "swift_llm_example_train.jsonl", "qwen_belle_sampled_qwen.json",
                 "fastchat_dummy_conversation_with_system.json", "torchtune_instruct_tiny.json"],
    "trl": ["lf_dpo_en_demo.json", "lf_v1_dpo_demo.jsonl", "torchtune_hh_rlhf_tiny.json",
            "torchtune_stack_exchange_paired_tiny.json", "firefly_dummy_dpo.jsonl"],
}


def _canon(turns: Any) -> list[dict[str, Any]] | None:
    if turns is None:
        return None
    out = []
    for t in turns:
        turn = {k: v for k, v in t.items() if v is not None}
        if "tool_calls" in turn:
            turn["tool_calls"] = json.loads(turn["tool_calls"])
        out.append(turn)
    return out


def stored(store: Store, name: str) -> list[str]:
    """Every sample's turns, rejected turns, tools and KTO label, canonical and sorted (export shuffles)."""
    with store.connect() as con:
        rows = con.execute("SELECT s.messages, s.rejected, s.tools, s.kto_label FROM samples s "
                           "JOIN datasets d USING (dataset_id) WHERE d.name = ? ORDER BY s.row_idx", [name]).fetchall()
    out = []
    for messages, rejected, tools, label in rows:
        tools = None if tools is None else json.loads(tools)
        out.append(json.dumps([_canon(messages), _canon(rejected), tools, label], sort_keys=True))
    return sorted(out)


def round_trip(store: Store, names: list[str], fmt: str, tmp: Path, also: str = "") -> str:
    """Export the datasets as one mixture in `fmt` (and `also`), load the file back; the new dataset's name."""
    sources = ", ".join(f"{{dataset: {n}}}" for n in names)
    recipe = load_recipe(f"name: rt\nsources: [{sources}]\nexport: {{formats: [{fmt}{also}]}}\n")
    export_mixture(store, recipe, tmp / fmt)
    ingest(store, tmp / fmt / fmt / "train.jsonl", name=f"back-{fmt}")
    return f"back-{fmt}"


@pytest.mark.parametrize("fmt", ["openai", "sharegpt", "trl", "trl-single"])
def test_round_trip_gives_identical_turns(store: Store, tmp_path: Path, fmt: str) -> None:
    names = [name for name, (_records, f) in FAMILIES.items() if f == fmt]
    before: list[str] = []
    for name in names:
        records = FAMILIES[name][0]
        ingest_records(store, records, name=name)
        rows = stored(store, name)
        assert len(rows) == len(records)
        before += rows
    back = round_trip(store, names, fmt.split("-")[0], tmp_path, ", hf" if fmt == "openai" else "")
    assert stored(store, back) == sorted(before)
    if fmt == "openai":  # the Hugging Face folder holds tool calls and tools as JSON text
        from datasets import load_from_disk

        hf = load_from_disk(str(tmp_path / "openai" / "hf"))["train"]
        assert hf.num_rows == len(before) and "tools" in hf.column_names
    exported = tmp_path / fmt.split("-")[0] / fmt.split("-")[0] / "train.jsonl"
    _check_form(fmt, [json.loads(line) for line in exported.read_text().splitlines()])


@pytest.mark.parametrize("fmt", list(REAL_GROUPS))
def test_real_files_round_trip(store: Store, tmp_path: Path, fmt: str) -> None:
    if not REAL.is_dir():
        pytest.skip(f"{REAL} is absent")
    before: list[str] = []
    names = []
    for i, file in enumerate(REAL_GROUPS[fmt]):
        ingest(store, REAL / file, name=f"f{i}")
        names.append(f"f{i}")
        before += stored(store, f"f{i}")
    back = round_trip(store, names, fmt, tmp_path)
    assert stored(store, back) == sorted(before)


def _check_form(fmt: str, rows: list[dict[str, Any]]) -> None:
    """The exported rows are in the form the training tools read."""
    if fmt == "openai":  # OpenAI chat fine-tuning: tool_calls (content null left out), tool turns, tools
        first = next(r for r in rows if len(r["messages"]) == 6)
        assert first["messages"][2] == {"role": "assistant", "tool_calls": [CALL, CALL2]}
        assert first["messages"][3] == {"role": "tool", "content": "18C", "tool_call_id": "call_1",
                                        "name": "get_weather"}
        assert first["tools"] == TOOLS
        assert {r.get("label") for r in rows} == {True, False, None}  # KTO labels
    elif fmt == "sharegpt":  # LLaMA-Factory: function_call turns with JSON {name, arguments}, tools as a string
        conv = next(r for r in rows if len(r["conversations"]) == 4 and r["tools"])
        assert [t["from"] for t in conv["conversations"]] == ["human", "function_call", "observation", "gpt"]
        assert json.loads(conv["conversations"][1]["value"]) == {"name": "get_weather", "arguments": {"city": "Paris"}}
        assert json.loads(conv["tools"])[0]["function"]["name"] == "get_weather"
    elif fmt == "trl":  # TRL preference: prompt / chosen / rejected message lists
        row = next(r for r in rows if len(r["prompt"]) == 2 and r["prompt"][0]["content"] == "Be kind.")
        assert row == {"prompt": TRL_PAIRS[0]["prompt"], "chosen": TRL_PAIRS[0]["chosen"],
                       "rejected": TRL_PAIRS[0]["rejected"]}
    else:  # TRL unpaired: prompt / completion, KTO's label
        assert {tuple(r) for r in rows} == {("prompt", "completion", "label")}
