"""The OpenAI-compatible LLM-judge path against a small chat-completions server started by the test.

The server answers by a keyword in the sample's request: GOOD (valid JSON), MALFORMED (broken JSON),
OOV (values outside Magpie's vocabulary), SLOW (first answer slower than the client's timeout), FLAKY
(HTTP 500 twice, then a good answer), DOWN (always 500), FENCED (valid JSON in a ```json fence).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

import core.tags.results as T
from core.ingest.importer import ingest_records
from core.store.database import Store
from core.tags.taggers import llm_judge
from core.tags.taggers.job import run_tagging

KEYS = ["GOOD", "MALFORMED", "OOV", "SLOW", "FLAKY", "DOWN", "FENCED"]

GOOD = {
    "category": '"primary_tag": "Math", "other_tags": ["Reasoning"]}',
    "difficulty": '"intent": "The user wants a sum.", "knowledge": "Arithmetic.", "difficulty": "easy"}',
    "input_quality": '"explanation": "Clear and specific.", "input_quality": "good"}',
    "safety": '"safety": "unsafe", "hazards": ["S2", "S9"]}',
}
OOV = {
    "category": '"primary_tag": "Mathematics", "other_tags": []}',
    "difficulty": '"intent": "x", "knowledge": "y", "difficulty": "trivial"}',
    "input_quality": '"explanation": "meh", "input_quality": "superb"}',
    "safety": '"safety": "maybe", "hazards": ["S42"]}',
}


def _prompt_kind(text: str) -> str:
    if "label the task type" in text:
        return "category"
    if "assess how hard" in text:
        return "difficulty"
    if "rate the quality" in text:
        return "input_quality"
    return "safety"


class ChatServer:
    """Speaks just enough of /v1/chat/completions; records every request body."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.hits: Counter[tuple[str, str]] = Counter()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/chat/completions":
                    self.send_error(404)
                    return
                status, content, delay = server.answer(body)
                time.sleep(delay)
                payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}
                                     if status == 200 else {"error": "boom"}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and went away: as a real server would see it

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def answer(self, body: dict) -> tuple[int, str, float]:
        text = body["messages"][0]["content"]
        kind = _prompt_kind(text)
        key = next(k for k in KEYS if f"{k} request" in text)
        with self.lock:
            self.requests.append(body)
            self.hits[(key, kind)] += 1
            n = self.hits[(key, kind)]
        if key == "MALFORMED" and kind == "category":
            return 200, '"primary_tag": "Math", "other_tags": [', 0.0
        if key == "OOV":
            return 200, OOV[kind], 0.0
        if key == "SLOW" and n == 1:
            return 200, GOOD[kind], 1.5  # longer than the client's timeout: retried
        if key == "FLAKY" and n <= 2:
            return 500, "", 0.0
        if key == "DOWN":
            return 500, "", 0.0
        if key == "FENCED":
            return 200, "```json\n{" + GOOD[kind] + "\n```", 0.0
        return 200, GOOD[kind], 0.0

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[ChatServer]:
    srv = ChatServer()
    yield srv
    srv.close()


@pytest.fixture
def judged(store: Store) -> Store:
    records = [{"instruction": f"{k} request: what is 17 + 25?", "output": "42"} for k in KEYS]
    ingest_records(store, records, name="judge-me", shape="alpaca", license="MIT")
    return store


def _by_key(store: Store, run_id: int) -> dict[str, dict[str, dict]]:
    rows = store.query_df("SELECT t.*, s.text FROM tags t JOIN samples s ON s.id = t.sample_id WHERE run_id = ?", [run_id])
    out: dict[str, dict[str, dict]] = {}
    for r in rows.to_dict("records"):
        key = next(k for k in KEYS if f"{k} request" in r["text"])
        out.setdefault(key, {})[r["tag"]] = r
    return out


def test_openai_judge_records_every_outcome_as_such(judged: Store, server: ChatServer) -> None:
    report = run_tagging(judged, dataset="judge-me", tags="category,difficulty,input_quality,safety", backend="openai",
                         model="judge-model", base_url=server.url, timeout=0.5, max_retries=3, backoff=0.05,
                         concurrency=4)
    got = _by_key(judged, report.run_id)

    good = got["GOOD"]
    assert good["category"]["value"] == "Math" and good["category"]["status"] == "ok"
    assert json.loads(good["other_categories"]["value"]) == ["Reasoning"]
    assert good["difficulty"]["value"] == "easy" and good["intent"]["value"] == "The user wants a sum."
    assert good["input_quality"]["value"] == "good" and good["input_quality"]["detail"] == "Clear and specific."
    assert good["safety"]["value"] == "unsafe" and good["hazards"]["value"] == "S2,S9"
    assert "judge-model" in good["category"]["method"]

    for tag in ("category", "other_categories"):
        assert got["MALFORMED"][tag]["status"] == "parse_error" and pd.isna(got["MALFORMED"][tag]["value"])
        assert "not JSON" in got["MALFORMED"][tag]["detail"]
    assert got["MALFORMED"]["difficulty"]["status"] == "ok"  # other prompts of that sample answered fine

    oov = got["OOV"]
    for tag, raw in [("category", "Mathematics"), ("difficulty", "trivial"), ("input_quality", "superb"),
                     ("safety", "maybe")]:
        assert oov[tag]["status"] == "out_of_vocabulary" and pd.isna(oov[tag]["value"]) and raw in oov[tag]["detail"]
    assert oov["hazards"]["status"] == "out_of_vocabulary"
    assert oov["intent"]["status"] == "ok"  # free text has no vocabulary

    assert got["SLOW"]["category"]["value"] == "Math"  # timed out once, retried, succeeded
    assert server.hits[("SLOW", "category")] == 2
    assert got["FLAKY"]["difficulty"]["value"] == "easy"
    assert server.hits[("FLAKY", "difficulty")] == 3
    down = got["DOWN"]["category"]
    assert down["status"] == "request_error" and pd.isna(down["value"]) and "HTTP 500" in down["detail"]
    assert server.hits[("DOWN", "category")] == 4  # first try + 3 retries
    assert got["FENCED"]["category"]["value"] == "Math"

    body = server.requests[0]
    assert body["temperature"] == 0 and body["model"] == "judge-model"
    assert body["messages"][-1] == {"role": "assistant", "content": "{"}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False

    cur = T.current_tags(judged, "judge-me")
    assert cur["category"].notna().sum() == 4  # GOOD, SLOW, FLAKY, FENCED: nothing else reads as a value
    params = judged.query_df("SELECT params FROM runs WHERE run_id = ?", [report.run_id])["params"][0]
    params = json.loads(params)
    assert params["prompt_version"] == llm_judge.PROMPT_VERSION and params["base_url"] == server.url
    assert "api_key" not in params


def test_parse_answer_is_strict() -> None:
    assert llm_judge.parse_answer('"a": 1}')[0] == {"a": 1}
    assert llm_judge.parse_answer('{"a": 1}')[0] == {"a": 1}  # server ignored the prefix and restarted
    assert llm_judge.parse_answer('"a": 1} and then some prose')[0] is None
    assert llm_judge.parse_answer('"a": 1', prefilled=True)[0] is None
    assert llm_judge.parse_answer("[1, 2]", prefilled=False)[0] is None
    assert llm_judge.parse_answer(None)[1] == "no answer"


def test_no_prefill_and_client_errors_are_not_retried(judged: Store, server: ChatServer) -> None:
    client = llm_judge.OpenAIClient(server.url, "m", prefill=False, timeout=2, max_retries=2, sleep=lambda s: None)
    assert "continue_final_message" not in client.body([{"role": "user", "content": "x"}])
    bad = llm_judge.OpenAIClient(server.url.replace("/v1", "/nope"), "m", max_retries=3, sleep=lambda s: None)
    result = bad.complete([{"role": "user", "content": "GOOD request"}])
    assert result.text is None and result.attempts == 1 and "HTTP 404" in result.error
