"""Raw-text corpora (Wikipedia, BookCorpus) for masked-language-model distillation.

``iter_documents`` streams documents from files, folders or a hub dataset; ``pack_blocks``
tokenizes them into one stream cut into fixed-length blocks (the DistilBERT recipe);
``build_block_store`` caches the blocks once as an int32 file that ``BlockStore`` memory-maps,
so a corpus larger than memory is tokenized once and then read from the page cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import operator
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from distilrank.data.hub import _reason
from distilrank.data.parsing import Where, iter_jsonl, iter_lines
from distilrank.data.parsing import text_field as get_text
from distilrank.errors import ConfigError, DataError
from distilrank.io import atomic_open, atomic_write_json

__all__ = ["BlockStore", "CorpusStats", "build_block_store", "iter_documents", "pack_blocks"]

logger = logging.getLogger(__name__)

PAD = -1  # fills the short last block of a store; token ids are never negative
_DTYPE = np.dtype("<i4")
_FORMAT = 1  # bump when parsing or packing changes, so that old caches are not reused
_TAG = re.compile(r"<[^>]+>")
_MAX_DOC_LINES = 4096  # a text file without blank lines is cut here rather than held whole
_SUMMARY = ("blocks", "tokens", "documents", "stubs_dropped", "files")
SPEC_HINT = "pass a folder, a .jsonl/.txt/WikiExtractor file, a comma-separated list, or a hub name"
BINARY_HINT = "convert it to UTF-8 text, or move it out of the corpus"


@dataclass
class CorpusStats:
    """What ``iter_documents`` has read so far; a hub dataset counts as one file."""

    files: int = 0
    documents: int = 0
    stubs_dropped: int = 0  # WikiExtractor documents with fewer than min_words words
    words: int = 0


def _walk(folder: Path) -> list[Path]:
    """Regular files under ``folder``, recursively, sorted by path; hidden ones skipped."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(root, f) for f in files if not f.startswith(".")]
    files = sorted((p for p in found if p.is_file()), key=lambda p: p.relative_to(folder).parts)
    if not files:
        raise DataError("the folder holds no files", path=folder, hint=SPEC_HINT)
    return files


def _sources(spec: str) -> list[Path | str]:
    """The local files (as paths) and hub dataset names (as strings) ``spec`` names, in order."""
    if not spec.strip():
        raise DataError("no corpus given", hint=SPEC_HINT)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _walk(path)
    if path.exists():
        return [path]
    if "," in spec:
        return [s for part in spec.split(",") if part.strip() for s in _sources(part.strip())]
    return [spec]


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Lines of a UTF-8 text file, streamed; NUL bytes (a binary file) raise a DataError."""
    message = "holds NUL bytes: this is a binary file, not text"
    with path.open("rb") as fh:
        head = fh.read(8192)  # a binary file may have no newline to end a line at
    if b"\0" in head:
        line_no = head.count(b"\n", 0, head.index(b"\0")) + 1
        raise DataError(message, path=path, line=line_no, hint=BINARY_HINT)
    for line_no, text in iter_lines(path):  # strict UTF-8, line by line
        if "\0" in text:
            raise DataError(message, path=path, line=line_no, hint=BINARY_HINT)
        yield line_no, text


def _jsonl_documents(path: Path, lines: Iterable[tuple[int, str]], field: str) -> Iterator[str]:
    """Each line's ``field`` text; ``field`` may name several comma-separated fields, each a string or a list
    of strings (``query,positive,negatives`` reads every text of a groups file)."""
    names = [f.strip() for f in field.split(",") if f.strip()]
    hint = f"each line needs a string field {field!r}; pass text_field=... to read another"
    for line_no, obj in iter_jsonl(path, lines, hint):
        where = Where(str(path), line_no)
        for name in names:
            value = obj.get(name) if isinstance(obj, dict) else None
            if isinstance(value, list) and len(names) > 1:
                texts = [get_text({name: v}, name, where, f"{name} must be a list of strings", True) for v in value]
            else:
                texts = [get_text(obj, name, where, hint, allow_empty=True)]
            yield from (t.strip() for t in texts if t.strip())


def _wiki_documents(
    path: Path, lines: Iterable[tuple[int, str]], min_words: int, stats: CorpusStats
) -> Iterator[str]:
    """WikiExtractor ``<doc ...>`` blocks without their title line and tags; stubs dropped."""
    hint = "a WikiExtractor file holds only <doc ...> title, text </doc> blocks"
    start, body = 0, []  # start: line of the open <doc>, 0 outside one
    for line_no, line in lines:
        stripped = line.strip()
        opens = stripped.startswith(("<doc ", "<doc>"))
        if start and stripped == "</doc>":
            text = _TAG.sub("", "\n".join(body[1:])).strip()  # body[0] is the title
            if text and len(text.split()) >= min_words:
                yield text
            else:
                stats.stubs_dropped += 1
            start = 0
        elif start and not opens:
            body.append(line)
        elif opens and not start:
            start, body = line_no, []
        elif stripped:  # a <doc> inside a <doc>, or text outside any
            where = f"inside the <doc> of line {start}" if start else "outside <doc> ... </doc>"
            message = f"unexpected {stripped[:40]!r} {where}"
            raise DataError(message, path=path, line=line_no, hint=hint)
    if start:
        message = f"the <doc> opened at line {start} has no </doc>"
        raise DataError(message, path=path, line=start, hint="the file looks cut off")


def _paragraph_documents(lines: Iterable[tuple[int, str]]) -> Iterator[str]:
    """Documents separated by blank lines; a very long one is cut every few thousand lines."""
    for blank, group in itertools.groupby(lines, key=lambda item: not item[1].strip()):
        while not blank and (part := list(itertools.islice(group, _MAX_DOC_LINES))):
            yield "\n".join(line.strip() for _, line in part)


def _file_documents(path: Path, field: str, min_words: int, stats: CorpusStats) -> Iterator[str]:
    """One file's documents, by kind: .jsonl, WikiExtractor (first line ``<doc``), else text."""
    lines = _lines(path)
    first = next(((n, line) for n, line in lines if line.strip()), None)
    if first is None:
        raise DataError("holds no text", path=path, hint="fill the file or remove it")
    rest = itertools.chain([first], lines)
    if path.suffix.lower() == ".jsonl":
        return _jsonl_documents(path, rest, field)
    if first[1].lstrip().startswith(("<doc ", "<doc>")):
        return _wiki_documents(path, rest, min_words, stats)
    return _paragraph_documents(rest)


def _hub_documents(name: str, field: str, config: str | None, split: str) -> Iterator[str]:
    """Column ``field`` of a hub dataset, streamed; a load failure becomes one DataError."""
    import datasets  # heavy: imported only when the hub is actually used

    hint = f"each row needs a string column {field!r}; pass text_field=... to read another"
    try:
        for i, row in enumerate(datasets.load_dataset(name, config, split=split, streaming=True)):
            text = get_text(row, field, Where(name, None, f"{split}[{i}]."), hint, allow_empty=True)
            if text.strip():
                yield text.strip()
    except DataError:
        raise
    except Exception as exc:  # offline, unknown name, bad config or split, bad files...
        where = f"config {config!r}, split {split!r}" if config else f"split {split!r}"
        message = f"could not load {name!r} from the Hugging Face hub: {_reason(exc)} ({where})"
        hint = "no local file or folder has that name either; pass a local path, or check the "
        hint += "name and your network"
        raise DataError(message, hint=hint) from exc


def iter_documents(
    spec: str, *, text_field: str = "text", min_words: int = 20, hub_config: str | None = None,
    hub_split: str = "train", stats: CorpusStats | None = None,
) -> Iterator[str]:  # fmt: skip
    """Yield the documents of a corpus one at a time, streaming; ``stats`` is kept up to date.

    ``spec``: a folder (its files recursively, sorted, hidden ones skipped), a file, a
    comma-separated list of those, or else a hub dataset name (column ``text_field``). A
    ``.jsonl`` file holds objects with a string field ``text_field``; a WikiExtractor file
    (``<doc ...>`` title, text ``</doc>``) gives texts without title and tags, dropping stubs
    under ``min_words`` words; any other file holds documents separated by blank lines.
    """
    if min_words < 0:
        raise ConfigError(f"min_words must be >= 0, got {min_words}")
    stats = CorpusStats() if stats is None else stats
    documents, stubs = stats.documents, stats.stubs_dropped
    for source in _sources(spec):
        stats.files += 1
        if isinstance(source, Path):
            docs = _file_documents(source, text_field, min_words, stats)
        else:
            docs = _hub_documents(source, text_field, hub_config, hub_split)
        for text in docs:
            stats.documents += 1
            stats.words += len(text.split())
            yield text
    if stats.documents == documents:
        stubs = stats.stubs_dropped - stubs
        message = f"holds no documents ({stubs} wiki stubs under min_words={min_words} dropped)"
        raise DataError(message, path=spec, hint="lower min_words, or check the files hold text")


def _special_ids(tokenizer: Any, block_size: int) -> tuple[int, int]:
    if block_size < 8:
        raise ConfigError(f"block_size must be at least 8 tokens, got {block_size}")
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    if cls_id is None or sep_id is None:
        name = type(tokenizer).__name__
        raise ConfigError(f"{name} has no cls or sep token; use a BERT-style tokenizer")
    return int(cls_id), int(sep_id)


def pack_blocks(
    documents: Iterable[str], tokenizer: Any, block_size: int, *, batch_docs: int = 256
) -> Iterator[list[int]]:
    """Blocks ``[cls] + (block_size - 2) tokens + [sep]`` cut from all documents' tokens.

    Documents are tokenized ``batch_docs`` at a time and joined into one stream with a sep
    token between documents; the last block holds the leftover and may be shorter.
    """
    cls_id, sep_id = _special_ids(tokenizer, block_size)
    if batch_docs < 1:
        raise ConfigError(f"batch_docs must be at least 1, got {batch_docs}")
    return _pack(iter(documents), tokenizer, block_size - 2, batch_docs, (cls_id, sep_id))


def _pack(
    docs: Iterator[str], tokenizer: Any, content: int, batch_docs: int, specials: tuple[int, int]
) -> Iterator[list[int]]:
    (cls_id, sep_id), stream, started = specials, [], False  # stream: tokens not yet in a block
    while batch := list(itertools.islice(docs, batch_docs)):
        # verbose=False: no warning about texts longer than the model, they are cut here
        kwargs = {"add_special_tokens": False, "verbose": False, "return_attention_mask": False}
        for ids in tokenizer(batch, **kwargs)["input_ids"]:
            if not ids:
                continue
            if started:
                stream.append(sep_id)
            started = True
            stream.extend(ids)
            cut = len(stream) - len(stream) % content
            for start in range(0, cut, content):
                yield [cls_id, *stream[start : start + content], sep_id]
            del stream[:cut]
    if stream:
        yield [cls_id, *stream, sep_id]


def _read_meta(path: Path) -> dict[str, Any]:
    """The meta of the complete store ``path`` (.bin or .json); else a DataError."""
    bin_path, hint = path.with_suffix(".bin"), "delete it and build it again"
    try:
        meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        need = meta["n_blocks"] * meta["block_size"] * _DTYPE.itemsize
        size = bin_path.stat().st_size
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"is not a block store: {_reason(exc)}", path=path, hint=hint) from None
    if size != need:  # e.g. a .bin whose build was killed after an older meta was written
        message = f"holds {size} bytes, but its {meta['n_blocks']} blocks need {need}"
        raise DataError(message, path=bin_path, hint=hint)
    return meta


class BlockStore(Sequence[list[int]]):
    """Token-id blocks in a memory-mapped int32 ``(n, block_size)`` file padded with -1.

    ``store[i]`` is block i's ids without padding; slices and ``subset`` are views of the file.
    """

    def __init__(self, path: Path, rows: np.ndarray, index: range | np.ndarray | None = None):
        self.path = path
        self.block_size = int(rows.shape[1])
        self._rows = rows  # (N, block_size) memmap
        self._index = range(len(rows)) if index is None else index  # (n,) rows of this view

    @classmethod
    def open(cls, path: str | Path) -> BlockStore:
        """Open a store written by ``build_block_store`` (its ``.bin`` or ``.json`` file)."""
        path = Path(path).with_suffix(".bin")
        meta = _read_meta(path)
        shape = (meta["n_blocks"], meta["block_size"])
        if shape[0] == 0:  # an empty file cannot be memory-mapped
            return cls(path, np.empty(shape, dtype=_DTYPE))
        return cls(path, np.memmap(path, dtype=_DTYPE, mode="r", shape=shape))

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, i: int | slice) -> list[int] | BlockStore:  # type: ignore[override]
        """Block ``i``'s token ids (a list), or for a slice a view (a ``BlockStore``)."""
        if isinstance(i, slice):
            return BlockStore(self.path, self._rows, self._index[i])
        row = self._rows[self._index[operator.index(i)]]
        return row[row != PAD].tolist()

    def lengths(self) -> list[int]:
        """Tokens in each block (``block_size`` except for a short last block)."""
        out: list[int] = []
        for start in range(0, len(self), 4096):  # a few MiB at a time
            rows = self._rows[np.asarray(self._index[start : start + 4096])]
            out += np.count_nonzero(rows != PAD, axis=1).tolist()
        return out

    def subset(self, indices: Sequence[int] | range) -> BlockStore:
        """A view of the blocks at ``indices`` (negative ones count from the end); no copy."""
        index = self._index
        if isinstance(index, range):
            index = np.arange(index.start, index.stop, index.step)
        return BlockStore(self.path, self._rows, index[np.asarray(indices, dtype=np.int64)])

    def __reduce__(self) -> tuple[Any, ...]:
        return _reopen, (self.path, self._index)

    def __repr__(self) -> str:
        return f"BlockStore({len(self)} blocks of {self.block_size} tokens at {self.path})"


def _reopen(path: Path, index: range | np.ndarray) -> BlockStore:
    """Unpickle a store: map the file again instead of having copied its rows."""
    return BlockStore(path, BlockStore.open(path)._rows, index)


def _fingerprint(specs: str, tokenizer: Any, settings: dict[str, Any]) -> str:
    """sha256 of the specs, the local files' paths, sizes and times, tokenizer and settings."""
    local = [p for p in _sources(specs) if isinstance(p, Path)]
    files = [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in local]
    vocab = hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    casing = [tokenizer.init_kwargs.get(k) for k in ("do_lower_case", "strip_accents")]
    payload = {"format": _FORMAT, "specs": specs, "files": files, **settings, "casing": casing}
    payload["tokenizer"] = [type(tokenizer).__name__, vocab.hexdigest()]
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _write_blocks(
    path: Path, blocks: Iterator[list[int]], block_size: int, total: int, progress: bool
) -> tuple[int, int]:
    """Append blocks to ``path`` in chunks of ~1 MiB, atomically; return (blocks, tokens)."""
    n = tokens = 0
    bar = tqdm(total=total or None, unit="blocks", desc="packing", disable=not progress)
    with bar, atomic_open(path, "wb") as fh:
        while chunk := list(itertools.islice(blocks, max(1, (1 << 18) // block_size))):
            rows = np.full((len(chunk), block_size), PAD, dtype=_DTYPE)  # (chunk, block_size)
            for row, block in zip(rows, chunk):
                row[: len(block)] = block
            fh.write(rows.tobytes())
            n, tokens = n + len(chunk), tokens + sum(map(len, chunk))
            bar.update(len(chunk))
    return n, tokens


def build_block_store(
    specs: str, tokenizer: Any, block_size: int, cache_dir: str | Path, *,
    text_field: str = "text", min_words: int = 20, hub_config: str | None = None,
    hub_split: str = "train", max_blocks: int = 0, show_progress: bool = True,
) -> tuple[BlockStore, dict[str, Any]]:  # fmt: skip
    """Tokenize and pack a corpus (see ``iter_documents``) once into ``cache_dir``.

    Returns the store and ``{blocks, tokens, documents, stubs_dropped, files, cached, path}``.
    A complete store with the same fingerprint (specs, local files' sizes and times,
    tokenizer, settings) is reused without reading the corpus (``cached=True``); the file
    appears only once complete. ``max_blocks`` > 0 stops after that many blocks.
    """
    _special_ids(tokenizer, block_size)
    if max_blocks < 0:
        raise ConfigError(f"max_blocks must be >= 0 (0: no limit), got {max_blocks}")
    options = dict(text_field=text_field, min_words=min_words, hub_config=hub_config)
    options["hub_split"] = hub_split
    settings = {**options, "block_size": block_size, "max_blocks": max_blocks}
    name = f"blocks-{_fingerprint(specs, tokenizer, settings)[:20]}"
    bin_path = Path(cache_dir).expanduser() / f"{name}.bin"
    with contextlib.suppress(DataError):  # absent or incomplete: built below
        meta = _read_meta(bin_path)
        logger.info("reusing the block store %s", bin_path)
        summary = {k: meta[k] for k in _SUMMARY}
        return BlockStore.open(bin_path), {**summary, "cached": True, "path": str(bin_path)}
    bin_path.with_suffix(".json").unlink(missing_ok=True)  # an old meta must not meet a new .bin
    stats = CorpusStats()
    blocks = pack_blocks(iter_documents(specs, **options, stats=stats), tokenizer, block_size)
    if max_blocks:
        blocks = itertools.islice(blocks, max_blocks)
    n, tokens = _write_blocks(bin_path, blocks, block_size, max_blocks, show_progress)
    summary = {"blocks": n, "tokens": tokens, **{k: asdict(stats)[k] for k in _SUMMARY[2:]}}
    meta = {"format": _FORMAT, "n_blocks": n, "block_size": block_size, "dtype": "int32"}
    meta.update(pad=PAD, **summary, words=stats.words)
    atomic_write_json(bin_path.with_suffix(".json"), meta)
    return BlockStore.open(bin_path), {**summary, "cached": False, "path": str(bin_path)}
