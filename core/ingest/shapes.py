"""Record shapes: detect which shape a dataset's records have and normalise each record to one chat form.

A *shape* is the layout of one record (Alpaca's instruction/input/output, ShareGPT's conversations, an
OpenAssistant tree, ...). `detect_shape` looks at a sample of records and names the shape;
`normalise` turns one record into one or more `Normalised` samples: a list of {role, content} turns,
the rejected conversation for preference pairs, and flat metadata. Readers (file formats) and the ingest
orchestration live elsewhere; this module only knows about dicts.

Detection: each record's *candidate* shapes are those whose fields it has, in this order:

 1. an answer pair (chosen/rejected, chosen_messages/rejected_messages, preferred_output/
    non_preferred_output, response_j/response_k): `chosen` a string starting with "Human:" and no
    prompt field                                                                 -> hh
    else a prompt field (prompt/question/instruction/conversations/input) or message answers -> preference
 2. `messages` -> openai;  `conversations` -> sharegpt;  `conversation` list -> firefly
 3. `message_tree_id`, or `message_id` and `replies`                             -> oasst
 4. `instruction` with `instances` -> self_instruct; with `context`+`response` -> dolly; with `output` -> alpaca
 5. question/answer, prompt/completion, query/response, prompt/response, instruction/response -> qa
 6. query/response -> query_response;  prompt/completion -> prompt_completion
 7. `turns` -> turns;  a string `text`, `content` or `document` -> text
 8. `instruction` alone (nothing above)                                          -> instruction
A shape is a choice when at least 90% of the sampled records have its fields; of several, the one that
puts the most fields of each record into turns, tools or label wins (ties: the order above), so that
LLaMA-Factory's ranking file is a preference pair (not ShareGPT without its answers) and ms-swift's
query/response/system/history keeps its history (not question/answer without it).
"mapped" is never detected: the user names the columns.

Normalising is on the ingest hot path (30,000 rows/s end to end on 2 cores), so the simple shapes use
plain dict look-ups, `type(x) is str` checks and str methods, and share the record's strings rather than
copying them.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from core.errors import InputError

__all__ = [
    "SHAPES",
    "MAPPING_KEYS",
    "Normalised",
    "ShapeError",
    "RecordError",
    "detect_shape",
    "normalise",
    "describe_shapes",
    "check_mapping",
    "candidates",
    "turn_text",
    "split_point",
    "TURN_EXTRAS",
]

SHAPES: tuple[str, ...] = (
    "alpaca",
    "dolly",
    "sharegpt",
    "openai",
    "preference",
    "hh",
    "oasst",
    "qa",
    "turns",
    "self_instruct",
    "text",
    "query_response",
    "firefly",
    "prompt_completion",
    "instruction",
    "mapped",
)

_DESCRIPTIONS: dict[str, str] = {
    "alpaca": "instruction, output (strings); optional input, system, history [[user, assistant], ...]",
    "dolly": "instruction, context, response (strings); category kept as metadata",
    "sharegpt": "conversations: list of {from, value} (human/gpt/system/function_call/observation); optional tools",
    "openai": "messages: list of {role, content}, with tool_calls, tool turns, parts; optional tools, label",
    "preference": "prompt (string or messages), chosen/rejected (strings or messages); also response_j/k, ...",
    "hh": "chosen and rejected: Anthropic transcripts '\\n\\nHuman: ...\\n\\nAssistant: ...'",
    "oasst": "OpenAssistant tree: message_tree_id + prompt, or a root message {message_id, role, text, replies}",
    "qa": "question/answer (also prompt/completion, query/response, prompt/response, instruction/response): strings",
    "turns": "turns: list of user turns (strings or {content}); optional reference answers under reference",
    "self_instruct": "instruction (string) and instances: list of {input, output}",
    "text": "text (or content, or document): a plain-text string, pre-training style",
    "query_response": "query, response (strings); optional system, history [[user, assistant], ...] (ms-swift, Qwen)",
    "firefly": "conversation: list of {human, assistant}; optional system (Firefly)",
    "prompt_completion": "prompt and completion, strings or message lists (TRL); optional KTO label",
    "instruction": "instruction alone, no answer yet (Magpie output); other fields kept as metadata",
    "mapped": "you name the columns: prompt/instruction, input/context, response/output, system, text, id, "
    "chosen, rejected, messages, conversations",
}

# Fields whose value becomes Normalised.source_id, in order of preference.
_ID_KEYS = ("id", "question_id", "message_tree_id", "message_id", "conversation_id", "uuid", "_id")
_PROMPT_KEYS = ("prompt", "question", "instruction")
_QA_PAIRS = (("question", "answer"), ("prompt", "completion"), ("query", "response"), ("prompt", "response"),
             ("instruction", "response"))
_QA_USED = {pair: frozenset(pair) for pair in _QA_PAIRS}
_TEXT_KEYS = ("text", "content", "document")
_SMALL_LIST = 64  # longer lists stay in the raw record only
_AGREEMENT = 0.9  # share of sampled records that must agree on one shape

_ROLES: dict[str, str] = {
    "user": "user",
    "human": "user",
    "prompter": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "model": "assistant",
    "system": "system",
    "developer": "system",
    # tool results (OpenAI `tool`, its legacy `function`, ShareGPT/LLaMA-Factory `observation`, Llama's `ipython`)
    "tool": "tool",
    "function": "tool",
    "observation": "tool",
    "ipython": "tool",
    "tool_result": "tool",
    "text": "text",  # plain text (pre-training) as Assay stores and exports it
}
# ShareGPT turns whose value is a tool call (JSON {name, arguments}, or a list of them for parallel calls)
_CALL_ROLES = frozenset(("function_call", "tool_call", "tool_calls"))
_ROLE_NAMES = "/".join([*_ROLES, *sorted(_CALL_ROLES)])
# Optional turn fields beyond role and content, in the order turns keep them (samples.messages, 0010).
TURN_EXTRAS: tuple[str, ...] = ("reasoning", "tool_calls", "tool_call_id", "name")
_REASONING_KEYS = ("reasoning", "reasoning_content", "thinking")
_TEXT_PARTS = frozenset(("text", "input_text", "output_text"))
_REASONING_PARTS = frozenset(("reasoning", "thinking"))
_CALL_PARTS = frozenset(("tool_call", "function_call"))
_KTO_KEYS = ("label", "kto_tag")

MAPPING_KEYS: tuple[str, ...] = (
    "instruction",
    "prompt",
    "input",
    "context",
    "response",
    "output",
    "system",
    "text",
    "id",
    "chosen",
    "rejected",
    "messages",
    "conversations",
)


@dataclass(slots=True)
class Normalised:
    """One sample in the common chat form.

    Each turn is {role, content} plus, where the source has them, `reasoning` (text of reasoning parts),
    `tool_calls` (OpenAI form: [{id?, type: function, function: {name, arguments: str}}]), `tool_call_id`
    and `name` (a tool result's call and function). `used` names the record's top-level fields that went
    into the turns, tools or label (the rest are in meta, or in the raw record only): the field accounting.
    """

    messages: list[dict[str, Any]]
    source_id: str | None = None
    rejected: list[dict[str, Any]] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    tools: list[Any] | None = None
    kto_label: bool | None = None
    used: frozenset[str] = frozenset()


class ShapeError(InputError):
    """The dataset as a whole: its shape cannot be told (or the records disagree)."""


class RecordError(InputError):
    """One record is wrong. `field` names the offending field (a path such as 'conversations[2].from')."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"field {field!r}: {problem}")


# --------------------------------------------------------------------------- small helpers


def _tname(value: Any) -> str:
    return "None" if value is None else type(value).__name__


def _str(rec: dict, key: str) -> str:
    """A required string field."""
    value = rec.get(key)
    if type(value) is str:
        return value
    if value is None and key not in rec:
        raise RecordError(key, f"missing; expected a string (keys present: {sorted(rec)})")
    raise RecordError(key, f"expected a string, got {_tname(value)}")


def _opt_str(rec: dict, key: str) -> str:
    """An optional string field: absent or None reads as ''."""
    value = rec.get(key)
    if value is None or type(value) is str:
        return value or ""
    raise RecordError(key, f"expected a string, got {_tname(value)}")


def _join(prompt: str, extra: str) -> str:
    # Alpaca's convention: the input follows the instruction after a blank line.
    return prompt + "\n\n" + extra if extra and not extra.isspace() else prompt


def _source_id(rec: dict) -> str | None:
    for key in _ID_KEYS:
        value = rec.get(key)
        if value is not None:
            if type(value) is str:
                return value
            if type(value) is int:
                return str(value)
    return None


def _scalar(value: Any) -> tuple[bool, Any]:
    """Whether `value` is a JSON-friendly scalar, and its plain-Python form (numpy scalars, NaN -> None)."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return True, value
    if kind is float:
        return True, value if math.isfinite(value) else None
    item = getattr(value, "item", None)  # numpy / pandas scalars from columnar readers
    if item is not None and getattr(value, "ndim", None) == 0:
        return _scalar(item())
    return False, None


def _meta(rec: dict, used: frozenset[str] | set[str]) -> dict[str, Any]:
    """Every unused field that is a scalar or a small list of scalars."""
    meta: dict[str, Any] = {}
    for key, value in rec.items():
        if key in used:
            continue
        kind = type(value)
        if kind is str or kind is int or kind is bool or value is None:
            meta[key] = value
        elif kind is list:
            if len(value) <= _SMALL_LIST:
                items = [_scalar(v) for v in value]
                if all(ok for ok, _ in items):
                    meta[key] = [v for _, v in items]
        else:
            ok, plain = _scalar(value)
            if ok:
                meta[key] = plain
    return meta


def _has_text(messages: list[dict[str, Any]]) -> bool:
    for m in messages:
        c = m["content"]
        if (c and not c.isspace()) or m.get("tool_calls") or m.get("reasoning"):
            return True
    return False


def _empty(where: str) -> RecordError:
    return RecordError(where, "empty text; expected at least one non-empty turn")


def _msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def turn_text(turn: dict[str, Any]) -> str:
    """A turn as flat text for search and embedding: reasoning, content, then each tool call as
    `name(arguments)`; just the content for a plain turn."""
    calls, reasoning = turn.get("tool_calls"), turn.get("reasoning")
    if not calls and not reasoning:
        return turn["content"]
    if type(calls) is str:
        calls = json.loads(calls)
    parts = [reasoning] if reasoning else []
    if turn["content"]:
        parts.append(turn["content"])
    for call in calls or ():
        fn = call.get("function") or {}
        parts.append(f"{fn.get('name', '')}({fn.get('arguments', '')})")
    return "\n".join(parts)


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _call(value: Any, where: str) -> dict[str, Any]:
    """One tool call in OpenAI form from {name, arguments} (LLaMA-Factory, glaive) or OpenAI's own
    {id, type, function: {name, arguments}}; arguments stay the string given (an object is serialised)."""
    if type(value) is not dict:
        raise RecordError(where, f"expected a tool call {{name, arguments}}, got {_tname(value)}")
    fn = value.get("function") if type(value.get("function")) is dict else value
    name = fn.get("name")
    if type(name) is not str:
        raise RecordError(f"{where}.name", f"expected the function name (a string), got {_tname(name)}")
    args = fn.get("arguments", fn.get("parameters"))
    if type(args) is not str:
        args = "" if args is None else _dump(args)
    call: dict[str, Any] = {}
    if value.get("id") is not None:
        call["id"] = str(value["id"])
    call["type"] = "function"
    call["function"] = {"name": name, "arguments": args}
    return call


def _decoded(value: Any, where: str, expected: str) -> Any:
    """The value itself, or the JSON a string holds (files write tool calls and tools either way)."""
    if type(value) is not str:
        return value
    try:
        return json.loads(value)
    except ValueError:
        raise RecordError(where, f"expected {expected}, got {value[:40]!r}") from None


def _calls(value: Any, where: str) -> list[dict[str, Any]]:
    """Tool calls from a list, one call object, or a JSON string holding either."""
    value = _decoded(value, where, "a JSON tool call {name, arguments}")
    if type(value) is dict:
        return [_call(value, where)]
    if type(value) is list and value:
        return [_call(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise RecordError(where, f"expected a tool call or a list of them, got {_tname(value)}")


def _part_text(part: dict, where: str) -> str:
    text = part.get("text", part.get("value", part.get("content")))
    if text is None:
        text = next((part[k] for k in _REASONING_KEYS if k in part), None)
    if type(text) is not str:
        raise RecordError(f"{where}.text", f"expected a string, got {_tname(text)}")
    return text


def _parts(content: Any, where: str, turn: dict[str, Any]) -> str:
    """Content as a list of parts: text parts ({type: text, text} or LLaMA-Factory's {type: text, value})
    are joined; reasoning and tool_call parts go to the turn's reasoning and tool_calls; images and other
    media are skipped (the raw record keeps them)."""
    if type(content) is not list:
        raise RecordError(where, f"expected a string or a list of text parts, got {_tname(content)}")
    texts: list[str] = []
    reasoning: list[str] = []
    for i, part in enumerate(content):
        if type(part) is str:
            texts.append(part)
        elif type(part) is dict:
            kind = part.get("type", "text")
            if kind in _TEXT_PARTS:
                texts.append(_part_text(part, f"{where}[{i}]"))
            elif kind in _REASONING_PARTS:
                reasoning.append(_part_text(part, f"{where}[{i}]"))
            elif kind in _CALL_PARTS:
                value = part.get("value", part.get("tool_call", part.get("function")))
                turn.setdefault("tool_calls", []).extend(_calls(value, f"{where}[{i}]"))
        else:
            raise RecordError(f"{where}[{i}]", f"expected a text part {{type, text}}, got {_tname(part)}")
    if reasoning:
        turn["reasoning"] = "\n".join(reasoning)
    return "\n".join(texts)


def _turn(t: dict, where: str) -> dict[str, Any]:
    """One message: OpenAI {role, content, tool_calls, tool_call_id, name, reasoning_content} or ShareGPT
    {from, value} (a `function_call` turn holds its call as JSON in `value`)."""
    role = t.get("role")
    if role is not None:
        role_key, content_key = "role", "content"
    else:
        role, role_key, content_key = t.get("from"), "from", "value"
        if role is None:
            raise RecordError(f"{where}", f"expected keys role/content or from/value, got keys {sorted(t)}")
    content = t.get(content_key)
    if type(role) is str and role in _CALL_ROLES:
        turn: dict[str, Any] = {"role": "assistant", "content": ""}
        turn["tool_calls"] = _calls(content if content is not None else t.get("tool_calls"), f"{where}.{content_key}")
        return turn
    mapped = _ROLES.get(role) if type(role) is str else None
    if mapped is None:
        raise RecordError(f"{where}.{role_key}", f"expected one of {_ROLE_NAMES}, got {role!r}")
    turn = {"role": mapped, "content": ""}
    reasoning = next((t[k] for k in _REASONING_KEYS if type(t.get(k)) is str), None)
    if reasoning is not None:
        turn["reasoning"] = reasoning
    calls = t.get("tool_calls")
    if calls is None and t.get("function_call") is not None:  # OpenAI's legacy single function call
        calls = t["function_call"]
        calls_where = f"{where}.function_call"
    else:
        calls_where = f"{where}.tool_calls"
    if calls is not None and calls != []:  # an empty list (API exports write one) means no calls
        turn["tool_calls"] = _calls(calls, calls_where)
    if type(content) is str:
        turn["content"] = content
    elif content is None and "tool_calls" in turn:
        pass  # OpenAI: an assistant turn that only calls tools has content null
    else:
        turn["content"] = _parts(content, f"{where}.{content_key}", turn)
    for key in ("tool_call_id", "name"):
        if type(t.get(key)) is str:
            turn[key] = t[key]
    return turn


def _turns(turns: Any, where: str) -> list[dict[str, Any]]:
    """A list of messages, OpenAI style {role, content} or ShareGPT style {from, value}. A ShareGPT
    `function_call` turn right after an assistant turn without calls joins it (text, then its calls), so
    that the OpenAI and ShareGPT forms of one conversation give the same turns."""
    if type(turns) is not list:
        raise RecordError(where, f"expected a list of messages, got {_tname(turns)}")
    out: list[dict[str, Any]] = []
    for i, t in enumerate(turns):
        if type(t) is not dict:
            raise RecordError(f"{where}[{i}]", f"expected an object with role and content, got {_tname(t)}")
        turn = _turn(t, f"{where}[{i}]")
        prev = out[-1] if out else None
        if (prev is not None and t.get("from") in _CALL_ROLES and prev["role"] == "assistant"
                and "tool_calls" not in prev):
            prev["tool_calls"] = turn["tool_calls"]
            continue
        out.append(turn)
    return out


def _with_system(rec: dict, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Prepend a top-level `system` string unless the conversation already opens with one."""
    system = _opt_str(rec, "system")
    if system and not (messages and messages[0]["role"] == "system"):
        messages.insert(0, _msg("system", system))
    return messages


def _shared_prefix(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _tools(rec: dict, key: str = "tools") -> list[Any] | None:
    """Function definitions: a list, or a JSON string of one (LLaMA-Factory); each kept in OpenAI's form
    {type: function, function: {...}} (a bare {name, description, parameters} is wrapped)."""
    value = rec.get(key)
    if value is None or value == "" or value == []:
        return None
    value = _decoded(value, key, "a list of function definitions (JSON)")
    if type(value) is dict:
        value = [value]
    if value == []:
        return None
    if type(value) is not list or not all(type(v) is dict for v in value):
        raise RecordError(key, f"expected a list of function definitions, got {_tname(value)}")
    return [v if v.get("type") == "function" or "function" in v else {"type": "function", "function": v}
            for v in value]


def _kto(rec: dict) -> tuple[bool | None, str | None]:
    """KTO's desirable/undesirable label (TRL `label`, LLaMA-Factory `kto_tag`), when it is a boolean."""
    for key in _KTO_KEYS:
        if type(rec.get(key)) is bool:
            return rec[key], key
    # an empty label column (an export mixing KTO rows with others writes null): nothing to keep
    return None, next((k for k in _KTO_KEYS if k in rec and rec[k] is None), None)


def _chat(rec: dict, messages: list[dict[str, Any]], used: set[str] | frozenset[str],
          rejected: list[dict[str, Any]] | None = None, meta: dict[str, Any] | None = None) -> Normalised:
    """A sample with the record's tools and KTO label (when it has them), metadata from the other fields."""
    used = set(used)
    tools = None
    for key in ("tools", "functions"):  # `functions`: OpenAI's legacy name for the definitions
        if key in rec:
            tools = tools or _tools(rec, key)
            used.add(key)
    label, label_key = _kto(rec)
    if label_key:
        used.add(label_key)
    out_meta = _meta(rec, used)
    if meta:
        out_meta.update(meta)
    return Normalised(messages, _source_id(rec), rejected, out_meta, tools, label, frozenset(used))


# --------------------------------------------------------------------------- simple shapes

_ALPACA_USED = frozenset(("instruction", "input", "output", "system", "history"))


def _alpaca(rec: dict) -> list[Normalised]:
    instruction = _str(rec, "instruction")
    output = _str(rec, "output")
    user = _join(instruction, _opt_str(rec, "input"))
    messages: list[dict[str, str]] = []
    if "system" in rec:
        _with_system(rec, messages)
    history = rec.get("history")
    if history:  # LLaMA-Factory's Alpaca variant: earlier [user, assistant] pairs
        messages.extend(_history(history))
    messages.append(_msg("user", user))
    messages.append(_msg("assistant", output))
    if not _has_text(messages):
        raise _empty("instruction/input/output")
    return [Normalised(messages, _source_id(rec), None, _meta(rec, _ALPACA_USED), used=_ALPACA_USED)]


def _history(history: Any) -> list[dict[str, str]]:
    if type(history) is not list:
        raise RecordError("history", f"expected a list of [user, assistant] pairs, got {_tname(history)}")
    out: list[dict[str, str]] = []
    for i, pair in enumerate(history):
        if type(pair) not in (list, tuple) or len(pair) != 2 or not all(type(x) is str for x in pair):
            raise RecordError(f"history[{i}]", "expected a [user, assistant] pair of strings")
        out.append(_msg("user", pair[0]))
        out.append(_msg("assistant", pair[1]))
    return out


_DOLLY_USED = frozenset(("instruction", "context", "response"))


def _dolly(rec: dict) -> list[Normalised]:
    messages = [
        _msg("user", _join(_str(rec, "instruction"), _opt_str(rec, "context"))),
        _msg("assistant", _str(rec, "response")),
    ]
    if not _has_text(messages):
        raise _empty("instruction/context/response")
    return [Normalised(messages, _source_id(rec), None, _meta(rec, _DOLLY_USED), used=_DOLLY_USED)]


def _qa(rec: dict) -> list[Normalised]:
    for q, a in _QA_PAIRS:
        if q in rec and a in rec:
            break
    else:
        # Name the half of the pair that is missing when the other half is there.
        present = next((pair for pair in _QA_PAIRS if pair[0] in rec or pair[1] in rec), _QA_PAIRS[0])
        missing = present[1] if present[0] in rec else present[0]
        raise RecordError(
            missing, f"missing; expected question/answer or prompt/completion, got keys {sorted(rec)}"
        )
    messages = [_msg("user", _str(rec, q)), _msg("assistant", _str(rec, a))]
    if not _has_text(messages):
        raise _empty(f"{q}/{a}")
    used = _QA_USED[q, a]
    return [Normalised(messages, _source_id(rec), None, _meta(rec, used), used=used)]


_OPENAI_USED = frozenset(("messages", "system"))
_SHAREGPT_USED = frozenset(("conversations", "system"))


def _openai(rec: dict) -> list[Normalised]:
    messages = _turns(rec.get("messages"), "messages")
    if "system" in rec:
        _with_system(rec, messages)
    if not _has_text(messages):
        raise _empty("messages")
    return [_chat(rec, messages, _OPENAI_USED)]


def _sharegpt(rec: dict) -> list[Normalised]:
    messages = _turns(rec.get("conversations"), "conversations")
    if "system" in rec:
        _with_system(rec, messages)
    if not _has_text(messages):
        raise _empty("conversations")
    return [_chat(rec, messages, _SHAREGPT_USED)]


def _text(rec: dict) -> list[Normalised]:
    for key in _TEXT_KEYS:
        value = rec.get(key)
        if type(value) is str:
            break
    else:
        key = next((k for k in _TEXT_KEYS if k in rec), "text")
        raise RecordError(
            key,
            f"expected a string, got {_tname(rec.get(key))}"
            if key in rec
            else f"missing; expected a string field text, content or document (keys: {sorted(rec)})",
        )
    messages = [_msg("text", value)]
    if not _has_text(messages):
        raise _empty(key)
    return [Normalised(messages, _source_id(rec), None, _meta(rec, {key}), used=frozenset((key,)))]


_TURNS_USED = frozenset(("turns", "reference"))


def _turns_shape(rec: dict) -> list[Normalised]:
    """Benchmark prompts: user turns, each followed by its reference answer where one is given."""
    turns = rec.get("turns")
    if type(turns) is not list or not turns:
        raise RecordError("turns", f"expected a non-empty list of user turns, got {_tname(turns)}")
    reference = rec.get("reference")
    if reference is not None and type(reference) is not list:
        raise RecordError("reference", f"expected a list of reference answers, got {_tname(reference)}")
    messages: list[dict[str, str]] = []
    for i, turn in enumerate(turns):
        role = "user"
        if type(turn) is dict:
            given = turn.get("role")
            role = _ROLES.get(given, "user") if type(given) is str else "user"
            turn = turn.get("content")
            where = f"turns[{i}].content"
        else:
            where = f"turns[{i}]"
        if type(turn) is not str:
            raise RecordError(where, f"expected a string, got {_tname(turn)}")
        messages.append(_msg(role, turn))
        if reference and i < len(reference):
            answer = reference[i]
            if type(answer) is not str:
                raise RecordError(f"reference[{i}]", f"expected a string, got {_tname(answer)}")
            messages.append(_msg("assistant", answer))
    if not _has_text(messages):
        raise _empty("turns")
    meta = _meta(rec, _TURNS_USED)
    meta["has_reference"] = bool(reference)
    return [Normalised(messages, _source_id(rec), None, meta, used=_TURNS_USED)]


_SELF_INSTRUCT_USED = frozenset(("instruction", "instances"))


def _self_instruct(rec: dict) -> list[Normalised]:
    """One sample per instance; ids '<id>#<instance index>'."""
    instruction = _str(rec, "instruction")
    instances = rec.get("instances")
    if type(instances) is not list or not instances:
        raise RecordError(
            "instances", f"expected a non-empty list of {{input, output}}, got {_tname(instances)}"
        )
    base = _source_id(rec)
    meta = _meta(rec, _SELF_INSTRUCT_USED)
    out: list[Normalised] = []
    for i, inst in enumerate(instances):
        if type(inst) is not dict:
            raise RecordError(f"instances[{i}]", f"expected an object {{input, output}}, got {_tname(inst)}")
        try:
            user = _join(instruction, _opt_str(inst, "input"))
            output = _str(inst, "output")
        except RecordError as e:
            raise RecordError(f"instances[{i}].{e.field}", e.problem) from None
        messages = [_msg("user", user), _msg("assistant", output)]
        if not _has_text(messages):
            raise _empty(f"instances[{i}]")
        sample_meta = dict(meta, instance_index=i, n_instances=len(instances))
        out.append(Normalised(messages, None if base is None else f"{base}#{i}", None, sample_meta,
                              used=_SELF_INSTRUCT_USED))
    return out


_QUERY_USED = frozenset(("query", "response", "system", "history"))


def _query_response(rec: dict) -> list[Normalised]:
    """ms-swift / Qwen: earlier [user, assistant] pairs in history, then query -> response."""
    messages: list[dict[str, Any]] = []
    if "system" in rec:
        _with_system(rec, messages)
    if rec.get("history"):
        messages.extend(_history(rec["history"]))
    messages.append(_msg("user", _str(rec, "query")))
    messages.append(_msg("assistant", _str(rec, "response")))
    if not _has_text(messages):
        raise _empty("query/response")
    return [_chat(rec, messages, _QUERY_USED)]


_FIREFLY_USED = frozenset(("conversation", "system"))


def _firefly(rec: dict) -> list[Normalised]:
    """Firefly: conversation is a list of {human, assistant} rounds."""
    rounds = rec.get("conversation")
    if type(rounds) is not list:
        raise RecordError("conversation", f"expected a list of {{human, assistant}}, got {_tname(rounds)}")
    messages: list[dict[str, Any]] = []
    if "system" in rec:
        _with_system(rec, messages)
    for i, r in enumerate(rounds):
        if type(r) is not dict:
            raise RecordError(f"conversation[{i}]", f"expected an object {{human, assistant}}, got {_tname(r)}")
        for key, role in (("human", "user"), ("assistant", "assistant")):
            value = r.get(key)
            if value is None and key == "assistant" and i == len(rounds) - 1:
                continue  # an open last round: the question only
            if type(value) is not str:
                raise RecordError(f"conversation[{i}].{key}", f"expected a string, got {_tname(value)}")
            messages.append(_msg(role, value))
    if not _has_text(messages):
        raise _empty("conversation")
    return [_chat(rec, messages, _FIREFLY_USED)]


_PC_USED = frozenset(("prompt", "completion", "system"))


def _prompt_completion(rec: dict) -> list[Normalised]:
    """TRL prompt/completion, each a string or a message list; a boolean label is KTO's."""
    for key in ("prompt", "completion"):
        if key not in rec:
            raise RecordError(key, f"missing; expected a string or a list of messages (keys: {sorted(rec)})")
    prompt = _pref_prompt(rec["prompt"], "prompt")
    if "system" in rec:
        _with_system(rec, prompt)
    completion = rec["completion"]
    answer = [_msg("assistant", completion)] if type(completion) is str else _turns(completion, "completion")
    messages = prompt + answer
    if not _has_text(messages):
        raise _empty("prompt/completion")
    return [_chat(rec, messages, _PC_USED, meta={"prompt_turns": len(prompt)})]


def _instruction(rec: dict) -> list[Normalised]:
    """An instruction with no answer yet (Magpie's first stage): one user turn; tags stay metadata."""
    messages = [_msg("user", _str(rec, "instruction"))]
    if "system" in rec:
        _with_system(rec, messages)
    if not _has_text(messages):
        raise _empty("instruction")
    return [_chat(rec, messages, {"instruction", "system"})]


# --------------------------------------------------------------------------- preference pairs


def _hh_transcript(text: Any, where: str) -> list[dict[str, str]]:
    """Split '\\n\\nHuman: a\\n\\nAssistant: b' into turns; the text round-trips exactly."""
    if type(text) is not str:
        raise RecordError(where, f"expected a Human:/Assistant: transcript string, got {_tname(text)}")
    if text.startswith("Human:"):
        text = "\n\n" + text
    if not text.startswith("\n\nHuman:"):
        raise RecordError(where, f"expected a transcript starting with 'Human:', got {text[:40]!r}")
    messages: list[dict[str, str]] = []
    pos, n = 0, len(text)
    while pos < n:
        # here text[pos:] starts with "\n\nHuman:" or "\n\nAssistant:"
        if text.startswith("\n\nHuman:", pos):
            role, start = "user", pos + 8
        else:
            role, start = "assistant", pos + 12
        h = text.find("\n\nHuman:", start)
        a = text.find("\n\nAssistant:", start)
        end = min(x for x in (h, a, n) if x >= 0)
        content = text[start:end]
        if content.startswith(" "):
            content = content[1:]
        messages.append({"role": role, "content": content})
        pos = end
    return messages


_HH_USED = frozenset(("chosen", "rejected"))


def _hh(rec: dict) -> list[Normalised]:
    chosen = _hh_transcript(rec.get("chosen"), "chosen")
    rejected = _hh_transcript(rec.get("rejected"), "rejected")
    if not _has_text(chosen):
        raise _empty("chosen")
    if not _has_text(rejected):
        raise _empty("rejected")
    meta = _meta(rec, _HH_USED)
    meta["shared_prefix_turns"] = _shared_prefix(chosen, rejected)
    meta["prompt_turns"] = split_point(chosen, rejected)
    return [Normalised(chosen, _source_id(rec), rejected, meta, used=_HH_USED)]


def split_point(chosen: list[dict[str, Any]], rejected: list[dict[str, Any]]) -> int:
    """Where the prompt ends in a pair of whole conversations (TRL's implicit prompt): their shared
    prefix, shortened so that both answers keep at least one turn and start with an assistant turn."""
    n = min(_shared_prefix(chosen, rejected), len(chosen) - 1, len(rejected) - 1)
    while n > 0 and chosen[n]["role"] != "assistant":
        n -= 1
    return max(n, 0)


def _pref_prompt(value: Any, where: str) -> list[dict[str, Any]]:
    if type(value) is str:
        return [_msg("user", value)]
    if type(value) is dict and "messages" in value:  # OpenAI preference fine-tuning: input.messages
        return _turns(value["messages"], f"{where}.messages")
    return _turns(value, where)


def _pref_side(value: Any, where: str, prompt: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
    """One answer as a whole conversation, and whether it disagreed with the prompt it was given with."""
    if type(value) is str:
        if not prompt:
            raise RecordError(
                where, "a plain-string answer needs a prompt field (prompt, question or instruction)"
            )
        return prompt + [_msg("assistant", value)], False
    turns = _turns([value] if type(value) is dict else value, where)
    if not prompt or _shared_prefix(turns, prompt) == len(prompt):
        return turns, False  # already the full conversation, starting with the prompt
    if turns and turns[0]["role"] in ("assistant", "tool"):
        return prompt + turns, False  # only the answer turns
    return turns, True  # a full conversation whose opening differs from `prompt`: keep it as given


def _preference_from(
    rec: dict, prompt_key: str | None, chosen_key: str, rejected_key: str, system_key: str | None,
    input_key: str | None = None,
) -> Normalised:
    prompt = _pref_prompt(rec[prompt_key], prompt_key) if prompt_key else []
    if input_key and prompt:  # Alpaca-style ranking: instruction + input
        prompt[-1]["content"] = _join(prompt[-1]["content"], _opt_str(rec, input_key))
    if system_key:
        system = _opt_str(rec, system_key)
        if system and not (prompt and prompt[0]["role"] == "system"):
            prompt.insert(0, _msg("system", system))
    chosen, bad_c = _pref_side(rec.get(chosen_key), chosen_key, prompt)
    rejected, bad_r = _pref_side(rec.get(rejected_key), rejected_key, prompt)
    if not _has_text(chosen):
        raise _empty(chosen_key)
    if not _has_text(rejected):
        raise _empty(rejected_key)
    used = {chosen_key, rejected_key}
    used.update(k for k in (prompt_key, system_key, input_key) if k)
    if "messages" in rec and prompt_key != "messages" and _same_turns(rec["messages"], chosen):
        used.add("messages")  # UltraFeedback's copy of the chosen conversation
    extra: dict[str, Any] = {"shared_prefix_turns": _shared_prefix(chosen, rejected),
                             "prompt_turns": len(prompt) if prompt else split_point(chosen, rejected)}
    if bad_c or bad_r:
        extra["prompt_mismatch"] = True
    sample = _chat(rec, chosen, used, rejected, extra)
    if sample.tools is None and type(rec.get(prompt_key or "")) is dict:
        sample.tools = _tools(rec[prompt_key])  # OpenAI preference: input.tools
    return sample


def _same_turns(value: Any, turns: list[dict[str, Any]]) -> bool:
    try:
        return _turns(value, "messages") == turns
    except RecordError:
        return False


# answer pairs (preferred first) and the fields that can hold their prompt, in order of preference
_PAIR_KEYS = (("chosen", "rejected"), ("chosen_messages", "rejected_messages"),
              ("preferred_output", "non_preferred_output"), ("response_j", "response_k"))
_PAIR_PROMPT_KEYS = ("prompt", "question", "instruction", "conversations", "input")


def _pair_keys(rec: dict) -> tuple[str, str] | None:
    return next((p for p in _PAIR_KEYS if p[0] in rec and p[1] in rec), None)


def _preference(rec: dict) -> list[Normalised]:
    pair = _pair_keys(rec)
    if pair is None:
        missing = "rejected" if "chosen" in rec else "chosen"
        raise RecordError(missing, f"missing; expected a string or a list of messages (keys: {sorted(rec)})")
    prompt_key = next((k for k in _PAIR_PROMPT_KEYS if k in rec and rec[k] is not None
                       and not (k == "input" and "instruction" in rec)), None)
    input_key = "input" if prompt_key == "instruction" and "input" in rec else None
    return [_preference_from(rec, prompt_key, pair[0], pair[1], "system", input_key)]


# --------------------------------------------------------------------------- OpenAssistant trees

_OASST_ROLES = {"prompter": "user", "assistant": "assistant", "user": "user"}
_EMOJI_NAMES = {"+1": "up", "-1": "down"}


def _emoji_counts(emojis: Any) -> dict[str, int]:
    """OASST emoji votes in any of the export forms: {name: count}, {name: [..], count: [..]}, [{name, count}]."""
    if not emojis:
        return {}
    if type(emojis) is dict:
        names, counts = emojis.get("name"), emojis.get("count")
        if type(names) is list and type(counts) is list:
            return dict(zip(names, counts, strict=False))
        return {k: v for k, v in emojis.items() if type(v) is int}
    if type(emojis) is list:
        return {e["name"]: e.get("count", 0) for e in emojis if type(e) is dict and "name" in e}
    return {}


def _oasst_paths(root: dict, where: str) -> list[list[tuple[dict, str]]]:
    """Every root-to-leaf path of live (not deleted) messages, each message with its field path."""
    if root.get("deleted"):
        return []
    paths: list[list[tuple[dict, str]]] = []
    stack: list[list[tuple[dict, str]]] = [[(root, where)]]
    while stack:
        path = stack.pop()
        node, node_where = path[-1]
        replies = node.get("replies") or []
        if type(replies) is not list:
            raise RecordError(f"{node_where}.replies", f"expected a list of messages, got {_tname(replies)}")
        live = []
        for i, child in enumerate(replies):
            if type(child) is not dict:
                raise RecordError(
                    f"{node_where}.replies[{i}]", f"expected a message object, got {_tname(child)}"
                )
            if not child.get("deleted"):
                live.append((child, f"{node_where}.replies[{i}]"))
        if not live:
            paths.append(path)
        for child in reversed(live):  # reversed so that paths come out in reply order
            stack.append(path + [child])
    return paths


def _oasst_sample(path: list[tuple[dict, str]], tree_id: str, base_meta: dict[str, Any]) -> Normalised:
    messages: list[dict[str, str]] = []
    ids: list[str] = []
    ranks: list[int | None] = []
    synthetic: list[bool] = []
    emojis: list[dict[str, int]] = []
    for node, where in path:
        role = _OASST_ROLES.get(node.get("role"))
        if role is None:
            raise RecordError(f"{where}.role", f"expected prompter or assistant, got {node.get('role')!r}")
        text = node.get("text")
        if type(text) is not str:
            raise RecordError(f"{where}.text", f"expected a string, got {_tname(text)}")
        messages.append({"role": role, "content": text})
        ids.append(str(node.get("message_id") or where))
        if role == "assistant":
            ranks.append(node.get("rank"))
        synthetic.append(bool(node.get("synthetic")))
        emojis.append(_emoji_counts(node.get("emojis")))
    if not _has_text(messages):
        raise _empty(path[0][1])
    meta = dict(base_meta)
    meta["oasst_tree_id"] = tree_id
    meta["oasst_message_ids"] = ids
    meta["oasst_ranks"] = ranks  # rank of each assistant message on the path (0 = best; None = unranked)
    meta["oasst_leaf_rank"] = ranks[-1] if ranks and messages[-1]["role"] == "assistant" else None
    meta["oasst_leaf_role"] = messages[-1]["role"]
    meta["oasst_synthetic"] = synthetic
    meta["oasst_any_synthetic"] = any(synthetic)
    meta["oasst_lang"] = path[0][0].get("lang")
    # emoji votes, one list per emoji name, aligned with oasst_message_ids
    for name in sorted({n for e in emojis for n in e}):
        key = "oasst_emoji_" + _EMOJI_NAMES.get(name, name.lstrip("_"))
        meta[key] = [e.get(name, 0) for e in emojis]
    return Normalised(messages, f"{tree_id}/{ids[-1]}", None, meta)


_OASST_TREE_USED = frozenset(("prompt",))
_OASST_MESSAGE_USED = frozenset(("text", "role", "replies", "emojis", "labels"))


def _oasst(rec: dict) -> list[Normalised]:
    """One sample per root-to-leaf path; deleted messages (and what hangs under them) are skipped."""
    if "message_tree_id" in rec:
        root, where, used = rec.get("prompt"), "prompt", _OASST_TREE_USED
        tree_id = rec.get("message_tree_id")
    else:
        root, where, used = rec, "message", _OASST_MESSAGE_USED
        tree_id = rec.get("message_tree_id") or rec.get("message_id")
    if type(root) is not dict:
        raise RecordError(where, f"expected the root message object, got {_tname(root)}")
    if tree_id is None:
        raise RecordError(
            "message_id", "missing; expected the tree's id (message_tree_id or root message_id)"
        )
    base_meta = _meta(rec, used)
    out = [_oasst_sample(p, str(tree_id), base_meta) for p in _oasst_paths(root, where)]
    for sample in out:
        sample.used = used
    return out


# --------------------------------------------------------------------------- mapped columns


@dataclass(frozen=True)
class _Mapping:
    cols: dict[str, str]  # canonical key -> column: prompt, input, response, system, text, id, ...
    kind: str  # "text", "turns", "preference" or "pair"


_ALIASES = {"instruction": "prompt", "context": "input", "output": "response"}


def check_mapping(mapping: dict[str, str]) -> None:
    """Validate a column mapping for the 'mapped' shape; raise ValueError saying what is wrong."""
    _compile_mapping(tuple(sorted(mapping.items())))


@lru_cache(maxsize=64)
def _compile_mapping(items: tuple[tuple[str, str], ...]) -> _Mapping:
    valid = ", ".join(MAPPING_KEYS)
    if not items:
        raise ValueError(f"the 'mapped' shape needs a mapping of {{key: column}}; valid keys: {valid}")
    cols: dict[str, str] = {}
    for key, column in items:
        if key not in MAPPING_KEYS:
            raise ValueError(f"unknown mapping key {key!r}; valid keys: {valid}")
        if type(column) is not str:
            raise ValueError(f"mapping {key!r}: expected a column name (string), got {_tname(column)}")
        canon = _ALIASES.get(key, key)
        if canon in cols:
            raise ValueError(f"mapping names {canon!r} twice (through {key!r} and an alias); keep one")
        cols[canon] = column
    content = {k for k in cols if k not in ("id", "system")}
    if not content:
        raise ValueError(f"mapping {dict(items)} names no content column; give text, prompt, messages, ...")
    if "text" in cols:
        if content != {"text"} or "system" in cols:
            raise ValueError("mapping 'text' (plain text) cannot be combined with other content columns")
        return _Mapping(cols, "text")
    if "messages" in cols or "conversations" in cols:
        if content - {"messages", "conversations"} or len(content) > 1:
            raise ValueError(
                "mapping 'messages'/'conversations' cannot be combined with other content columns"
            )
        return _Mapping(cols, "turns")
    if "chosen" in cols or "rejected" in cols:
        if not ("chosen" in cols and "rejected" in cols):
            raise ValueError("mapping needs both 'chosen' and 'rejected' for preference pairs")
        if content - {"chosen", "rejected", "prompt"}:
            raise ValueError("preference mapping takes only prompt, chosen, rejected, system and id")
        return _Mapping(cols, "preference")
    if "prompt" not in cols:
        raise ValueError("mapping needs 'prompt' (or 'instruction') alongside input/response")
    return _Mapping(cols, "pair")


def _col(rec: dict, column: str, key: str, optional: bool = False) -> Any:
    if column not in rec:
        if optional:
            return None
        raise RecordError(
            column, f"column mapped to {key!r} is missing from the record (keys: {sorted(rec)})"
        )
    return rec[column]


def _col_str(rec: dict, column: str, key: str, optional: bool = False) -> str:
    value = _col(rec, column, key, optional)
    if type(value) is str:
        return value
    if value is None and optional:
        return ""
    raise RecordError(column, f"column mapped to {key!r}: expected a string, got {_tname(value)}")


def _mapped(rec: dict, mapping: dict[str, str] | None) -> list[Normalised]:
    if not mapping:
        raise ValueError(
            "the 'mapped' shape needs a mapping of {key: column}; valid keys: " + ", ".join(MAPPING_KEYS)
        )
    m = _compile_mapping(tuple(sorted(mapping.items())))
    cols = m.cols
    source_id: str | None = None
    if "id" in cols:
        raw_id = _col(rec, cols["id"], "id")
        source_id = None if raw_id is None else str(raw_id)
    used = {c for k, c in cols.items() if k != "id"}  # the id column stays in meta, as for other shapes
    if m.kind == "preference":
        for key in ("prompt", "chosen", "rejected"):
            if key in cols:
                _col(rec, cols[key], key)
        sample = _preference_from(
            rec, cols.get("prompt"), cols["chosen"], cols["rejected"], cols.get("system")
        )
        sample.source_id = source_id
        return [sample]
    if m.kind == "text":
        messages = [_msg("text", _col_str(rec, cols["text"], "text"))]
    elif m.kind == "turns":
        key = "messages" if "messages" in cols else "conversations"
        messages = _turns(_col(rec, cols[key], key), cols[key])
    else:
        prompt = _col_str(rec, cols["prompt"], "prompt")
        if "input" in cols:
            prompt = _join(prompt, _col_str(rec, cols["input"], "input", optional=True))
        messages = [_msg("user", prompt)]
        if "response" in cols:
            messages.append(_msg("assistant", _col_str(rec, cols["response"], "response")))
    if "system" in cols:
        system = _col_str(rec, cols["system"], "system", optional=True)
        if system and messages[0]["role"] != "system":
            messages.insert(0, _msg("system", system))
    if not _has_text(messages):
        raise _empty("/".join(c for k, c in cols.items() if k != "id"))
    return [Normalised(messages, source_id, None, _meta(rec, used), used=frozenset(used))]


# --------------------------------------------------------------------------- public API

_NORMALISERS: dict[str, Callable[[dict], list[Normalised]]] = {
    "alpaca": _alpaca,
    "dolly": _dolly,
    "sharegpt": _sharegpt,
    "openai": _openai,
    "preference": _preference,
    "hh": _hh,
    "oasst": _oasst,
    "qa": _qa,
    "turns": _turns_shape,
    "self_instruct": _self_instruct,
    "text": _text,
    "query_response": _query_response,
    "firefly": _firefly,
    "prompt_completion": _prompt_completion,
    "instruction": _instruction,
}


def normalise(record: dict, shape: str, mapping: dict[str, str] | None = None) -> list[Normalised]:
    """Turn one record into its samples (usually one; an OASST tree gives one per root-to-leaf path, a
    self-instruct record one per instance; a tree whose root is deleted gives none).

    Raises RecordError for a bad record, ValueError for an unknown shape or a bad mapping. `mapping` is only
    for the 'mapped' shape; giving one with another shape is a ValueError rather than silently ignored.
    """
    fn = _NORMALISERS.get(shape)
    if fn is not None and not mapping:
        if type(record) is not dict:
            raise RecordError("<record>", f"expected a JSON object, got {_tname(record)}")
        return fn(record)
    if shape == "mapped":
        if type(record) is not dict:
            raise RecordError("<record>", f"expected a JSON object, got {_tname(record)}")
        return _mapped(record, mapping)
    if fn is not None:
        raise ValueError(f"a column mapping is only used with shape 'mapped', not {shape!r}")
    raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")


def _has_prompt(rec: dict) -> bool:
    return any(k in rec for k in _PROMPT_KEYS)


_RULE_ORDER = ("hh", "preference", "openai", "sharegpt", "firefly", "oasst", "self_instruct", "dolly", "alpaca",
               "qa", "query_response", "prompt_completion", "turns", "text", "instruction")


def candidates(record: Any) -> list[str]:
    """Every shape whose fields one record has (module docstring), in rule order."""
    if not isinstance(record, dict):
        return []
    out: list[str] = []
    pair = _pair_keys(record)
    if pair is not None:
        chosen = record[pair[0]]
        if (pair[0] == "chosen" and type(chosen) is str and chosen.lstrip().startswith("Human:")
                and not _has_prompt(record)):
            out.append("hh")
        elif any(k in record for k in _PAIR_PROMPT_KEYS) or type(chosen) in (list, dict):
            out.append("preference")
    if "messages" in record:
        out.append("openai")
    if "conversations" in record:
        out.append("sharegpt")
    if type(record.get("conversation")) is list:
        out.append("firefly")
    if "message_tree_id" in record or ("message_id" in record and "replies" in record):
        out.append("oasst")
    if "instruction" in record:
        if "instances" in record:
            out.append("self_instruct")
        if "context" in record and "response" in record:
            out.append("dolly")
        if "output" in record:
            out.append("alpaca")
    if any(q in record and a in record for q, a in _QA_PAIRS):
        out.append("qa")
    if "query" in record and "response" in record:
        out.append("query_response")
    if "prompt" in record and "completion" in record:
        out.append("prompt_completion")
    if "turns" in record:
        out.append("turns")
    if any(type(record.get(k)) is str for k in _TEXT_KEYS):
        out.append("text")
    if type(record.get("instruction")) is str and not out:
        out.append("instruction")
    return out


def shape_of(record: Any) -> str | None:
    """The first shape one record matches by the detection rules (module docstring), or None."""
    found = candidates(record)
    return found[0] if found else None


def fields_used(record: dict, shape: str) -> int:
    """How many of a record's fields a shape puts into turns, tools or label (-1: the shape refuses it)."""
    try:
        samples = normalise(record, shape)
    except (RecordError, ValueError):
        return -1
    return max((len(s.used & record.keys()) for s in samples), default=0)


# what a --map line needs for each kind of content, and the columns that often hold it
_MAP_HINTS = (("prompt", ("prompt", "question", "instruction", "query", "input", "problem", "title")),
              ("response", ("response", "answer", "output", "completion", "solution", "target", "body")),
              ("text", ("text", "content", "document", "body", "passage", "sentence", "tweet")),
              ("messages", ("messages", "conversations", "dialog", "dialogue", "chat", "turns")))


def _map_line(keys: list[str]) -> str:
    """A --map line that would load records with these keys: known-looking columns first, else the
    first string-looking ones."""
    lower = {k.lower(): k for k in keys}
    picks: dict[str, str] = {}
    for role, names in _MAP_HINTS:
        col = next((lower[n] for n in names if n in lower and lower[n] not in picks.values()), None)
        if col is not None:
            picks[role] = col
    if "messages" in picks:
        picks = {"messages": picks["messages"]}
    elif "prompt" in picks and "response" in picks:
        picks = {"prompt": picks["prompt"], "response": picks["response"]}
    elif "text" in picks:
        picks = {"text": picks["text"]}
    elif len(keys) >= 2:
        picks = {"prompt": keys[0], "response": keys[1]}
    else:
        picks = {"text": keys[0] if keys else "COLUMN"}
    return " ".join(f"--map {k}={v}" for k, v in picks.items())


_SHAPE_FIELDS: dict[str, tuple[str, ...]] = {  # the fields that name each shape, for "closest shapes"
    "qa": ("question", "answer"), "alpaca": ("instruction", "input", "output"), "openai": ("messages",),
    "sharegpt": ("conversations",), "preference": ("prompt", "chosen", "rejected"),
    "query_response": ("query", "response", "history"), "prompt_completion": ("prompt", "completion"),
    "dolly": ("instruction", "context", "response"), "text": ("text",), "turns": ("turns",),
    "firefly": ("conversation",), "instruction": ("instruction",),
}


def _closest(keys: set[str]) -> list[str]:
    """The three shapes whose fields overlap most with the keys seen (ties: the commonest shapes first)."""
    lower = {k.lower() for k in keys}
    order = list(_SHAPE_FIELDS)
    return sorted(order, key=lambda s: (-len(set(_SHAPE_FIELDS[s]) & lower), order.index(s)))[:3]


def _no_shape_message(records: list, detail: str) -> str:
    """Short: the keys seen, the closest shapes and a --map line that would load the records."""
    keys = Counter(k for r in records if isinstance(r, dict) for k in r)
    seen = ", ".join(f"{k} ({n})" for k, n in keys.most_common(8)) or "none"
    if len(keys) > 8:
        seen += f", +{len(keys) - 8} more"
    closest = ", ".join(f"{name} ({'/'.join(_SHAPE_FIELDS[name])})" for name in _closest(set(keys)))
    return (f"cannot tell the record shape: {detail}. Keys seen (records having each): {seen}. "
            f"Closest shapes: {closest}; see `assay shapes`. "
            f"To load it, map the columns: {_map_line([k for k, _ in keys.most_common()])}")


def detect_shape(records: list[dict]) -> str:
    """The shape that at least 90% of the sampled records have the fields of; where several do, the one
    that puts the most of each record into turns (ties: rule order). ShapeError otherwise."""
    sample = records[:1000]
    if not sample:
        raise ShapeError("cannot tell the record shape: no records to look at")
    if not any(isinstance(r, dict) for r in sample):
        raise ShapeError(
            f"cannot tell the record shape: records are not JSON objects (record 0 is a {_tname(sample[0])}); "
            'wrap plain strings as {"text": ...}'
        )
    found = [candidates(r) for r in sample]
    counts = Counter(s for c in found for s in c)
    if not counts:
        raise ShapeError(_no_shape_message(sample, f"none of {len(sample)} records matches a known shape"))
    agreed = [s for s in _RULE_ORDER if counts[s] >= _AGREEMENT * len(sample)]
    if len(agreed) == 1:
        return agreed[0]
    if agreed:
        scored = sample[:100]
        return max(agreed, key=lambda s: (sum(fields_used(r, s) for r in scored), -_RULE_ORDER.index(s)))
    shapes = [c[0] if c else None for c in found]
    best, n = Counter(s for s in shapes if s is not None).most_common(1)[0]
    odd = next(i for i, s in enumerate(shapes) if s != best)
    odd_shape = shapes[odd] or "no known shape"
    odd_keys = sorted(sample[odd]) if isinstance(sample[odd], dict) else _tname(sample[odd])
    shares = ", ".join(f"{s} {c / len(sample):.0%}" for s, c in Counter(x for x in shapes if x).most_common())
    raise ShapeError(
        f"records disagree on their shape ({shares} of {len(sample)} sampled; at least "
        f"{_AGREEMENT:.0%} must agree): most look like {best!r}, but record {odd} looks like "
        f"{odd_shape!r} (keys {odd_keys}). Pick a shape by hand or map the columns."
    )


def describe_shapes() -> dict[str, str]:
    """Shape name -> one line saying which fields it expects (for the UI, CLI help and error messages)."""
    return dict(_DESCRIPTIONS)


def json_kind(value: Any) -> str:
    """The JSON type of a parsed value, as load reports and field accounting name it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "object"
