"""Record shapes: detect which shape a dataset's records have and normalise each record to one chat form.

A *shape* is the layout of one record (Alpaca's instruction/input/output, ShareGPT's conversations, an
OpenAssistant tree, ...). `detect_shape` looks at a sample of records and names the shape;
`normalise` turns one record into one or more `Normalised` samples: a list of {role, content} turns,
the rejected conversation for preference pairs, and flat metadata. Readers (file formats) and the ingest
orchestration live elsewhere; this module only knows about dicts.

Detection rules, tried in this order on each record (the first that matches wins):

 1. `chosen` and `rejected`, `chosen` a string starting with "Human:" (after leading whitespace)
    and no prompt field                                                          -> hh
 2. `chosen` and `rejected`, plus a prompt field (prompt/question/instruction) or message-list
    answers                                                                      -> preference
    (before `messages`, so that UltraFeedback-style records, which carry both, stay preference pairs)
 3. `messages`                                                                   -> openai
 4. `conversations`                                                              -> sharegpt
 5. `message_tree_id`, or `message_id` and `replies`                             -> oasst
 6. `instruction` and `instances`                                                -> self_instruct
 7. `instruction`, `context` and `response`                                      -> dolly
 8. `instruction` and `output`                                                   -> alpaca
 9. question/answer, prompt/completion, query/response or prompt/response        -> qa
10. `turns`                                                                      -> turns
11. a string field `text`, `content` or `document`                               -> text
"mapped" is never detected: the user names the columns.

Normalising is on the ingest hot path (30,000 rows/s end to end on 2 cores), so the simple shapes use
plain dict look-ups, `type(x) is str` checks and str methods, and share the record's strings rather than
copying them.
"""

from __future__ import annotations

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
    "mapped",
)

_DESCRIPTIONS: dict[str, str] = {
    "alpaca": "instruction, output (strings); optional input, system, history [[user, assistant], ...]",
    "dolly": "instruction, context, response (strings); category kept as metadata",
    "sharegpt": "conversations: list of {from, value}, from in human/user/gpt/assistant/chatgpt/bing/system",
    "openai": "messages: list of {role, content}, content a string or a list of {type: text, text} parts",
    "preference": "prompt (string or messages), chosen and rejected (strings or message lists)",
    "hh": "chosen and rejected: Anthropic transcripts '\\n\\nHuman: ...\\n\\nAssistant: ...'",
    "oasst": "OpenAssistant tree: message_tree_id + prompt, or a root message {message_id, role, text, replies}",
    "qa": "question/answer (also prompt/completion, query/response, prompt/response): strings",
    "turns": "turns: list of user turns (strings or {content}); optional reference answers under reference",
    "self_instruct": "instruction (string) and instances: list of {input, output}",
    "text": "text (or content, or document): a plain-text string, pre-training style",
    "mapped": "you name the columns: prompt/instruction, input/context, response/output, system, text, id, "
    "chosen, rejected, messages, conversations",
}

# Fields whose value becomes Normalised.source_id, in order of preference.
_ID_KEYS = ("id", "question_id", "message_tree_id", "message_id", "conversation_id", "uuid", "_id")
_PROMPT_KEYS = ("prompt", "question", "instruction")
_QA_PAIRS = (("question", "answer"), ("prompt", "completion"), ("query", "response"), ("prompt", "response"))
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
}
_ROLE_NAMES = "/".join(_ROLES)

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
    """One sample in the common chat form."""

    messages: list[dict[str, str]]
    source_id: str | None = None
    rejected: list[dict[str, str]] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


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


def _has_text(messages: list[dict[str, str]]) -> bool:
    for m in messages:
        c = m["content"]
        if c and not c.isspace():
            return True
    return False


def _empty(where: str) -> RecordError:
    return RecordError(where, "empty text; expected at least one non-empty turn")


def _msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def _parts_text(content: Any, where: str) -> str:
    """OpenAI content given as a list of parts: join the text parts, skip images and the like."""
    if type(content) is not list:
        raise RecordError(where, f"expected a string or a list of text parts, got {_tname(content)}")
    texts: list[str] = []
    for i, part in enumerate(content):
        if type(part) is str:
            texts.append(part)
        elif type(part) is dict:
            if part.get("type", "text") == "text":
                text = part.get("text")
                if type(text) is not str:
                    raise RecordError(f"{where}[{i}].text", f"expected a string, got {_tname(text)}")
                texts.append(text)
        else:
            raise RecordError(f"{where}[{i}]", f"expected a text part {{type, text}}, got {_tname(part)}")
    return "\n".join(texts)


def _turns(turns: Any, where: str) -> list[dict[str, str]]:
    """A list of messages, OpenAI style {role, content} or ShareGPT style {from, value}."""
    if type(turns) is not list:
        raise RecordError(where, f"expected a list of messages, got {_tname(turns)}")
    out: list[dict[str, str]] = []
    for i, t in enumerate(turns):
        if type(t) is not dict:
            raise RecordError(f"{where}[{i}]", f"expected an object with role and content, got {_tname(t)}")
        role = t.get("role")
        if role is not None:
            role_key, content_key = "role", "content"
        else:
            role, role_key, content_key = t.get("from"), "from", "value"
            if role is None:
                raise RecordError(
                    f"{where}[{i}]", f"expected keys role/content or from/value, got keys {sorted(t)}"
                )
        mapped = _ROLES.get(role) if type(role) is str else None
        if mapped is None:
            raise RecordError(f"{where}[{i}].{role_key}", f"expected one of {_ROLE_NAMES}, got {role!r}")
        content = t.get(content_key)
        if type(content) is not str:
            content = _parts_text(content, f"{where}[{i}].{content_key}")
        out.append({"role": mapped, "content": content})
    return out


def _with_system(rec: dict, messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """Prepend a top-level `system` string unless the conversation already opens with one."""
    system = _opt_str(rec, "system")
    if system and not (messages and messages[0]["role"] == "system"):
        messages.insert(0, _msg("system", system))
    return messages


def _shared_prefix(a: list[dict[str, str]], b: list[dict[str, str]]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x["role"] != y["role"] or x["content"] != y["content"]:
            break
        n += 1
    return n


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
    return [Normalised(messages, _source_id(rec), None, _meta(rec, _ALPACA_USED))]


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
    return [Normalised(messages, _source_id(rec), None, _meta(rec, _DOLLY_USED))]


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
    return [Normalised(messages, _source_id(rec), None, _meta(rec, {q, a}))]


_OPENAI_USED = frozenset(("messages", "system"))
_SHAREGPT_USED = frozenset(("conversations", "system"))


def _openai(rec: dict) -> list[Normalised]:
    messages = _turns(rec.get("messages"), "messages")
    if "system" in rec:
        _with_system(rec, messages)
    if not _has_text(messages):
        raise _empty("messages")
    return [Normalised(messages, _source_id(rec), None, _meta(rec, _OPENAI_USED))]


def _sharegpt(rec: dict) -> list[Normalised]:
    messages = _turns(rec.get("conversations"), "conversations")
    if "system" in rec:
        _with_system(rec, messages)
    if not _has_text(messages):
        raise _empty("conversations")
    return [Normalised(messages, _source_id(rec), None, _meta(rec, _SHAREGPT_USED))]


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
    return [Normalised(messages, _source_id(rec), None, _meta(rec, {key}))]


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
    return [Normalised(messages, _source_id(rec), None, meta)]


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
        out.append(Normalised(messages, None if base is None else f"{base}#{i}", None, sample_meta))
    return out


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
    return [Normalised(chosen, _source_id(rec), rejected, meta)]


def _pref_prompt(value: Any, where: str) -> list[dict[str, str]]:
    if type(value) is str:
        return [_msg("user", value)]
    return _turns(value, where)


def _pref_side(value: Any, where: str, prompt: list[dict[str, str]]) -> tuple[list[dict[str, str]], bool]:
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
    if turns and turns[0]["role"] == "assistant":
        return prompt + turns, False  # only the answer turns
    return turns, True  # a full conversation whose opening differs from `prompt`: keep it as given


def _preference_from(
    rec: dict, prompt_key: str | None, chosen_key: str, rejected_key: str, system_key: str | None
) -> Normalised:
    prompt = _pref_prompt(rec[prompt_key], prompt_key) if prompt_key else []
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
    used.update(k for k in (prompt_key, system_key) if k)
    meta = _meta(rec, used)
    meta["shared_prefix_turns"] = _shared_prefix(chosen, rejected)
    meta["prompt_turns"] = len(prompt)
    if bad_c or bad_r:
        meta["prompt_mismatch"] = True
    return Normalised(chosen, _source_id(rec), rejected, meta)


def _preference(rec: dict) -> list[Normalised]:
    for missing in ("chosen", "rejected"):
        if missing not in rec:
            raise RecordError(
                missing, f"missing; expected a string or a list of messages (keys: {sorted(rec)})"
            )
    prompt_key = next((k for k in _PROMPT_KEYS if k in rec), None)
    return [_preference_from(rec, prompt_key, "chosen", "rejected", "system")]


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
    return [_oasst_sample(p, str(tree_id), base_meta) for p in _oasst_paths(root, where)]


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
    return [Normalised(messages, source_id, None, _meta(rec, used))]


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


def shape_of(record: Any) -> str | None:
    """The shape one record matches by the detection rules (module docstring), or None."""
    if not isinstance(record, dict):
        return None
    if "chosen" in record and "rejected" in record:
        chosen = record["chosen"]
        if type(chosen) is str and chosen.lstrip().startswith("Human:") and not _has_prompt(record):
            return "hh"
        if _has_prompt(record) or type(chosen) is list:
            return "preference"
    if "messages" in record:
        return "openai"
    if "conversations" in record:
        return "sharegpt"
    if "message_tree_id" in record or ("message_id" in record and "replies" in record):
        return "oasst"
    if "instruction" in record:
        if "instances" in record:
            return "self_instruct"
        if "context" in record and "response" in record:
            return "dolly"
        if "output" in record:
            return "alpaca"
    for q, a in _QA_PAIRS:
        if q in record and a in record:
            return "qa"
    if "turns" in record:
        return "turns"
    if any(type(record.get(k)) is str for k in _TEXT_KEYS):
        return "text"
    return None


def _no_shape_message(records: list, detail: str) -> str:
    keys = Counter(k for r in records if isinstance(r, dict) for k in r)
    seen = ", ".join(f"{k} ({n})" for k, n in keys.most_common(30)) or "none"
    expected = "; ".join(f"{name}: {desc}" for name, desc in _DESCRIPTIONS.items())
    return (
        f"cannot tell the record shape: {detail}. Keys seen (records having each): {seen}. "
        f"Expected one of: {expected}. Pick a shape by hand or map the columns (shape 'mapped')."
    )


def detect_shape(records: list[dict]) -> str:
    """The shape that at least 90% of the sampled records match; ShapeError otherwise."""
    sample = records[:1000]
    if not sample:
        raise ShapeError("cannot tell the record shape: no records to look at")
    if not any(isinstance(r, dict) for r in sample):
        raise ShapeError(
            f"cannot tell the record shape: records are not JSON objects (record 0 is a {_tname(sample[0])}); "
            'wrap plain strings as {"text": ...}'
        )
    shapes = [shape_of(r) for r in sample]
    counts = Counter(s for s in shapes if s is not None)
    if not counts:
        raise ShapeError(_no_shape_message(sample, f"none of {len(sample)} records matches a known shape"))
    best, n = counts.most_common(1)[0]
    if n >= _AGREEMENT * len(sample):
        return best
    odd = next(i for i, s in enumerate(shapes) if s != best)
    odd_shape = shapes[odd] or "no known shape"
    odd_keys = sorted(sample[odd]) if isinstance(sample[odd], dict) else _tname(sample[odd])
    shares = ", ".join(f"{s} {c / len(sample):.0%}" for s, c in counts.most_common())
    raise ShapeError(
        f"records disagree on their shape ({shares} of {len(sample)} sampled; at least "
        f"{_AGREEMENT:.0%} must agree): most look like {best!r}, but record {odd} looks like "
        f"{odd_shape!r} (keys {odd_keys}). Pick a shape by hand or map the columns."
    )


def describe_shapes() -> dict[str, str]:
    """Shape name -> one line saying which fields it expects (for the UI, CLI help and error messages)."""
    return dict(_DESCRIPTIONS)
