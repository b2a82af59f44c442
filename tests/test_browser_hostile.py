"""Hostile data in a real Chromium: text stays text on every page, and the server bounds uploads itself."""

from __future__ import annotations

import http.client
import json
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import core.contamination.check as contamination
import core.dedup.groups as dedup
import core.labels.labelling as L
from core.ingest.importer import ingest_records
from core.store.database import Store
from tests.browser_support import ARTIFACTS, FLAGGED_HEADING, wait_idle

EVIL = "evil.example"
# Markdown, LaTeX, colour directives, HTML and autolinks, after a blank line (where markdown starts a block).
HOSTILE = ("\n\n**BOLDTOKEN** __UNDERTOKEN__ [LINKTOKEN](http://evil.example/link) "
           "![IMGTOKEN](http://evil.example/x.png) $x^2$ $$y_1$$ :red[REDTOKEN] :material/warning: "
           "<b>HTMLBOLD</b> <img src=http://evil.example/y.png> <a href=http://evil.example/a>HTMLLINK</a> "
           "http://evil.example/auto www.evil.example mail@evil.example &lt;b&gt;")
SOURCE_ID = "src **SRCBOLD** [SRCLINK](http://evil.example/src) :red[SRCRED]"
EVAL_NAME = "zz-eval **NAMEBOLD** <b>NAMEHTML</b> <a href='http://evil.example/n'>NAMELINK</a> :red[NAMERED] $z$"
TOKENS = ["BOLDTOKEN", "UNDERTOKEN", "LINKTOKEN", "IMGTOKEN", "REDTOKEN", "HTMLBOLD", "HTMLLINK", "SRCBOLD",
          "SRCLINK", "SRCRED", "NAMEBOLD", "NAMEHTML", "NAMELINK", "NAMERED"]
SCHEMA = {"name": "quality", "fields": [{"name": "ok", "type": "single_choice", "options": ["yes", "no"]}]}

# Every element made from data that would show markup at work: links and images (anywhere, SVG too),
# bold, italic, coloured spans, LaTeX; plotly's bold is a styled tspan.
_FINDINGS = """([tokens, evil]) => {
  const out = [];
  const hasToken = (el) => tokens.some((t) => (el.textContent || "").includes(t));
  for (const el of document.querySelectorAll("a, img, image")) {
    const ref = el.getAttribute("href") || el.getAttribute("xlink:href") || el.getAttribute("src") || "";
    if (ref.includes(evil) || hasToken(el) || tokens.some((t) => (el.getAttribute("alt") || "").includes(t)))
      out.push(el.tagName + " " + ref + " " + el.textContent);
  }
  for (const el of document.querySelectorAll("b, strong, em, i, u, h1, h2, h3, h4, h5, h6, span[style*=color], "
                                             + "font, tspan[style*=bold]")) {
    if (hasToken(el)) out.push(el.tagName + " " + (el.getAttribute("style") || "") + " " + el.textContent);
  }
  for (const el of document.querySelectorAll(".katex, math, mjx-container")) out.push("LaTeX " + el.textContent);
  return out;
}"""


def _findings(page) -> list[str]:
    return page.evaluate(_FINDINGS, [TOKENS, EVIL])


@pytest.fixture
def hostile_store(tmp_path: Path, shared: Path) -> Store:
    """A GSM8K slice with one hostile sample first, a near copy of it, and an eval set (hostile name) that
    holds the same problem: one duplicate group and one contamination flag, both on hostile text."""
    with (shared / "gsm8k" / "train.jsonl").open() as fh:
        train = [json.loads(line) for _, line in zip(range(20), fh, strict=False)]
    with (shared / "gsm8k" / "test.jsonl").open() as fh:
        test = [json.loads(line) for _, line in zip(range(10), fh, strict=False)]
    problem = test[5]["question"] + HOSTILE
    records = [{"id": SOURCE_ID, "question": "Please solve: " + problem, "answer": test[5]["answer"] + HOSTILE,
                "topic": "**METABOLD** [METALINK](http://evil.example/m)"},
               {"question": problem + " Thanks.", "answer": test[5]["answer"] + HOSTILE}]
    records += [{"question": r["question"], "answer": r["answer"]} for r in train]
    store = Store(tmp_path / "hostile.duckdb", busy_timeout=30)
    ingest_records(store, records, name="train-hostile", shape="qa")
    ingest_records(store, [{"question": r["question"] + (HOSTILE if i == 5 else ""), "answer": r["answer"]}
                           for i, r in enumerate(test)], name="zz-eval", shape="qa", is_eval=True)
    dedup.find_duplicates(store, ["train-hostile"], method="near", threshold=0.6)
    contamination.check_contamination(store, "train-hostile", methods=["ngram13", "ngram8"])
    L.save_schema(store, L.parse_schema(SCHEMA))
    with store.connect() as con:  # a store written before names had a rule may hold any name
        con.execute("UPDATE datasets SET name = ? WHERE name = 'zz-eval'", [EVAL_NAME])
    return store


@pytest.mark.browser
def test_hostile_text_renders_as_text_and_fetches_nothing(hostile_store: Store, workbench, browser_page) -> None:
    url = workbench(hostile_store.path)
    page = browser_page
    page.set_viewport_size({"width": 1400, "height": 2400})
    page.set_default_timeout(90_000)  # four pages of a loaded 2-core machine
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    hostile_id = int(hostile_store.query_df("SELECT min(id) AS id FROM samples").id[0])
    seen: dict[str, list[str]] = {}

    page.goto(url + "/Datasets?dataset=train-hostile")
    page.get_by_text("rows 1–").first.wait_for(timeout=60_000)
    page.get_by_label("Open sample by id").fill(str(hostile_id))
    page.keyboard.press("Enter")
    page.get_by_text("**BOLDTOKEN**").first.wait_for()  # shown, literally
    wait_idle(page)
    seen["datasets"] = _findings(page)
    page.screenshot(path=str(ARTIFACTS / "hostile-datasets.png"), full_page=True)

    page.goto(url + "/Duplicates")
    page.get_by_text("Compare the representative with").first.wait_for(timeout=60_000)
    page.locator("del, ins").first.wait_for()
    page.get_by_text("[LINKTOKEN](http://evil.example/link)").first.wait_for()
    wait_idle(page)
    seen["duplicates"] = _findings(page)
    page.screenshot(path=str(ARTIFACTS / "hostile-duplicates.png"), full_page=True)

    page.goto(url + "/Contamination")
    page.get_by_text(FLAGGED_HEADING).first.wait_for(timeout=60_000)
    page.locator("mark").first.wait_for()
    page.locator(".js-plotly-plot").first.wait_for()
    page.locator("mark", has_text="**BOLDTOKEN**").first.wait_for()  # the overlap, highlighted as text
    wait_idle(page)
    page.wait_for_timeout(1000)  # plotly draws its tick labels after the element appears
    page.locator(".js-plotly-plot text", has_text="<b>NAMEHTML</b>").first.wait_for()  # the tick label, as typed
    seen["contamination"] = _findings(page)
    page.screenshot(path=str(ARTIFACTS / "hostile-contamination.png"), full_page=True)

    page.goto(url + "/Label")
    page.get_by_label("Your name").fill("kim")
    page.get_by_role("button", name="Start labelling").click()
    page.get_by_text("Progress (kim)").first.wait_for(timeout=60_000)
    page.get_by_text("SRCBOLD").first.wait_for()  # the caption names the source id ...
    page.get_by_text("**BOLDTOKEN**").first.wait_for()
    wait_idle(page)
    seen["label"] = _findings(page)
    page.screenshot(path=str(ARTIFACTS / "hostile-label.png"), full_page=True)

    assert seen == {"datasets": [], "duplicates": [], "contamination": [], "label": []}, json.dumps(seen)[:4000]
    assert [u for u in requests if EVIL in u] == []
    assert page.dialogs == []


# ---- the upload bound, enforced by the server ------------------------------------------------------


def _multipart(payload: bytes, boundary: str) -> bytes:
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jsonl\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + payload + f"\r\n--{boundary}--\r\n".encode()


def _put(url: str, path: str, body: bytes, headers: dict[str, str], *, chunked: bool = False) -> int | None:
    """PUT straight to the server (no browser); the status, or None where the server cut the connection."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        if chunked:  # no Content-Length at all: the server must count while it reads
            conn.request("PUT", path, body=iter([body[i:i + 65536] for i in range(0, len(body), 65536)]),
                         headers=headers, encode_chunked=True)
        else:
            conn.request("PUT", path, body=body, headers=headers)
        return conn.getresponse().status
    except (BrokenPipeError, ConnectionResetError):
        try:
            return conn.getresponse().status
        except (OSError, http.client.HTTPException):
            return None
    finally:
        conn.close()


@pytest.mark.browser
def test_server_refuses_an_oversized_upload_sent_past_the_browser(store: Store, workbench, browser_page,
                                                                  tmp_path: Path) -> None:
    url = workbench(store.path, flags=("--server.maxUploadSize", "1"))  # 1 MB for this server only
    page = browser_page
    page.goto(url)
    page.get_by_text("This store is empty").wait_for(timeout=60_000)
    tiny = tmp_path / "tiny.jsonl"
    tiny.write_text('{"text": "hello"}\n')
    with page.expect_request(lambda r: "/_stcore/upload_file/" in r.url, timeout=60_000) as sent:
        page.locator("input[type=file]").first.set_input_files(str(tiny))  # a real session, a real upload URL
    assert sent.value.method == "PUT"
    session_path = urlsplit(sent.value.url).path.rsplit("/", 1)[0]
    xsrf = next(c["value"] for c in page.context.cookies() if c["name"] == "_streamlit_xsrf")
    boundary = uuid.uuid4().hex
    headers = {"Cookie": f"_streamlit_xsrf={xsrf}", "X-Xsrftoken": xsrf,
               "Content-Type": f"multipart/form-data; boundary={boundary}"}
    small = _multipart(b'{"text": "ok"}\n' * 100, boundary)
    big = _multipart((b'{"text": "' + b"x" * 1000 + b'"}\n') * 3000, boundary)  # about 3 MB, 3x the bound
    assert len(big) > 2 * 1024 * 1024 + 500_000  # past the bound and Streamlit's 1 MB margin for multipart framing

    assert _put(url, f"{session_path}/{uuid.uuid4()}", small, headers) == 204  # the request is well formed
    no_token = {k: v for k, v in headers.items() if k != "X-Xsrftoken"}
    assert _put(url, f"{session_path}/{uuid.uuid4()}", big, no_token) == 403  # XSRF is checked first
    assert _put(url, f"{session_path}/{uuid.uuid4()}", big, headers) == 413  # the declared size is refused
    assert _put(url, f"{session_path}/{uuid.uuid4()}", big, headers, chunked=True) in (413, None)  # so is a stream
    assert store.dataset_names() == []  # nothing reached the store
    page.goto(url)
    page.get_by_text("This store is empty").wait_for()  # and the server still serves
