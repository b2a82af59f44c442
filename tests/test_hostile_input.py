"""Hostile and unlucky input (issue 14): every input costs bounded work and ends in a clear UserError.

YAML alias bombs, one huge line (plain and compressed), dataset names that look like paths, symlink loops
in a folder of shards, two loads racing for one name, truncated streams and stray NUL bytes.
"""

from __future__ import annotations

import gzip
import io
import re
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import orjson
import pytest
import zstandard

import core.ingest.readers as readers
from core.cli.main import main as cli_main
from core.errors import ConflictError, InputError, NameRuleError, UserError
from core.ingest.importer import DatasetExistsError, IngestError, check_dataset_name, ingest, ingest_records
from core.ingest.readers import FormatError, LineTooLongError, iter_batches
from core.labels.labelling import LabelError, load_schema_file, load_schema_text
from core.mixture.recipe import RecipeError, load_recipe
from core.store.database import Store

ROOT = Path(__file__).resolve().parent.parent
MB = 1 << 20


def _bomb(levels: int) -> str:
    """A "billion laughs" YAML document: 9**levels strings from a few hundred bytes."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    lines.append(f"name: *a{levels - 1}")
    return "\n".join(lines) + "\n"


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


QA = [{"id": f"r{i}", "question": f"question {i}", "answer": f"answer {i}"} for i in range(3)]


# ------------------------------------------------------------------------------------------- 1. YAML


def test_alias_bomb_is_refused_by_the_recipe_and_schema_loaders(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_bomb(6))  # 531,441 strings once expanded: accepted (and str()-ed) without the fix
    with pytest.raises(RecipeError, match=r"^bomb\.yaml line 1: YAML anchors and aliases .* not allowed"):
        load_recipe(bomb)
    with pytest.raises(RecipeError, match=r"^the YAML text line 1: YAML anchors and aliases"):
        load_recipe(bomb.read_text())
    with pytest.raises(LabelError, match=r"^bomb\.yaml line 1: YAML anchors and aliases"):
        load_schema_file(bomb)
    with pytest.raises(LabelError, match=r"^the YAML text line 1: YAML anchors"):
        load_schema_text(bomb.read_text())


def test_yaml_syntax_size_and_depth_errors_name_the_line(tmp_path: Path) -> None:
    broken = tmp_path / "schema.yaml"
    broken.write_text("name: quality\nfields:\n  - name: q\n    options: [good, bad\n")
    with pytest.raises(LabelError, match=r"^schema\.yaml line 5: not valid YAML \(expected ',' or ']'"):
        load_schema_file(broken)
    with pytest.raises(RecipeError, match=r"^the YAML text line 2: not valid YAML"):
        load_recipe("name: x\n\tsources: []\n")
    with pytest.raises(RecipeError, match=r"^the YAML text: is 1,200,001 characters long; expected at most"):
        load_recipe("#" * 1_200_000 + "\n")
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * 2_000_000)
    with pytest.raises(RecipeError, match=r"^big\.yaml: is over 1,000,000 bytes"):
        load_recipe(big)
    with pytest.raises(RecipeError, match=r"^the YAML text line 1: nested more than 64 levels"):
        load_recipe("[" * 50_000 + "\n")  # a RecursionError without the bound
    assert load_schema_text("name: q\ntype: single_choice\noptions: [good, bad]\n").fields[0].options == ("good", "bad")


def test_alias_bomb_on_the_command_line_is_one_line_and_exit_2(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_bomb(9))  # the real thing: gigabytes and a MemoryError after 30 s without the fix
    db = str(tmp_path / "s.duckdb")
    done = subprocess.run([sys.executable, "-m", "core.cli.main", "--db", db, "mix", str(bomb), "--out",
                           str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "bomb.yaml line 1: YAML anchors and aliases" in lines[0], done.stderr
    assert not (tmp_path / "out").exists()
    assert cli_main(["--db", db, "label-schema", "add", str(bomb)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "bomb.yaml line 1: YAML anchors and aliases" in lines[0], lines


# ------------------------------------------------------------------------------------- 2. long lines


def _one_huge_line(path: Path, size: int, *, before: int = 1) -> Path:
    """`before` ordinary JSON lines, then one line of `size` bytes, written in 1 MB pieces."""
    piece = b"a" * MB
    with open(path, "wb") as fh:
        for row in QA[:before]:
            fh.write(orjson.dumps(row) + b"\n")
        fh.write(b'{"question": "')
        for _ in range(size // MB):
            fh.write(piece)
        fh.write(b'", "answer": "a"}\n')
    return path


def test_a_200mb_line_is_refused_with_its_line_number(store: Store, tmp_path: Path) -> None:
    path = _one_huge_line(tmp_path / "big.jsonl", 200 * MB, before=2)
    limit = readers.line_limit(2_000_000)
    with pytest.raises(IngestError, match=rf"^big\.jsonl line 3: longer than {limit:,} bytes"):
        ingest(store, path, name="big")
    with pytest.raises(IngestError, match=r"^big\.jsonl line 3: longer than"):
        ingest(store, path, name="big", columnar=False, on_bad="skip")  # the file itself is refused
    with pytest.raises(LineTooLongError, match=r"^big\.jsonl line 3: longer than 1,048,576 bytes"):
        for _ in iter_batches(path, max_line_bytes=MB):
            pass
    assert store.dataset_names() == []


def test_a_small_compressed_file_that_inflates_to_one_huge_line(store: Store, tmp_path: Path) -> None:
    body = b'{"question": "' + b"x" * (96 * MB) + b'", "answer": "a"}\n'
    packer = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: a gzip container
    gz = tmp_path / "bomb.jsonl.gz"
    gz.write_bytes(packer.compress(body) + packer.flush())
    zst = tmp_path / "bomb.jsonl.zst"
    zst.write_bytes(zstandard.ZstdCompressor(level=1).compress(body))
    del body
    assert gz.stat().st_size < MB and zst.stat().st_size < MB
    for path in (gz, zst):
        with pytest.raises(IngestError, match=rf"^{path.name.replace('.', '[.]')} line 1: longer than"):
            ingest(store, path, name="bomb")
    # A line of 1,000 bytes is too long for a limit of 999, whichever way it is split into chunks.
    lines = [b"b" * 10, b"c" * 1000, b"d"]
    stream = gzip.GzipFile(fileobj=io.BytesIO(gzip.compress(b"\n".join(lines))))
    with pytest.raises(LineTooLongError, match=r"^x\.jsonl line 2: longer than 999 bytes"):
        list(readers.line_batches(stream, Path("x.jsonl"), max_line=999, chunk_size=7))


def test_line_batches_split_like_bytes_split_and_name_the_first_long_line() -> None:
    import random

    rng = random.Random(14)
    for _ in range(2000):
        data = bytes(rng.choice(b"ab\n") for _ in range(rng.randint(0, 60)))
        chunk, limit = rng.randint(1, 9), rng.randint(1, 12)
        expect = data.split(b"\n")
        if expect[-1] == b"":
            expect.pop()
        long = next((i + 1 for i, line in enumerate(expect) if len(line) > limit), None)
        where = (data, chunk, limit)
        try:
            got = [x for lines in readers.line_batches(io.BytesIO(data), Path("x"), max_line=limit, chunk_size=chunk)
                   for x in lines]
        except LineTooLongError as exc:
            assert long is not None and f"x line {long}: longer than" in str(exc), where
        else:
            assert long is None and got == expect, where


def test_a_long_line_after_many_short_ones_in_the_columnar_path(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "late.jsonl"
    rows = [{"question": f"q{i}", "answer": "a"} for i in range(500)]
    _jsonl(path, rows)
    with open(path, "ab") as fh:
        fh.write(b'{"question": "' + b"y" * (3 * MB) + b'", "answer": "a"}\n')
    with pytest.raises(IngestError, match=r"^late\.jsonl line 501: longer than 2,248,576 bytes"):
        ingest(store, path, name="late", max_chars=100_000)  # line_limit(100_000) = 2,248,576
    assert ingest(store, path, name="late", max_chars=4_000_000).n_samples == 501


def test_an_open_csv_quote_is_refused_once_the_record_passes_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "open.csv"
    path.write_text('question,answer\nq,"never closed\n' + "more text on another line\n" * 200)
    with pytest.raises(LineTooLongError, match=r"^open\.csv line 2: longer than 1,000 bytes"):
        list(iter_batches(path, max_line_bytes=1000))


# ---------------------------------------------------------------------------- 3. names are not paths


@pytest.mark.parametrize(("name", "why"), [
    ("", "needs a name"), ("   ", "needs a name"), ("x" * 201, "201 characters long"),
    ("a\x00b", "U+0000"), ("two\nlines", "U+000A"), ("\u202eevil.jsonl", "U+202E"), ("zero\u200bwidth", "U+200B"),
    (" padded", "starts or ends with a space"),
])
def test_dataset_name_rule(store: Store, name: str, why: str) -> None:
    with pytest.raises(NameRuleError, match=re.escape(why)):
        ingest_records(store, QA, name=name)
    assert store.dataset_names() == []


def test_printable_names_of_any_language_are_fine(store: Store) -> None:
    for name in ("数据集 · v2 (ünïcode) ✓", "../../../x", "x" * 200, "Ελληνικά/שלום"):
        assert check_dataset_name(name) == name
        ingest_records(store, QA, name=name)
    assert len(store.dataset_names()) == 4


def test_a_name_that_looks_like_a_path_never_becomes_one(store: Store, tmp_path: Path) -> None:
    from core.scale import MinHashStep, run_step
    from core.scale.engine import default_job_dir

    jobs = store.path.parent / "jobs"
    before = set(tmp_path.parent.iterdir())
    for name in ("../../../x", "y" * 200):
        ingest_records(store, [{"text": f"sample text number {i} for {name[:3]}"} for i in range(6)], name=name)
        folder = default_job_dir(store, MinHashStep(), name)
        assert folder.parent == jobs and len(folder.name) < 60
        report = run_step(MinHashStep(), store, name, engine="local", rows_per_shard=4)
        assert Path(report.job_dir).resolve().parent == jobs.resolve()
    assert set(tmp_path.parent.iterdir()) == before  # nothing written beside the test's folder
    assert sorted(p.name.split("-")[1] for p in jobs.iterdir()) == ["d1", "d2"]


def test_the_command_line_refuses_a_bad_name_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = _jsonl(tmp_path / "a.jsonl", QA)
    assert cli_main(["--db", str(tmp_path / "s.duckdb"), "ingest", str(path), "--name", "x" * 10_000]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "10,000 characters long; a dataset name is 1-200" in err[0]


# --------------------------------------------------------------------------------- 4. symlink loops


def test_a_symlink_loop_in_a_folder_of_shards_reads_each_file_once(store: Store, tmp_path: Path) -> None:
    folder = tmp_path / "shards"
    folder.mkdir()
    _jsonl(folder / "a.jsonl", QA[:2])
    _jsonl(folder / "b.jsonl", QA[2:])
    (folder / "loop").symlink_to(".", target_is_directory=True)  # shards/loop/a.jsonl is shards/a.jsonl
    (folder / "up").symlink_to("..", target_is_directory=True)
    (folder / "again.jsonl").symlink_to("a.jsonl")
    records = [r.record["id"] for batch in iter_batches(folder) for r in batch]
    assert records == ["r0", "r1", "r2"]
    assert ingest(store, folder, name="shards").n_samples == 3


# ------------------------------------------------------------------------------ 6. racing for a name


@pytest.mark.parametrize("columnar", [True, False])
def test_two_loads_racing_for_one_name(tmp_path: Path, columnar: bool) -> None:
    path = _jsonl(tmp_path / "race.jsonl", [{"question": f"q{i}", "answer": "a"} for i in range(2000)])
    db = tmp_path / "race.duckdb"
    Store(db).dataset_names()  # created and migrated once, before the race
    both_checked = threading.Barrier(2, timeout=60)
    outcomes: list[object] = []

    def load() -> None:
        waited = []

        def progress(done: int, total: int | None) -> None:
            if not waited:  # both loads have passed the name check before either imports
                waited.append(1)
                both_checked.wait()

        try:
            outcomes.append(ingest(Store(db, busy_timeout=60), path, name="race", columnar=columnar,
                                   progress=progress))
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            outcomes.append(exc)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    errors = [o for o in outcomes if isinstance(o, Exception)]
    assert len(outcomes) == 2 and len(errors) == 1, outcomes
    assert isinstance(errors[0], DatasetExistsError) and isinstance(errors[0], ConflictError)
    assert "A dataset named 'race' already exists" in str(errors[0])
    store = Store(db)
    assert store.dataset_names() == ["race"]
    assert store.query_df("SELECT count(*) AS n FROM samples")["n"][0] == 2000


# ------------------------------------------------------------------ 7. broken streams, clear errors


def _big_rows() -> list[dict]:
    return [{"question": f"question {i} " * (i % 5 + 1), "answer": f"answer {i}"} for i in range(8_000)]


@pytest.mark.parametrize("name", ["cut.jsonl.zst", "cut.jsonl.gz", "cut.json.zst", "cut.csv.gz"])
def test_truncated_streams_are_clear_errors_in_every_path(store: Store, tmp_path: Path, name: str) -> None:
    rows = _big_rows()
    if ".csv" in name:
        raw = b"question,answer\n" + b"".join(f'"{r["question"]}",{r["answer"]}\n'.encode() for r in rows)
    elif ".jsonl" in name:
        raw = b"".join(orjson.dumps(r) + b"\n" for r in rows)
    else:
        raw = orjson.dumps(rows)
    data = zstandard.ZstdCompressor().compress(raw) if name.endswith(".zst") else gzip.compress(raw)
    path = tmp_path / name
    path.write_bytes(data[: int(len(data) * 0.8)])  # the first lines read fine: the end is missing
    kind = "zstd" if name.endswith(".zst") else "gzip"
    with pytest.raises(IngestError, match=rf"^{name.replace('.', '[.]')}: {kind} stream is corrupt or truncated"):
        ingest(store, path, name="cut")
    assert store.dataset_names() == []


def test_cli_truncated_zst_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    raw = b"".join(orjson.dumps(r) + b"\n" for r in _big_rows())
    path = tmp_path / "cut.jsonl.zst"
    data = zstandard.ZstdCompressor().compress(raw)
    path.write_bytes(data[: len(data) - 100])
    assert cli_main(["--db", str(tmp_path / "s.duckdb"), "ingest", str(path), "--name", "cut"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("assay: error: cut.jsonl.zst: zstd stream is corrupt"), err


# ----------------------------------------------------------------------------------- 8. NUL bytes


def test_a_nul_byte_early_in_a_file_is_a_bad_line_not_a_binary_file(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "nul.jsonl"
    path.write_bytes(b'{"question": "q0", "answer": "a"}\n{"question": "q\x001", "answer": "a"}\n'
                     b'{"question": "q2", "answer": "a"}\n')
    with pytest.raises(IngestError, match=r"^nul\.jsonl line 2: not valid JSON \(unexpected control character"):
        ingest(store, path, name="nul")
    report = ingest(store, path, name="nul", on_bad="skip")
    assert (report.n_samples, [s["locator"] for s in report.skipped]) == (2, ["nul.jsonl line 2"])


def test_a_real_binary_file_is_still_refused_as_binary(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "tool.jsonl"
    path.write_bytes(Path(sys.executable).resolve().read_bytes()[:200_000])  # an ELF executable
    for on_bad in ("error", "skip"):
        with pytest.raises(IngestError, match=r"^tool\.jsonl: looks like binary data, not JSONL text"):
            ingest(store, path, name="tool", on_bad=on_bad)


def test_every_error_here_is_a_user_error() -> None:
    for cls in (FormatError, LineTooLongError, IngestError, DatasetExistsError, RecipeError, LabelError):
        assert issubclass(cls, UserError)
    assert issubclass(FormatError, InputError)
