"""Hostile-input benchmark (issue 14): what a bad input costs before it is refused.

    python -m bench.hostile_input [--line-mb 1024]

Each case runs in its own process so that its peak memory is its own: a file holding one huge line, a
1 MB .gz and a .zst that inflate to one huge line, a YAML alias bomb; and, for scale, the line reader's
speed on ordinary JSON Lines. Writes bench/results/hostile_input.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import zlib
from pathlib import Path

from bench.common import peak_rss_mb, run_isolated, write_results

MB = 1 << 20


def _write_one_line(path: Path, mb: int) -> None:
    piece = b"a" * MB
    with open(path, "wb") as fh:
        fh.write(b'{"question": "')
        for _ in range(mb):
            fh.write(piece)
        fh.write(b'", "answer": "a"}\n')


def _write_gz_one_line(path: Path, mb: int) -> None:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    piece = b"a" * MB
    with open(path, "wb") as fh:
        fh.write(packer.compress(b'{"question": "'))
        for _ in range(mb):
            fh.write(packer.compress(piece))
        fh.write(packer.compress(b'", "answer": "a"}\n') + packer.flush())


def _write_zst_one_line(path: Path, mb: int) -> None:
    import zstandard

    with open(path, "wb") as fh, zstandard.ZstdCompressor(level=19).stream_writer(fh) as out:
        out.write(b'{"question": "')
        piece = b"a" * MB
        for _ in range(mb):
            out.write(piece)
        out.write(b'", "answer": "a"}\n')


def _ingest_case(path: str) -> dict:
    from core.ingest.importer import IngestError, ingest
    from core.store.database import Store

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "b.duckdb")
        store.dataset_names()
        base = peak_rss_mb()
        t0 = time.perf_counter()
        try:
            ingest(store, path, name="bench")
            outcome = "loaded"
        except IngestError as exc:
            outcome = str(exc)[:120]
        seconds = time.perf_counter() - t0
    return {"seconds": round(seconds, 2), "peak_mb": round(peak_rss_mb()), "peak_mb_before": round(base),
            "file_mb": round(Path(path).stat().st_size / MB, 2), "outcome": outcome}


def _yaml_case() -> dict:
    from core.mixture.recipe import RecipeError, load_recipe

    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    text = "\n".join(lines) + "\nname: *a8\n"
    t0 = time.perf_counter()
    try:
        load_recipe(text)
        outcome = "loaded"
    except RecipeError as exc:
        outcome = str(exc)
    return {"bytes": len(text), "seconds": round(time.perf_counter() - t0, 4), "peak_mb": round(peak_rss_mb()),
            "outcome": outcome}


def _lines_case(mb: int) -> dict:
    import core.ingest.readers as readers

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lines.jsonl"
        line = json.dumps({"question": "How many eggs? " * 8, "answer": "Sixteen. " * 12}).encode() + b"\n"
        with open(path, "wb") as fh:
            fh.write(line * (mb * MB // len(line)))
        t0 = time.perf_counter()
        n = 0
        with open(path, "rb") as fh:
            for lines in readers.line_batches(fh, path):
                n += len(lines)
        seconds = time.perf_counter() - t0
    return {"lines": n, "seconds": round(seconds, 2), "mb_per_s": round(mb / seconds)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--line-mb", type=int, default=1024, help="size of the one huge line")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case == "ingest":
        print(json.dumps(_ingest_case(args.path)))
        return
    if args.case == "yaml":
        print(json.dumps(_yaml_case()))
        return
    if args.case == "lines":
        print(json.dumps(_lines_case(args.line_mb)))
        return
    results: dict = {"line_mb": args.line_mb}
    with tempfile.TemporaryDirectory() as tmp:
        for name, write in (("one_line.jsonl", _write_one_line), ("one_line.jsonl.gz", _write_gz_one_line),
                            ("one_line.jsonl.zst", _write_zst_one_line)):
            path = Path(tmp) / name
            write(path, args.line_mb)
            results[name] = run_isolated("bench.hostile_input", "--case", "ingest", "--path", str(path))
            path.unlink()
            print(name, results[name], file=sys.stderr)
    results["yaml_alias_bomb"] = run_isolated("bench.hostile_input", "--case", "yaml")
    results["ordinary_lines_200mb"] = run_isolated("bench.hostile_input", "--case", "lines", "--line-mb", "200")
    print(json.dumps(results, indent=2))
    write_results("hostile_input", results)


if __name__ == "__main__":
    main()
