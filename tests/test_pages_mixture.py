"""The mixture page through AppTest: compose with widgets, see the YAML, preview, export, download."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.ingest.demo import load_demo
from core.store.database import Store

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "8_Mixture.py")


@pytest.fixture
def app(store: Store, shared: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    load_demo(store, shared, names=["gsm8k-train", "alpaca-gpt4-demo-1k"])
    monkeypatch.setenv("ASSAY_DB", str(store.path))
    return AppTest.from_file(PAGE, default_timeout=120)


def test_compose_preview_yaml_export(app: AppTest) -> None:
    at = app.run()
    assert not at.exception and "Pick one or more sources" in at.info[0].value
    at.multiselect(key="mix_datasets").set_value(["gsm8k-train", "alpaca-gpt4-demo-1k"]).run()
    at.selectbox(key="mix_mode_gsm8k-train").set_value("count").run()
    at.number_input(key="mix_amt_gsm8k-train").set_value(200).run()
    at.text_area(key="mix_filters_gsm8k-train").input("n_tokens le 300").run()
    at.selectbox(key="mix_mode_alpaca-gpt4-demo-1k").set_value("count").run()
    at.number_input(key="mix_amt_alpaca-gpt4-demo-1k").set_value(100).run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["samples"] == "300"
    yaml_box = next(t for t in at.text_area if t.label == "recipe (YAML)")
    assert "count: 200" in yaml_box.value and "n_tokens" in yaml_box.value
    texts = [t.value for t in at.text]
    assert any("gsm8k-train: count 200." in t for t in texts)  # the arithmetic
    assert any(t.startswith("#") for t in texts)  # examples of what the filter removes, as plain text
    codes = " ".join(w.value for w in at.warning) + " ".join(e.value for e in at.error)
    assert "non" in codes and "Synthetic data is 33" in codes.replace("\\", "")
    # Edit the YAML and apply it: the widgets follow.
    yaml_box.input(yaml_box.value.replace("count: 200", "count: 150")).run()
    at.button(key="mix_apply").click().run()
    assert at.number_input(key="mix_amt_gsm8k-train").value == 150
    assert {m.label: m.value for m in at.metric}["samples"] == "250"
    at.button(key="mix_export").click().run()
    assert not at.exception
    assert any("export run" in t.value for t in at.text)
    assert at.get("download_button")[0].proto.label == "Download zip"


def test_proportions_by_is_a_choice_and_an_unmet_target_is_said_once(app: AppTest) -> None:
    at = app.run()
    at.multiselect(key="mix_datasets").set_value(["gsm8k-train", "alpaca-gpt4-demo-1k"]).run()
    by = at.selectbox(key="mix_by")
    assert by.options[:2] == ["(nothing: no proportions)", "source"]  # the fields these sources have
    by.set_value("source").run()
    at.text_area(key="mix_props").input("gsm8k-train: 0.5\nalpaca-gpt4-demo-1k: 0.5").run()
    at.number_input(key="mix_total").set_value(5000).run()  # alpaca has 1,000: half of 5,000 cannot be met
    assert not at.exception, at.exception
    shown = [e.value for e in at.error] + [w.value for w in at.warning]
    plain = [m.replace("\\", "") for m in shown]  # messages are shown escaped: never markdown
    unmet = [m for m in plain if "alpaca-gpt4-demo-1k" in m and "2,500" in m]
    assert len(unmet) == 1, shown
    assert any("1 target cannot be met" in e.value for e in at.error)  # the Arithmetic tab points to it
