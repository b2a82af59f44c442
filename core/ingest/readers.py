"""Streaming readers for every source format: raw records in batches, each with a locator.

A locator names where a record came from in words a user can act on ("train.jsonl line 17",
"data.parquet row 1234", "shards/part-002.csv line 9", "hub:gsm8k split train row 5"), so every error
further down the ingest can point at the file and the line.

Conventions:
- "line N" is 1-based, as in an editor (CSV: the header is line 1, a record is named by its first line).
  "row N" / "record N" is the 0-based index, as in ``df.iloc[N]``, ``dataset[N]`` or ``data[N]``.
- CSV values stay strings, exactly as in the file ("007" stays "007", an empty cell is ""); casting
  columns is left to the caller, who sees every row (DuckDB's TRY_CAST does it in one pass).
- JSON documents (.json) are parsed whole (JSON is not streamable without a second parser); JSON Lines,
  CSV, Parquet and Arrow stream in bounded memory. A .json file that actually holds JSON Lines is read
  as JSON Lines.
- ``on_error(locator, message)`` receives the problem without the locator prefix; per-record problems
  (a bad line, a ragged row, a non-object record) can be skipped that way. Problems with the file itself
  (wrong type, corrupt compression, empty file) always raise ``FormatError``.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import os
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson
import zstandard

from core.errors import InputError

FORMATS: tuple[str, ...] = ("jsonl", "json", "parquet", "csv", "arrow", "hub", "txt")

OnError = Callable[[str, str], None]

_CHUNK = 256 * 1024  # chunk + its split lines stay ~1 MB; larger chunks are no faster
# The longest line (or CSV record) read before the file is refused: reading stops there, so one huge line
# (or a small .gz that inflates to one) costs bounded time and memory. ingest passes line_limit(max_chars).
DEFAULT_MAX_LINE_BYTES = 64 * 1024 * 1024
_HEAD = 64 * 1024
_COMPRESSIONS = {".gz": "gzip", ".zst": "zstd"}
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet",
               ".csv": "csv", ".tsv": "csv", ".txt": "txt"}
_DECOMPRESS_ERRORS = (OSError, EOFError, zlib.error, zstandard.ZstdError)  # gzip raises the first three
_MAGIC = {"gzip": b"\x1f\x8b", "zstd": b"\x28\xb5\x2f\xfd"}
_EXPECTED = {
    "jsonl": "one JSON object per line",
    "json": "a JSON list of objects, or an object holding one list of objects",
    "csv": "CSV text with a header line",
    "parquet": "Parquet (magic PAR1)",
    "txt": "plain text, one document per line (or per paragraph)",
}
_NOT_TEXT = ("a Parquet file", "gzip-compressed data", "zstd-compressed data", "a zip archive",
             "an Arrow file", "binary data", "UTF-16 text")
# Bytes that never occur in text (C0 controls but tab, newlines, form feed, escape; and DEL): a file whose
# head is mostly these is binary; one such byte in a line is that line's problem, named and skippable.
_CONTROL = bytes([*range(0, 9), 11, *range(14, 27), *range(28, 32), 127])
_TEXT_BYTES = bytes(b for b in range(256) if b not in _CONTROL)
_SAVE_TO_DISK_FILES = ("dataset_info.json", "state.json", "dataset_dict.json")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(slots=True)
class RawRecord:
    """One source record as read, before any shape detection."""

    record: dict[str, Any]
    locator: str
    raw_json: str | None  # JSON Lines only: the line as written, so the caller need not re-serialise


class FormatError(InputError):
    """A source that cannot be read as expected; the message names the file, the record and what was expected."""

    def __init__(self, message: str, *, path: str | Path, locator: str | None = None) -> None:
        super().__init__(message)
        self.path = str(path)
        self.locator = locator


class LineTooLongError(FormatError):
    """A line (or CSV record) longer than the reader's limit; reading stopped there."""


def line_limit(max_chars: int) -> int:
    """The longest line, in bytes, that may hold a sample of `max_chars` characters: JSON can spend 12 bytes
    on one character (a surrogate pair written as two \\u escapes), plus 1 MiB for ids and metadata."""
    return 12 * max(int(max_chars), 0) + (1 << 20)


# --------------------------------------------------------------------------------------------- detection


def _split_suffixes(path: Path) -> tuple[str | None, str | None]:
    """(format, compression) from a file name such as ``train.jsonl.zst``; None where unknown."""
    name = path.name.lower()
    compression = None
    for ext, comp in _COMPRESSIONS.items():
        if name.endswith(ext):
            compression, name = comp, name[: -len(ext)]
            break
    fmt = _EXTENSIONS.get(Path(name).suffix)
    if fmt == "parquet" and compression:
        fmt = None  # Parquet compresses internally; a .parquet.gz is not something we read
    return fmt, compression


def compression_of(path: str | Path) -> str | None:
    """The compression a file's name says ('gzip', 'zstd') or None."""
    return _split_suffixes(Path(path))[1]


@contextmanager
def open_decompressed(path: str | Path, fmt: str = "jsonl") -> Iterator[IO[bytes]]:
    """A text-format file as a binary stream, decompressed as its name says (FormatError if the bytes
    disagree with the name or are not text)."""
    path = Path(path)
    with _open_binary(path, compression_of(path), fmt) as stream:
        yield stream


def _looks_like(head: bytes) -> str:
    """A short description of what some bytes look like, for error messages."""
    if head.startswith(b"PAR1"):
        return "a Parquet file"
    if head.startswith(_MAGIC["gzip"]):
        return "gzip-compressed data"
    if head.startswith(_MAGIC["zstd"]):
        return "zstd-compressed data"
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive"
    if head.startswith(b"ARROW1") or head.startswith(b"\xff\xff\xff\xff"):
        return "an Arrow file"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "UTF-16 text"
    if _mostly_control(head[:4096]):
        return "binary data"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"["):
        return "a JSON array"
    if text.startswith(b"{"):
        first = text.split(b"\n", 1)[0].strip()
        try:
            if isinstance(orjson.loads(first), dict):
                return "JSON Lines"
        except orjson.JSONDecodeError:
            pass
        return "a JSON object"
    if not text:
        return "an empty file"
    return "text"


def _mostly_control(sample: bytes) -> bool:
    """Whether a tenth or more of some bytes are control bytes: binary data, not text with a stray NUL."""
    return bool(sample) and len(sample.translate(None, _TEXT_BYTES)) * 10 >= len(sample)


def _sniff_format(path: Path) -> str | None:
    """Guess a file's format from its content, for names without a known extension."""
    with open(path, "rb") as fh:
        head = fh.read(_HEAD)
    looks = _looks_like(head)
    return {"a Parquet file": "parquet", "a JSON array": "json", "a JSON object": "json",
            "JSON Lines": "jsonl"}.get(looks)


def _is_save_to_disk(folder: Path) -> bool:
    return any((folder / name).is_file() for name in _SAVE_TO_DISK_FILES)


def _shard_files(folder: Path) -> list[Path]:
    """Data files in a folder and its direct subfolders, sorted by relative path; hidden and _meta skipped.
    Each real file is read once: a symlink back to the folder (or to a file already listed) adds nothing."""
    found: list[Path] = []
    top = folder.resolve()
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith((".", "_")):
            continue
        if entry.is_dir():
            if top.is_relative_to(entry.resolve()):
                continue  # a link to the folder itself or to a folder above it: a loop
            found.extend(p for p in sorted(entry.iterdir()) if p.is_file() and not p.name.startswith((".", "_")))
        elif entry.is_file():
            found.append(entry)
    seen: set[Path] = set()
    unique = []
    for path in sorted(found, key=lambda p: p.relative_to(folder).as_posix()):
        real = path.resolve()
        if real not in seen:
            seen.add(real)
            unique.append(path)
    return unique


def _folder_shards(folder: Path, fmt: str | None, split: str | None) -> tuple[str, list[Path]]:
    """The single format of a folder of shards and its files in order; FormatError if mixed or empty."""
    files = _shard_files(folder)
    by_format: dict[str, list[Path]] = {}
    for f in files:
        f_fmt, _ = _split_suffixes(f)
        if f_fmt and f_fmt != "txt":  # .txt beside shards is a README or licence; plain text loads file by file
            by_format.setdefault(f_fmt, []).append(f)
    if fmt is not None:
        by_format = {fmt: by_format.get(fmt, [])}
    if split is not None:
        token = re.compile(rf"(^|[/_.-]){re.escape(split)}([/_.-]|$)")
        by_format = {k: [f for f in v if token.search(f.relative_to(folder).as_posix())]
                     for k, v in by_format.items()}
    by_format = {k: v for k, v in by_format.items() if v}
    if not by_format:
        names = ", ".join(f.relative_to(folder).as_posix() for f in files[:10]) or "nothing"
        wanted = f"{fmt} " if fmt else ""
        for_split = f" for split '{split}'" if split else ""
        raise FormatError(
            f"{folder.name}/: no {wanted}data files{for_split} (found: {names}); expected .jsonl, .json, "
            ".parquet, .csv or .tsv files (optionally .gz/.zst), or a datasets.save_to_disk folder",
            path=folder,
        )
    if len(by_format) > 1:
        listing = "; ".join(f"{k}: {', '.join(p.name for p in v[:3])}{' ...' if len(v) > 3 else ''}"
                            for k, v in sorted(by_format.items()))
        raise FormatError(
            f"{folder.name}/: mixes formats ({listing}); expected shards of one format — "
            "pass format= to pick one or split the folder",
            path=folder,
        )
    ((only, shard_list),) = by_format.items()
    return only, shard_list


def _hub_id(source: str | Path) -> str | None:
    """The hub id a string names, or None if it should be treated as a local path."""
    if isinstance(source, Path):
        return None
    text = source.strip()
    if text.startswith("hub:"):
        return text[4:]
    if Path(text).expanduser().exists() or not _HUB_ID.match(text):
        return None
    if _split_suffixes(Path(text))[0] or text.endswith((".gz", ".zst", ".arrow")):
        return None  # a missing file, not a dataset id
    head = text.split("/", 1)[0]
    if "/" in text and Path(head).is_dir():
        return None  # "folder/missing": a local path
    return text


def _existing(source: str | Path) -> Path:
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    return path


def detect_format(source: str | Path) -> str:
    """The format of a source: from its extension, its folder contents, or "hub" for a dataset id."""
    if _hub_id(source) is not None:
        return "hub"
    path = _existing(source)
    if path.is_dir():
        if _is_save_to_disk(path):
            return "arrow"
        return _folder_shards(path, None, None)[0]
    fmt, compression = _split_suffixes(path)
    if fmt == "txt" and compression is None and _sniff_format(path) == "jsonl":
        fmt = "jsonl"  # JSON Lines saved as .txt: records, not lines of prose
    if fmt is None and path.suffix.lower() not in _COMPRESSIONS:
        fmt = _sniff_format(path)
    if fmt == "json":
        try:
            fmt = "jsonl" if _json_is_jsonl(path, compression, "utf-8") else fmt
        except FormatError:
            pass  # not what its name says: iter_batches reports that with the details
    if fmt is None:
        raise FormatError(
            f"{path.name}: cannot tell the format from the name or the content; expected a file ending in "
            ".jsonl, .ndjson, .json, .parquet, .csv or .tsv (optionally .gz or .zst) — or pass format=",
            path=path,
        )
    return fmt


# ------------------------------------------------------------------------------------------------ opening


@contextmanager
def _open_binary(path: Path, compression: str | None, fmt: str, encoding: str = "utf-8") -> Iterator[IO[bytes]]:
    """Open a file for reading, decompressing as its name says; FormatError if the bytes disagree."""
    with open(path, "rb") as raw:
        head = raw.read(_HEAD)
        raw.seek(0)
        if compression is None:
            looks = _looks_like(head)
            # NUL bytes and a UTF-16 BOM are fine when the caller said the file is UTF-16/32
            wide_text = looks in ("binary data", "UTF-16 text") and not _ascii_compatible(encoding)
            if looks in _NOT_TEXT and not wide_text:
                hint = " — rename it with .gz/.zst" if "compressed" in looks else ""
                if looks == "UTF-16 text":
                    hint = " — pass encoding='utf-16'"
                raise FormatError(
                    f"{path.name}: looks like {looks}, not {fmt.upper()} text; expected {_EXPECTED[fmt]}{hint}",
                    path=path,
                )
            yield raw
            return
        if not head.startswith(_MAGIC[compression]):
            raise FormatError(
                f"{path.name}: not {compression}-compressed (looks like {_looks_like(head)}); expected "
                f"{compression} data (magic {_MAGIC[compression].hex(' ')}) as the name says — rename the file",
                path=path,
            )
        if compression == "gzip":
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                yield stream  # type: ignore[misc]
        else:
            yield io.BufferedReader(_ZstdRaw(raw), buffer_size=_CHUNK)


class _ZstdRaw(io.RawIOBase):
    """Raw zstd decompression across frames, in bounded memory, that notices truncation.

    zstandard's stream_reader fills the caller's buffer (a decompressobj returns a whole call's output at
    once: 16 KB of zeros inflate to 512 MB), but it ends silently where the data stops mid-frame; so at its
    end the frames are walked by their headers to check that the last one is complete."""

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__()
        self._raw = raw
        self._reader = zstandard.ZstdDecompressor().stream_reader(raw, read_size=_CHUNK, read_across_frames=True,
                                                                  closefd=False)
        self._ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        if self._ended:
            return 0
        size = self._reader.readinto(target)
        if size == 0:
            self._ended = True
            problem = _zstd_frames_problem(self._raw)
            if problem:
                raise zstandard.ZstdError(problem)
        return size


def _zstd_frames_problem(raw: IO[bytes]) -> str | None:
    """Why the zstd frames of a file are incomplete (None if complete), read from the frame and block
    headers alone, seeking over block contents."""
    total = os.fstat(raw.fileno()).st_size
    raw.seek(0)
    while (start := raw.tell()) < total:
        head = raw.read(18)
        magic = int.from_bytes(head[:4], "little")
        if 0x184D2A50 <= magic <= 0x184D2A5F and len(head) >= 8:  # a skippable frame: magic, size, bytes
            raw.seek(start + 8 + int.from_bytes(head[4:8], "little"))
            continue
        try:
            header = zstandard.frame_header_size(head)
        except zstandard.ZstdError:
            return "the data ends in the middle of a zstd frame header"
        checksum = head[4] & 0x04
        raw.seek(start + header)
        while True:
            block = raw.read(3)
            if len(block) < 3:
                return "the data ends in the middle of a zstd frame"
            value = int.from_bytes(block, "little")
            content = 1 if (value >> 1) & 3 == 1 else value >> 3  # an RLE block holds one byte
            raw.seek(raw.tell() + content)
            if value & 1:
                break  # the frame's last block
        raw.seek(raw.tell() + (4 if checksum else 0))
    return "the data ends in the middle of a zstd frame" if raw.tell() > total else None


def _corrupt(path: Path, compression: str | None, after: str, exc: Exception) -> FormatError:
    what = f"{compression} stream" if compression else "file"
    where = f" {after}" if after else ""
    return FormatError(f"{path.name}: {what} is corrupt or truncated{where} ({exc}); expected a complete "
                       f"{what}", path=path)


def _ascii_compatible(encoding: str) -> bool:
    """True for encodings where b"\\n" is a newline byte, so binary line splitting is safe."""
    try:
        return "\n{,\"".encode(encoding) == b"\n{,\""
    except (LookupError, UnicodeError):
        return False


def _normal_encoding(encoding: str) -> str:
    try:
        return codecs.lookup(encoding).name
    except LookupError as exc:
        raise InputError(f"unknown encoding {encoding!r}; expected a Python codec name such as utf-8 or latin-1") from exc


def line_batches(stream: IO[bytes], path: Path, *, name: str | None = None, compression: str | None = None,
                 max_line: int = DEFAULT_MAX_LINE_BYTES, chunk_size: int = _CHUNK) -> Iterator[list[bytes]]:
    """The lines of a stream without their b"\\n", a list per chunk read (the last line even without one).

    Linear in the input: the pieces of an unfinished line are kept in a list and joined once, and newlines
    are looked for only in the new chunk. A line longer than `max_line` bytes raises LineTooLongError
    (naming its line number) as soon as that many bytes are read; a corrupt stream raises FormatError."""
    name = name or path.name
    parts: list[bytes] = []  # the unfinished line's pieces
    size = count = 0  # its length so far; complete lines so far
    while True:
        try:
            chunk = stream.read(chunk_size)
        except _DECOMPRESS_ERRORS as exc:
            raise _corrupt(path, compression, f"after line {count}" if count else "", exc) from exc
        if not chunk:
            if parts:
                yield [b"".join(parts)]
            return
        if b"\n" not in chunk:
            parts.append(chunk)
            size += len(chunk)
            if size > max_line:
                raise _too_long(path, name, count + 1, max_line)
            continue
        lines = chunk.split(b"\n")
        if parts:
            parts.append(lines[0])
            lines[0] = b"".join(parts)
        tail = lines.pop()
        parts, size = ([tail], len(tail)) if tail else ([], 0)
        if len(lines[0]) > max_line or (max_line < chunk_size and max(map(len, lines)) > max_line):
            raise _too_long(path, name, count + 1 + next(i for i, x in enumerate(lines) if len(x) > max_line),
                            max_line)
        count += len(lines)
        if size > max_line:
            raise _too_long(path, name, count + 1, max_line)
        yield lines


def _too_long(path: Path, name: str, number: int, limit: int) -> LineTooLongError:
    locator = f"{name} line {number}"
    return LineTooLongError(f"{locator}: longer than {limit:,} bytes, the limit for one record; reading stopped "
                            "there (expected one record per line; raise max_chars / --max-chars for longer "
                            "samples)", path=path, locator=locator)


def _binary_lines(stream: IO[bytes], path: Path, compression: str | None, name: str,
                  max_line: int) -> Iterator[bytes]:
    """Lines without their b"\\n", in bounded memory (see line_batches)."""
    for lines in line_batches(stream, path, name=name, compression=compression, max_line=max_line):
        yield from lines


def _decode_problem(exc: UnicodeDecodeError, line: bytes, encoding: str) -> str:
    byte = line[exc.start : exc.start + 1].hex()
    other = "latin-1" if encoding.startswith("utf") else "utf-8"
    name = "UTF-8" if encoding == "utf-8" else encoding
    return (f"not valid {name} at byte {exc.start + 1} (0x{byte}); expected {name} text "
            f"(re-encode the file, or pass encoding='{other}')")


class _RecordError(Exception):
    """A per-record problem: raised as FormatError, or reported to on_error and skipped."""

    def __init__(self, locator: str, problem: str) -> None:
        super().__init__(problem)
        self.locator = locator
        self.problem = problem


def _reporter(path: Path, on_error: OnError | None) -> Callable[[_RecordError], None]:
    def report(err: _RecordError) -> None:
        if on_error is None:
            raise FormatError(f"{err.locator}: {err.problem}", path=path, locator=err.locator) from None
        on_error(err.locator, err.problem)

    return report


def _text_lines(stream: IO[bytes], path: Path, compression: str | None, encoding: str,
                name: str, report: Callable[[_RecordError], None], max_line: int) -> Iterator[tuple[int, str, bool]]:
    """(line number, text, decoded cleanly) per line; a line that failed is reported, then given replaced."""
    if not _ascii_compatible(encoding):
        # UTF-16/32: newline bytes are not b"\n", so let the codec split lines (no per-line byte offsets)
        text = io.TextIOWrapper(stream, encoding=encoding, newline="")  # type: ignore[arg-type]
        try:
            number = 0
            while line := text.readline(max_line + 1):  # bounded: a longer line is refused, not read whole
                number += 1
                if len(line) > max_line:
                    raise _too_long(path, name, number, max_line)
                yield number, line.rstrip("\r\n"), True
        except UnicodeDecodeError as exc:
            raise FormatError(f"{name}: not valid {encoding} ({exc.reason}); expected {encoding} text",
                              path=path) from exc
        return
    strip_bom = encoding in ("utf-8", "utf-8-sig")
    decode_as = "utf-8" if strip_bom else encoding
    for number, line in enumerate(_binary_lines(stream, path, compression, name, max_line), 1):
        if strip_bom and number == 1 and line.startswith(codecs.BOM_UTF8):
            line = line[3:]
        try:
            yield number, line.decode(decode_as), True
        except UnicodeDecodeError as exc:
            report(_RecordError(f"{name} line {number}", _decode_problem(exc, line, decode_as)))
            # still passed on (with U+FFFD) so a CSV reader keeps its quoting in step; the record is dropped
            yield number, line.decode(decode_as, "replace"), False


# ----------------------------------------------------------------------------------------------- formats


def _type_name(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null", dict: "object"}.get(type(value), type(value).__name__)


def _read_jsonl(path: Path, name: str, compression: str | None, encoding: str,
                report: Callable[[_RecordError], None], max_line: int) -> Iterator[RawRecord]:
    seen_content = False
    loads = orjson.loads
    with _open_binary(path, compression, "jsonl", encoding) as stream:
        for number, text, clean in _text_lines(stream, path, compression, encoding, name, report, max_line):
            if not clean:
                seen_content = True
                continue
            line = text.strip()
            if not line:
                continue
            seen_content = True
            try:
                obj = loads(line)
            except orjson.JSONDecodeError as exc:
                # orjson is strict on purpose: NaN, lone surrogates and the like could not be stored as UTF-8 JSON
                report(_RecordError(f"{name} line {number}", _jsonl_problem(exc, line, number)))
                continue
            if type(obj) is not dict:
                report(_RecordError(f"{name} line {number}",
                                    f"expected a JSON object, got {_type_name(obj)}; "
                                    "JSON Lines holds one object per line"))
                continue
            yield RawRecord(obj, f"{name} line {number}", line)
    if not seen_content:
        raise FormatError(f"{name}: empty file; expected {_EXPECTED['jsonl']}", path=path)


def _jsonl_problem(exc: orjson.JSONDecodeError, line: str, number: int) -> str:
    problem = f"not valid JSON ({exc.msg} at column {exc.colno}); expected {_EXPECTED['jsonl']}"
    if number == 1 and line in ("[", "{"):
        problem += " — the file looks like one JSON document spread over many lines: is it .json?"
    return problem


def _read_json(path: Path, name: str, compression: str | None, encoding: str, split: str | None,
               report: Callable[[_RecordError], None]) -> Iterator[RawRecord]:
    with _open_binary(path, compression, "json", encoding) as stream:
        try:
            data = stream.read()
        except _DECOMPRESS_ERRORS as exc:
            raise _corrupt(path, compression, "", exc) from exc
    if not data.strip():
        raise FormatError(f"{name}: empty file; expected {_EXPECTED['json']}", path=path)
    doc = _parse_json_document(data, path, name, encoding)
    records, key = _records_in(doc, path, name, split)
    prefix = f"{name} {key} record" if key else f"{name} record"
    for index, item in enumerate(records):
        if type(item) is dict:
            yield RawRecord(item, f"{prefix} {index}", None)
        else:
            report(_RecordError(f"{prefix} {index}", f"expected a JSON object, got {_type_name(item)}"))


def _parse_json_document(data: bytes, path: Path, name: str, encoding: str) -> Any:
    if data.startswith(codecs.BOM_UTF8):
        data = data[3:]
    if encoding != "utf-8":
        try:
            return orjson.loads(data.decode(encoding))
        except UnicodeDecodeError as exc:
            raise FormatError(f"{name}: not valid {encoding} ({exc.reason}); expected {encoding} text",
                              path=path) from exc
        except orjson.JSONDecodeError as exc:
            raise _json_syntax(exc, path, name) from exc
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as uexc:
            line_no = data.count(b"\n", 0, uexc.start) + 1
            line_start = data.rfind(b"\n", 0, uexc.start) + 1
            byte = data[uexc.start : uexc.start + 1].hex()
            locator = f"{name} line {line_no}"
            raise FormatError(
                f"{locator}: not valid UTF-8 at byte {uexc.start - line_start + 1} (0x{byte}); expected UTF-8 "
                "text (re-encode the file, or pass encoding='latin-1')", path=path, locator=locator,
            ) from uexc
        raise _json_syntax(exc, path, name) from exc


def _json_syntax(exc: orjson.JSONDecodeError, path: Path, name: str) -> FormatError:
    locator = f"{name} line {exc.lineno}"
    hint = " — is it JSON Lines? pass format='jsonl'" if "after document" in exc.msg else ""
    return FormatError(f"{locator}: not valid JSON ({exc.msg} at column {exc.colno}); expected "
                       f"{_EXPECTED['json']}{hint}", path=path, locator=locator)


def _records_in(doc: Any, path: Path, name: str, key: str | None) -> tuple[list[Any], str | None]:
    """The list of records in a JSON document, and the key it sat under (None for a top-level list)."""
    if isinstance(doc, list):
        if not doc:
            raise FormatError(f"{name}: holds an empty list; expected at least one record", path=path)
        return doc, None
    if not isinstance(doc, dict):
        raise FormatError(f"{name}: holds a JSON {_type_name(doc)}; expected {_EXPECTED['json']}", path=path)
    lists = [k for k, v in doc.items() if isinstance(v, list) and v and isinstance(v[0], dict)]
    if key is not None:
        if key not in lists:
            raise FormatError(f"{name}: has no list of objects under {key!r} (lists of objects: "
                              f"{', '.join(map(repr, lists)) or 'none'})", path=path)
        return doc[key], key
    if len(lists) == 1:
        return doc[lists[0]], lists[0]
    if not lists:
        raise FormatError(f"{name}: the top-level object (keys: {', '.join(map(repr, list(doc)[:10]))}) holds "
                          f"no list of objects; expected {_EXPECTED['json']}", path=path)
    raise FormatError(f"{name}: the top-level object holds several lists of objects "
                      f"({', '.join(map(repr, lists))}); expected one — pass split=<key> to pick one", path=path)


def _json_is_jsonl(path: Path, compression: str | None, encoding: str) -> bool:
    """A .json file whose first line is a whole object and that has more after it is JSON Lines."""
    with _open_binary(path, compression, "json", encoding) as stream:
        try:
            head = stream.read(_CHUNK)
        except _DECOMPRESS_ERRORS:
            return False  # the JSON reader reports corruption properly
    head = head.lstrip(codecs.BOM_UTF8 + b" \t\r\n")
    first, sep, rest = head.partition(b"\n")
    if not sep or not rest.strip() or not first.strip().startswith(b"{"):
        return False
    try:
        return isinstance(orjson.loads(first), dict)
    except orjson.JSONDecodeError:
        return False


def _read_csv(path: Path, name: str, compression: str | None, encoding: str,
              report: Callable[[_RecordError], None], max_line: int) -> Iterator[RawRecord]:
    stem = path.name.lower().removesuffix(".gz").removesuffix(".zst")
    delimiter = "\t" if stem.endswith(".tsv") else ","
    csv.field_size_limit(1 << 30)  # the default 128 KB refuses long samples; the limit is process-wide
    bad_lines: list[int] = []  # lines that failed to decode: the record holding one is dropped
    record = [1, 0]  # the current record's first line and its characters so far (an open quote spans lines)

    def lines(stream: IO[bytes]) -> Iterator[str]:
        # our own line iterator, so a decoding error names its physical line; csv wants the line ends kept
        content_seen = False
        for number, text, clean in _text_lines(stream, path, compression, encoding, name, report, max_line):
            record[1] += len(text) + 1
            if record[1] > max_line:
                raise _too_long(path, name, record[0], max_line)
            if not clean:
                bad_lines.append(number)
            elif not content_seen and text.strip():
                content_seen = True
                if text.lstrip()[:1] in ("[", "{"):
                    looks = "JSON Lines" if text.strip().endswith("}") else "JSON"
                    raise FormatError(f"{name}: looks like {looks} (starts with {text.strip()[:20]!r}), not "
                                      f"CSV; expected {_EXPECTED['csv']} — load it as JSON", path=path)
            yield text + "\n"

    with _open_binary(path, compression, "csv", encoding) as stream:
        reader = csv.reader(lines(stream), delimiter=delimiter, strict=True)
        header = _csv_header(reader, path, name)
        width = len(header)
        last_line = reader.line_num
        record[:] = [last_line + 1, 0]
        rows_seen = False
        while True:
            start = last_line + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                locator = f"{name} line {start}"
                raise FormatError(f"{locator}: not valid CSV ({exc}); expected {_EXPECTED['csv']} "
                                  "(is a quoted field left open?)", path=path, locator=locator) from exc
            end, last_line = reader.line_num, reader.line_num
            record[:] = [last_line + 1, 0]
            if bad_lines and bad_lines[-1] >= start:
                bad_lines.clear()
                continue  # already reported by the line decoder
            if not row or (len(row) == 1 and not row[0]):
                continue  # blank line
            rows_seen = True
            if len(row) != width:
                lines_span = f"line {start}" if end == start else f"lines {start}-{end}"
                report(_RecordError(f"{name} line {start}",
                                    f"{len(row)} fields, expected {width} as in the header ({lines_span})"))
                continue
            yield RawRecord(dict(zip(header, row, strict=True)), f"{name} line {start}", None)
        if not rows_seen:
            raise FormatError(f"{name}: has a header line but no rows; expected at least one record", path=path)


def _csv_header(reader: Any, path: Path, name: str) -> list[str]:
    try:
        header = next(reader)
        while header == [] or header == [""]:
            header = next(reader)
    except StopIteration:
        raise FormatError(f"{name}: empty file; expected {_EXPECTED['csv']}", path=path) from None
    except csv.Error as exc:
        raise FormatError(f"{name} line 1: not valid CSV ({exc}); expected {_EXPECTED['csv']}",
                          path=path, locator=f"{name} line 1") from exc
    # duplicate names would overwrite each other in a dict: rename as pandas does ("a", "a.1")
    seen: dict[str, int] = {}
    out = []
    for column in header:
        if column in seen:
            seen[column] += 1
            column = f"{column}.{seen[column]}"
        seen.setdefault(column, 0)
        out.append(column)
    return out


def _read_parquet(path: Path, name: str, batch_size: int) -> Iterator[RawRecord]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with open(path, "rb") as fh:
        head = fh.read(4)
        if head != b"PAR1":
            fh.seek(0)
            raise FormatError(_not_parquet(name, fh.read(_HEAD)), path=path)
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise FormatError(f"{name}: not a readable Parquet file ({_one_line(exc)}); expected "
                          f"{_EXPECTED['parquet']}", path=path) from exc
    if pf.metadata.num_rows == 0:
        raise FormatError(f"{name}: holds no rows; expected at least one record", path=path)
    index = 0
    try:
        for batch in pf.iter_batches(batch_size=batch_size):
            for row in batch.to_pylist():
                yield RawRecord(row, f"{name} row {index}", None)
                index += 1
    except (pa.ArrowException, OSError) as exc:
        raise FormatError(f"{name}: Parquet data is corrupt after row {index} ({_one_line(exc)})", path=path) from exc


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _not_parquet(name: str, head: bytes) -> str:
    shown = head[:4].decode("utf-8", "replace")
    looks = _looks_like(head)
    hint = {"JSON Lines": " — is it JSON Lines?", "a JSON array": " — is it JSON?",
            "a JSON object": " — is it JSON?", "text": " — is it CSV or text?"}.get(looks, f" — it looks like {looks}")
    if not head:
        return f"{name}: empty file; expected {_EXPECTED['parquet']}"
    return f"{name}: not a Parquet file (starts with {shown!r}); expected {_EXPECTED['parquet']}{hint}"


def _load_from_disk(folder: Path, split: str | None) -> tuple[Any, str | None]:
    """The Dataset inside a save_to_disk folder, and the split name it came from (None for a plain Dataset)."""
    import datasets

    try:
        loaded = datasets.load_from_disk(str(folder))
    except Exception as exc:
        raise FormatError(f"{folder.name}/: could not be loaded as a datasets.save_to_disk folder ({exc})",
                          path=folder) from exc
    if isinstance(loaded, datasets.DatasetDict):
        splits = list(loaded)
        if split is None:
            if len(splits) != 1:
                raise FormatError(f"{folder.name}/: holds several splits ({', '.join(splits)}); "
                                  "expected one — pass split=<name>", path=folder)
            split = splits[0]
        if split not in loaded:
            raise FormatError(f"{folder.name}/: has no split {split!r} (splits: {', '.join(splits)})",
                              path=folder)
        return loaded[split], split
    return loaded, None


def _read_arrow(folder: Path, split: str | None, batch_size: int) -> Iterator[RawRecord]:
    dataset, split = _load_from_disk(folder, split)
    prefix = f"{folder.name} split {split} row" if split else f"{folder.name} row"
    index = 0
    # the arrow format streams tables from the memory-mapped files: no pandas, no Python decoding per cell
    for table in dataset.with_format("arrow").iter(batch_size=batch_size):
        for row in table.to_pylist():
            yield RawRecord(row, f"{prefix} {index}", None)
            index += 1


def _read_hub(dataset_id: str, split: str | None, hub_config: str | None,
              batch_size: int) -> Iterator[RawRecord]:
    import datasets

    split = split or "train"
    prefix = f"hub:{dataset_id} split {split} row"
    index = 0
    try:
        stream = datasets.load_dataset(dataset_id, hub_config, split=split, streaming=True)
        for batch in stream.iter(batch_size=batch_size):
            columns = list(batch)
            for values in zip(*(batch[c] for c in columns), strict=True):
                yield RawRecord(dict(zip(columns, values, strict=True)), f"{prefix} {index}", None)
                index += 1
    except FormatError:
        raise
    except Exception as exc:
        where = f" after row {index}" if index else ""
        raise FormatError(f"hub dataset {dataset_id!r} could not be loaded{where}: {exc}; {_hub_advice(exc)}",
                          path=f"hub:{dataset_id}") from exc


def _hub_advice(exc: Exception) -> str:
    offline = any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
                  for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    if offline or isinstance(exc, (ConnectionError, TimeoutError)):
        return ("the Hugging Face hub is not reachable from here — download it where it is and load the "
                "files or a save_to_disk folder")
    return "check the dataset id, hub_config and split"


# ------------------------------------------------------------------------------------------------- public


def _file_records(path: Path, name: str, fmt: str, *, batch_size: int, encoding: str, split: str | None,
                  report: Callable[[_RecordError], None], max_line: int) -> Iterator[RawRecord]:
    if path.stat().st_size == 0:
        raise FormatError(f"{name}: empty file; expected {_EXPECTED.get(fmt, fmt)}", path=path)
    _, compression = _split_suffixes(path)
    if fmt == "parquet":
        return _read_parquet(path, name, batch_size)
    if fmt == "jsonl":
        return _read_jsonl(path, name, compression, encoding, report, max_line)
    if fmt == "json":
        if _json_is_jsonl(path, compression, encoding):
            return _read_jsonl(path, name, compression, encoding, report, max_line)
        return _read_json(path, name, compression, encoding, split, report)
    if fmt == "csv":
        return _read_csv(path, name, compression, encoding, report, max_line)
    raise InputError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def _records(source: str | Path, fmt: str | None, *, batch_size: int, on_error: OnError | None,
             encoding: str, split: str | None, hub_config: str | None, max_line: int) -> Iterator[RawRecord]:
    if fmt is not None and fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    hub = _hub_id(source)
    if fmt == "hub" or (fmt is None and hub is not None):
        return _read_hub(hub or str(source), split, hub_config, batch_size)
    path = _existing(source)
    encoding = _normal_encoding(encoding)
    report = _reporter(path, on_error)
    if path.is_dir():
        if fmt == "arrow" or (fmt is None and _is_save_to_disk(path)):
            return _read_arrow(path, split, batch_size)
        shard_format, shards = _folder_shards(path, fmt, split)
        return _shards(path, shards, shard_format, batch_size=batch_size, encoding=encoding, report=report,
                       max_line=max_line)
    if fmt == "arrow":
        raise FormatError(f"{path.name}: format 'arrow' means a folder written by datasets' save_to_disk; "
                          "pass that folder", path=path)
    fmt = fmt or detect_format(path)
    return _file_records(path, path.name, fmt, batch_size=batch_size, encoding=encoding, split=split,
                         report=report, max_line=max_line)


def _shards(folder: Path, shards: list[Path], fmt: str, **kwargs: Any) -> Iterator[RawRecord]:
    for shard in shards:
        name = f"{folder.name}/{shard.relative_to(folder).as_posix()}"
        yield from _file_records(shard, name, fmt, split=None, **kwargs)


def _batched(records: Iterable[RawRecord], batch_size: int) -> Iterator[list[RawRecord]]:
    batch: list[RawRecord] = []
    append = batch.append
    for record in records:
        append(record)
        if len(batch) >= batch_size:
            yield batch
            batch = []
            append = batch.append
    if batch:
        yield batch


def iter_batches(
    source: str | Path,
    format: str | None = None,
    *,
    batch_size: int = 8192,
    on_error: OnError | None = None,
    encoding: str = "utf-8",
    split: str | None = None,
    hub_config: str | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> Iterator[list[RawRecord]]:
    """Stream a source's records in lists of at most ``batch_size``, each with its locator.

    ``format`` is one of FORMATS (detected when None). ``on_error(locator, message)`` is called for a bad
    record, which is then skipped; without it the first bad record raises FormatError. ``split`` picks a
    split of a DatasetDict folder or a hub dataset, the shards of a folder whose paths name it, or the key
    of a JSON object holding several lists. A line (or CSV record) longer than ``max_line_bytes`` stops the
    read with LineTooLongError. A missing path raises FileNotFoundError.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    records = _records(source, format, batch_size=batch_size, on_error=on_error, encoding=encoding,
                       split=split, hub_config=hub_config, max_line=max_line_bytes)
    return _batched(records, batch_size)


def parquet_files(source: str | Path, split: str | None = None) -> list[Path]:
    """The Parquet files of a file or a folder of shards, in the order they are read (FormatError if the
    folder holds none)."""
    path = Path(source)
    return _folder_shards(path, "parquet", split)[1] if path.is_dir() else [path]


def count_hint(source: str | Path, format: str | None = None, *, split: str | None = None) -> int | None:
    """A cheap record count where the source knows it (Parquet metadata, Arrow num_rows), else None."""
    fmt = format or detect_format(source)
    if fmt == "hub":
        return None
    path = _existing(source)
    if fmt == "arrow":
        try:
            return int(_load_from_disk(path, split)[0].num_rows)
        except FormatError:
            return None
    if fmt != "parquet":
        return None
    import pyarrow.parquet as pq

    try:
        return sum(pq.ParquetFile(f).metadata.num_rows for f in parquet_files(path, split))
    except Exception:
        return None  # an unreadable file is reported properly by iter_batches


# ------------------------------------------------------------------------------------------- plain text

TXT_MODES: tuple[str, ...] = ("line", "paragraph")
TXT_MAX_BYTES = 64 * 1024 * 1024  # one document (a line, or a paragraph); longer is reported, not read


def iter_txt_batches(source: str | Path, mode: str = "line", *, batch_size: int = 8192,
                     on_error: OnError | None = None, encoding: str = "utf-8",
                     max_bytes: int = TXT_MAX_BYTES) -> Iterator[list[RawRecord]]:
    """A plain-text file as {"text": document} records. mode "line": one document per line, as the
    Hugging Face `text` loader reads it, except that blank lines (empty or whitespace only; the loader
    yields them as empty rows) are left out since they hold no text; "paragraph": documents separated by
    one or more blank lines, their lines joined with "\n". A line ending "\r\n" loses the "\r".
    A document longer than `max_bytes` is a bad record (reported, or skipped through on_error)."""
    if mode not in TXT_MODES:
        raise ValueError(f"unknown txt mode {mode!r}; expected one of {', '.join(TXT_MODES)}")
    path = _existing(source)
    if path.is_dir():
        raise FormatError(f"{path.name}: a folder; plain text is read from one .txt file", path=path)
    if path.stat().st_size == 0:
        raise FormatError(f"{path.name}: empty file; expected {_EXPECTED['txt']}", path=path)
    report = _reporter(path, on_error)
    records = _txt_records(path, mode, _normal_encoding(encoding), max_bytes, report)
    return _batched(records, batch_size)


def _txt_records(path: Path, mode: str, encoding: str, max_bytes: int,
                 report: Callable[[_RecordError], None]) -> Iterator[RawRecord]:
    name = path.name
    para: list[str] = []
    para_start, para_bytes = 0, 0
    for number, line in _bounded_lines(path, encoding, max_bytes, report):
        blank = not line or line.isspace()
        if mode == "line":
            if not blank:
                yield RawRecord({"text": line}, f"{name} line {number}", None)
            continue
        if blank:
            if para:
                yield RawRecord({"text": "\n".join(para)}, f"{name} line {para_start}", None)
            para, para_bytes = [], 0
            continue
        if not para:
            para_start = number
        para.append(line)
        para_bytes += len(line) + 1
        if para_bytes > max_bytes:
            report(_RecordError(f"{name} line {para_start}",
                                f"paragraph longer than {max_bytes:,} bytes; expected shorter documents"))
            para, para_bytes = [], 0
    if para:
        yield RawRecord({"text": "\n".join(para)}, f"{name} line {para_start}", None)


def _bounded_lines(path: Path, encoding: str, max_bytes: int,
                   report: Callable[[_RecordError], None]) -> Iterator[tuple[int, str]]:
    """(line number, decoded line without its end) per line; a line over max_bytes is reported and
    skipped without being held in memory whole."""
    _, compression = _split_suffixes(path)
    strip_bom = encoding in ("utf-8", "utf-8-sig")
    decode_as = "utf-8" if strip_bom else encoding
    number, rest, too_long = 0, b"", False
    with _open_binary(path, compression, "txt", encoding) as stream:
        while True:
            try:
                chunk = stream.read(_CHUNK)
            except _DECOMPRESS_ERRORS as exc:
                raise _corrupt(path, compression, f"after line {number}", exc) from exc
            lines = (rest + chunk).split(b"\n") if chunk else ([rest] if rest else [])
            rest = lines.pop() if chunk else b""
            for line in lines:
                number += 1
                if too_long:  # the tail of a line already reported
                    too_long = False
                    continue
                if number == 1 and strip_bom and line.startswith(codecs.BOM_UTF8):
                    line = line[3:]
                if len(line) > max_bytes:
                    report(_RecordError(f"{path.name} line {number}",
                                        f"line longer than {max_bytes:,} bytes; expected shorter documents"))
                    continue
                try:
                    yield number, line.decode(decode_as).removesuffix("\r")
                except UnicodeDecodeError as exc:
                    report(_RecordError(f"{path.name} line {number}", _decode_problem(exc, line, decode_as)))
            if len(rest) > max_bytes and not too_long:
                report(_RecordError(f"{path.name} line {number + 1}",
                                    f"line longer than {max_bytes:,} bytes; expected shorter documents"))
                rest, too_long = b"", True
            elif too_long:
                rest = b""
            if not chunk:
                break
