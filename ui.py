"""Streamlit helpers shared by the pages (UI only: the logic stays in core/).

Data as text. Dataset text, names, ids, metadata values and labels come from files anyone may have
written, so they are never given to an element that interprets markdown (st.markdown, st.caption,
st.title, alerts, widget labels: after a blank line, text becomes bold, links and images (fetched from
the named host), colours, LaTeX). The helpers below are the only ways the pages show such values:
`text`/`st.text`/`st.code` for plain text, `md_text` to embed a value in a markdown string as literal
characters, `marked_html` (via st.html, which interprets no markdown) for highlights and diffs built
only from html.escape'd text in fixed tags.

Errors. Every page runs its main under `guard()`: a UserError or StoreError shows its message as a
sentence; anything else shows a short message with a reference, and the traceback goes to the server
log only (the server also sets client.showErrorDetails = "none", for errors raised outside a guard).
"""

from __future__ import annotations

import html
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import streamlit as st

from core.errors import UserError
from core.store.database import Store, StoreError, default_db_path

EMPTY_STORE = ("The store has no datasets yet. Load one with the upload form on the home page, or from a terminal "
               "with `assay ingest PATH --name NAME` (or `assay demo` for the demo datasets).")

# Every ASCII punctuation character may be backslash-escaped in CommonMark, and an escaped one is always
# a literal: no emphasis, link, image, HTML tag, entity, autolink (":", "/", ".", "@" are escaped too),
# math ($), colour or icon directive (":" and "["), heading, list or table marker.
_MD_SPECIAL = re.compile(r"([!-/:-@\[-`{-~])")

_LOG = logging.getLogger("assay.pages")
if not _LOG.handlers:  # Streamlit configures its own loggers only; ours goes to the server's stderr
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    _LOG.addHandler(_handler)
    _LOG.setLevel(logging.INFO)
    _LOG.propagate = False


# GitHub's autolink literals (http://, www., user@host) are found in the text after escapes are resolved,
# so escaping cannot stop them: an invisible word joiner (U+2060) before the ':', '.' or '@' breaks the
# pattern and changes nothing a reader sees.
_AUTOLINK = re.compile(r"(?i)(?<=https)(?=:)|(?<=http)(?=:)|(?<=www)(?=\.)|(?=@)")


def md_text(value: Any) -> str:
    """`value` as a markdown string that renders exactly its characters (for alerts, captions, labels)."""
    text = _MD_SPECIAL.sub(r"\\\1", _AUTOLINK.sub("\u2060", str(value)))
    # A line break inside an alert or caption is kept as a line break, never as a paragraph or block.
    return "  \n".join(line.strip() for line in text.splitlines()) if "\n" in text else text


def error(message: Any) -> None:
    st.error(md_text(message))


def warning(message: Any) -> None:
    st.warning(md_text(message))


def info(message: Any) -> None:
    st.info(md_text(message))


def success(message: Any) -> None:
    st.success(md_text(message))


def caption(message: Any, where: Any = st) -> None:
    """A caption (small grey text) whose every character is literal; `where` may be a column or container."""
    where.caption(md_text(message))


def marked_html(pieces: str, where: Any = st) -> None:
    """Show HTML that was built only from html.escape'd data inside fixed tags (a diff, a highlight).

    st.html interprets no markdown and runs no script; the fixed tags carry the colours."""
    where.html(pieces)


# Plotly draws text through its own small HTML subset (<b>, <i>, <a href>, <span style>, entities): data
# shown in a chart (category names, legend names, hover text, titles) is escaped first. Plotly decodes
# &lt; &gt; &amp; back to the characters, so the text reads as typed.
_TRACE_TEXT = ("name", "x", "y", "text", "hovertext", "labels", "parents", "ids", "customdata")


def _plotly_escape(value: Any) -> Any:
    if isinstance(value, str):
        return html.escape(value, quote=False)
    if isinstance(value, (list, tuple)):
        return type(value)(_plotly_escape(v) for v in value)
    if hasattr(value, "dtype") and getattr(value.dtype, "kind", "") in ("O", "U"):
        return [_plotly_escape(v) for v in value.tolist()]
    return value


def safe_figure(fig: Any) -> Any:
    """The plotly figure with every data string (trace text, categories, names, title) escaped."""
    for trace in fig.data:
        for attr in _TRACE_TEXT:
            if attr in trace and trace[attr] is not None:
                trace[attr] = _plotly_escape(trace[attr])
    title = fig.layout.title.text
    if title:
        fig.layout.title.text = html.escape(title, quote=False)
    return fig


def chart(fig: Any, where: Any = st, **kwargs: Any) -> Any:
    """st.plotly_chart of a figure whose data strings are shown as text (see safe_figure)."""
    return where.plotly_chart(safe_figure(fig), **kwargs)


def open_store() -> tuple[Store, list[str]]:
    """The workbench's store and its dataset names. Stops the page with a clear message where the store
    cannot be opened (busy, or from a newer Assay) or holds no dataset yet."""
    store = Store(default_db_path())
    try:
        names = store.dataset_names()
    except StoreError as exc:
        error(exc)
        st.stop()
    if not names:
        st.info(EMPTY_STORE)
        st.stop()
    return store, names


BUG_MESSAGE = ("Something went wrong on this page (a bug, not something you did). The details are in the "
               "workbench's server log under reference {ref}.")


@contextmanager
def guard() -> Iterator[None]:
    """Show what goes wrong in the block as a sentence, never as a traceback.

    st.stop() and st.rerun() pass through (they are BaseExceptions, not errors)."""
    try:
        yield
    except (UserError, StoreError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        error(message)
    except Exception:  # noqa: BLE001 - a bug: a reference for the user, the traceback for the log
        ref = uuid.uuid4().hex[:8]
        _LOG.exception("page error, reference %s", ref)
        error(BUG_MESSAGE.format(ref=ref))


def run_page(main: Callable[[], Any]) -> None:
    """Run a page's main under guard()."""
    with guard():
        main()
