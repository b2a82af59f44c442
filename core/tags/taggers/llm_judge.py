"""LLM-judge tags: an OpenAI-compatible chat-completions endpoint (a vLLM server, typically) or local
`transformers` generation, with prompts written for this project that ask for Magpie's fields as JSON.

Every answer is prefilled with "{" (an assistant-prefix message; vLLM continues it with
`continue_final_message=True, add_generation_prompt=False`), generated at temperature 0, and goes through
one strict parse step: the text must be one JSON object (surrounding whitespace and a ```json fence are
forgiven, nothing else), each field must be present, and vocabulary fields must hold a vocabulary value.
A failure is recorded as parse_error, a value outside the vocabulary as out_of_vocabulary, a request
that failed after its retries as request_error, each with the raw answer or error in `detail` and no
value. Requests run concurrently on a thread pool and retry timeouts, connection errors, 429 and 5xx
answers with exponential backoff.
"""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pandas as pd

from core.tags.taggers.base import INSTRUCTION_CHARS, Tagger, row
from core.tags.vocabulary import CATEGORY_DEFINITIONS, HAZARDS, check_value

PROMPT_VERSION = "assay-magpie-judge-v2"  # v2: category definitions, Llama Guard 2 category names
PREFILL = "{"
CONVERSATION_CHARS = 6000

_CATEGORY_LINES = "\n".join(f"- {c}: {d}" for c, d in CATEGORY_DEFINITIONS.items())  # Magpie gives each its definition
_HAZARD_LINES = "\n".join(f"- {k}: {v}" for k, v in HAZARDS.items())

PROMPTS: dict[str, str] = {
    "category": (
        "You label the task type of a user's request to an AI assistant.\n\n"
        "## User request\n<<<\n{instruction}\n>>>\n\n"
        "## Task categories (name: definition)\n" + _CATEGORY_LINES + "\n\n"
        "Choose the one category that fits best as the primary tag, and any further categories that also "
        "apply (often none).\n\n## Output\nAnswer with one JSON object and nothing else, exactly:\n"
        '{{"primary_tag": "<one category, spelled as listed>", "other_tags": ["<category>", ...]}}'
    ),
    "difficulty": (
        "You assess how hard a user's request to an AI assistant is.\n\n"
        "## User request\n<<<\n{instruction}\n>>>\n\n"
        "First state the user's intent in one sentence, then the knowledge a model needs to answer well, "
        "then rate the difficulty as one of: very easy, easy, medium, hard, very hard.\n\n"
        "## Output\nAnswer with one JSON object and nothing else, exactly:\n"
        '{{"intent": "The user wants to ...", "knowledge": "To solve this, the model needs to know ...", '
        '"difficulty": "<very easy|easy|medium|hard|very hard>"}}'
    ),
    "input_quality": (
        "You rate the quality of a user's request to an AI assistant: its clarity, specificity and "
        "coherence, and whether it gives the context needed for a full answer.\n\n"
        "## User request\n<<<\n{instruction}\n>>>\n\n"
        "Ratings: very poor (unclear, vague or incoherent; essential context missing), poor (somewhat "
        "unclear or missing important details), average (moderately clear and specific; some clarification "
        "may be needed), good (clear, specific and mostly well-formed), excellent (very clear, specific and "
        "well-articulated, with all the context needed).\n\n"
        "## Output\nAnswer with one JSON object and nothing else, exactly:\n"
        '{{"explanation": "<one or two sentences>", "input_quality": "<very poor|poor|average|good|excellent>"}}'
    ),
    "safety": (
        "You check a conversation between a user and an AI assistant for unsafe content, using the "
        "Llama Guard 2 hazard categories:\n" + _HAZARD_LINES + "\n\n"
        "## Conversation\n<<<\n{conversation}\n>>>\n\n"
        "Is any turn unsafe? If unsafe, list every hazard category that applies by its code.\n\n"
        "## Output\nAnswer with one JSON object and nothing else, exactly:\n"
        '{{"safety": "<safe|unsafe>", "hazards": ["S1", ...]}}  (hazards is [] when safe)'
    ),
}
# prompt -> (JSON field -> stored tag)
FIELDS: dict[str, dict[str, str]] = {
    "category": {"primary_tag": "category", "other_tags": "other_categories"},
    "difficulty": {"intent": "intent", "knowledge": "knowledge", "difficulty": "difficulty"},
    "input_quality": {"input_quality": "input_quality"},
    "safety": {"safety": "safety", "hazards": "hazards"},
}
PROMPT_OF_TAG = {tag: p for p, fields in FIELDS.items() for tag in fields.values()}


def build_messages(prompt: str, sample: Any, prefill: bool = True) -> list[dict[str, str]]:
    """The chat messages of one judge request for one sample (a load_samples row)."""
    conversation = "\n\n".join(f"{t['role']}: {t['content']}" for t in sample.messages)[:CONVERSATION_CHARS]
    text = PROMPTS[prompt].format(instruction=sample.instruction[:INSTRUCTION_CHARS], conversation=conversation)
    messages = [{"role": "user", "content": text}]
    if prefill:
        messages.append({"role": "assistant", "content": PREFILL})
    return messages


# ---- parsing ------------------------------------------------------------------------------------


def parse_answer(text: str | None, prefilled: bool = True) -> tuple[dict[str, Any] | None, str | None]:
    """(object, None) or (None, why). Strict: one JSON object, optionally in a ```json fence."""
    if text is None:
        return None, "no answer"
    body = text.strip()
    if body.startswith("```"):
        body = body.strip("`").strip()
        body = body[4:].strip() if body.lower().startswith("json") else body
    if prefilled and not body.startswith("{"):
        body = PREFILL + body  # the server continued our "{" (when it did not, the answer starts with one)
    try:
        obj, end = json.JSONDecoder().raw_decode(body)
    except json.JSONDecodeError as exc:
        return None, f"not JSON ({exc.msg} at {exc.pos}): {text[:500]!r}"
    if body[end:].strip():
        return None, f"text after the JSON object: {text[:500]!r}"
    if not isinstance(obj, dict):
        return None, f"not a JSON object: {text[:500]!r}"
    return obj, None


def rows_from_answer(sample_id: int, prompt: str, wanted: Sequence[str], text: str | None, error: str | None,
                     method: str, prefilled: bool = True) -> list[dict[str, Any]]:
    """Stored rows for the tags `wanted` from one answer (or one failed request)."""
    fields = {f: t for f, t in FIELDS[prompt].items() if t in wanted}
    if error is not None:
        return [row(sample_id, t, status="request_error", detail=error[:1000], method=method) for t in fields.values()]
    obj, why = parse_answer(text, prefilled)
    if obj is None:
        return [row(sample_id, t, status="parse_error", detail=why, method=method) for t in fields.values()]
    out = []
    explanation = obj.get("explanation") if prompt == "input_quality" else None
    for field, tag in fields.items():
        if field not in obj:
            out.append(row(sample_id, tag, status="parse_error", method=method,
                           detail=f"field {field!r} missing: {text[:500]!r}"))
            continue
        raw = obj[field]
        if tag in ("other_categories", "hazards") and raw in ([], None, ""):
            out.append(row(sample_id, tag, value="[]" if tag == "other_categories" else "", method=method))
            continue
        value, status, detail = check_value(tag, raw)
        if status == "ok" and explanation is not None:
            detail = str(explanation)[:1000]
        out.append(row(sample_id, tag, value=value, status=status, detail=detail, method=method))
    return out


# ---- clients --------------------------------------------------------------------------------------


@dataclass
class Completion:
    text: str | None
    error: str | None = None
    attempts: int = 1


class OpenAIClient:
    """Chat completions over HTTP (urllib: no extra dependency). Thread-safe: one request per call."""

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, timeout: float = 60.0,
                 max_retries: int = 4, backoff: float = 1.0, max_tokens: int = 512, prefill: bool = True,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.url = base_url.rstrip("/") + ("/chat/completions" if base_url.rstrip("/").endswith("/v1")
                                           else "/v1/chat/completions")
        self.model, self.api_key, self.timeout = model, api_key, timeout
        self.max_retries, self.backoff, self.max_tokens, self.prefill = max_retries, backoff, max_tokens, prefill
        self.sleep = sleep

    def body(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": messages, "temperature": 0,
                                "max_tokens": self.max_tokens}
        if self.prefill:  # vLLM: continue the assistant prefix instead of starting a new turn
            body |= {"continue_final_message": True, "add_generation_prompt": False}
        return body

    def complete(self, messages: list[dict[str, str]]) -> Completion:
        data = json.dumps(self.body(messages)).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = ""
        for attempt in range(1, self.max_retries + 2):
            try:
                request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = json.loads(response.read())
                return Completion(payload["choices"][0]["message"]["content"], None, attempt)
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}: {exc.read()[:300].decode(errors='replace')}"
                if exc.code != 429 and exc.code < 500:
                    return Completion(None, last, attempt)  # a client error does not get better by retrying
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            except (KeyError, IndexError, ValueError) as exc:
                return Completion(None, f"malformed response: {exc}", attempt)
            if attempt <= self.max_retries:
                self.sleep(self.backoff * 2 ** (attempt - 1) * (1 + 0.1 * random.random()))
        return Completion(None, f"failed after {self.max_retries + 1} attempts: {last}", self.max_retries + 1)

    def complete_many(self, requests: Sequence[list[dict[str, str]]], concurrency: int = 8) -> list[Completion]:
        if not requests:
            return []
        with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(requests)))) as pool:
            return list(pool.map(self.complete, requests))


def load_generation_lm(model: str, device: str = "auto") -> tuple[Any, Any, str]:
    """(tokenizer, causal LM, device) for batched greedy generation: left padding (the new tokens follow
    every prompt directly), a pad token where the tokenizer has none, bf16 on CUDA."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from core.tags.taggers.reward_models import pick_device

    device = pick_device(device)
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    return tokenizer, AutoModelForCausalLM.from_pretrained(model, dtype=dtype).to(device).eval(), device


class LocalGenerator:
    """Greedy generation with a local transformers causal LM (any name or path), batched, left-padded,
    the chat template applied where the tokenizer has one, the answer prefilled with "{"."""

    prefill = True

    def __init__(self, model: str, *, device: str = "auto", batch_size: int = 8, max_new_tokens: int = 256) -> None:
        self.model_name = model
        self.tokenizer, self.lm, self.device = load_generation_lm(model, device)
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens

    def render(self, messages: list[dict[str, str]]) -> str:
        """Prompt text ending with the assistant prefix "{"."""
        turns = [m for m in messages if not (m["role"] == "assistant" and m["content"] == PREFILL)]
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        else:
            text = "".join(f"{m['role']}: {m['content']}\n" for m in turns) + "assistant: "
        return text + PREFILL

    def complete_many(self, requests: Sequence[list[dict[str, str]]], concurrency: int = 1) -> list[Completion]:
        import torch

        out: list[Completion] = []
        for start in range(0, len(requests), self.batch_size):
            prompts = [self.render(m) for m in requests[start:start + self.batch_size]]
            enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
            try:
                with torch.no_grad():
                    gen = self.lm.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False,
                                           pad_token_id=self.tokenizer.pad_token_id)
            except Exception as exc:  # noqa: BLE001 - recorded per sample, the job goes on
                out += [Completion(None, f"generation failed: {type(exc).__name__}: {exc}")] * len(prompts)
                continue
            new = gen[:, enc["input_ids"].shape[1]:]
            out += [Completion(t) for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
        return out


# ---- the tagger -----------------------------------------------------------------------------------


class JudgeTagger(Tagger):
    """One request per (sample, prompt needed for the wanted tags)."""

    def __init__(self, client: OpenAIClient | LocalGenerator, tags: Sequence[str], *, concurrency: int = 8,
                 label: str = "") -> None:
        self.client, self.concurrency = client, concurrency
        self.tags = [t for t in tags if t in PROMPT_OF_TAG]
        self.prompts = [p for p in FIELDS if any(PROMPT_OF_TAG[t] == p for t in self.tags)]
        self.method = f"LLM judge {label} (prompt {PROMPT_VERSION})"
        self.counts: dict[str, int] = {}

    def methods(self) -> dict[str, str]:
        """Per tag: the judge, and what it follows. Safety is the judge's reading of Llama Guard 2's
        taxonomy, not a Llama Guard model (name one as the safety model for that)."""
        out = {}
        for t in self.tags:
            if t in ("safety", "hazards"):
                out[t] = (f"{self.method}, asked with Llama Guard 2's S1-S11 taxonomy [a judge using Llama Guard 2's "
                          "categories, not a Llama Guard model]")
            else:
                out[t] = f"{self.method} [Magpie (Xu et al., 2024) fields; prompts written for this project]"
        return out

    def tag(self, batch: pd.DataFrame) -> list[dict[str, Any]]:
        jobs = [(r.sample_id, p) for r in batch.itertuples() for p in self.prompts]
        by_id = {r.sample_id: r for r in batch.itertuples()}
        requests = [build_messages(p, by_id[sid], self.client.prefill) for sid, p in jobs]
        answers = self.client.complete_many(requests, self.concurrency)
        rows = []
        for (sid, prompt), ans in zip(jobs, answers, strict=True):
            rows += rows_from_answer(sid, prompt, self.tags, ans.text, ans.error, self.method, self.client.prefill)
        for r in rows:
            self.counts[r["status"]] = self.counts.get(r["status"], 0) + 1
        return rows

    def prepare(self, store: Any, ids: Sequence[int], progress: Any = None) -> dict[str, Any]:
        note = ("not measured against labels here: compare with hand labels on the Tags page, or with another "
                "run (agreement table)")
        methods = self.methods()
        return {t: {"method": methods[t], "accuracy": None, "measured_on": note} for t in self.tags}
