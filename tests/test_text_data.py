"""Raw-text corpora: document readers, block packing and the memory-mapped block cache."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tiny import make_tokenizer

import distilrank.data.text as text_module
from distilrank.data.text import (
    BlockStore,
    CorpusStats,
    build_block_store,
    iter_documents,
    pack_blocks,
)
from distilrank.errors import ConfigError, DataError

WIKI = """<doc id="1" url="?curid=1" title="Cats">
Cats

Cats are <b>small</b> animals that purr when they are happy.
They sleep most of the day.
</doc>
<doc id="2" url="?curid=2" title="Stub">
Stub

</doc>
<doc id="3" url="?curid=3" title="Dogs">
Dogs
Dogs bark at <a href="x">strangers</a> and at the mail carrier every single morning.
</doc>
<doc id="4" url="?curid=4" title="Tiny">
Tiny
Only four words here.
</doc>
"""
CATS = "Cats are small animals that purr when they are happy.\nThey sleep most of the day."
DOGS = "Dogs bark at strangers and at the mail carrier every single morning."


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def jsonl(path: Path, rows: list[Any]) -> Path:
    return write(path, "".join(json.dumps(r) + "\n" for r in rows))


def ids(tokenizer: Any, words: str) -> list[int]:
    return tokenizer.convert_tokens_to_ids(words.split())


# ---------------------------------------------------------------------------- documents


def test_wiki_extractor_file(tmp_path: Path) -> None:
    path = write(tmp_path / "wiki_00", WIKI)  # no extension: detected by its first line
    stats = CorpusStats()
    docs = list(iter_documents(str(path), min_words=8, stats=stats))
    assert docs == [CATS, DOGS]
    assert stats == CorpusStats(files=1, documents=2, stubs_dropped=2, words=28)


@pytest.mark.parametrize(
    ("content", "line", "words"),
    [
        ("<doc id='1'>\nT\nbody\n", 1, "has no </doc>"),
        ("<doc id='1'>\nT\n<doc id='2'>\nT\n</doc>\n", 3, "inside the <doc> of line 1"),
        ("<doc id='1'>\nT\n</doc>\nstray text\n", 4, "outside <doc>"),
    ],
)
def test_wiki_extractor_broken(tmp_path: Path, content: str, line: int, words: str) -> None:
    path = write(tmp_path / "wiki_01", content)
    with pytest.raises(DataError) as err:
        list(iter_documents(str(path), min_words=0))
    assert (err.value.path, err.value.line) == (str(path), line) and words in str(err.value)


@pytest.mark.shared_data
def test_real_wikipedia_sample(shared_data: Path) -> None:
    path = shared_data / "wikipedia-en-sample" / "wiki_00"
    doc_lines = sum(line.startswith("<doc ") for line in path.read_text("utf-8").splitlines())
    stats = CorpusStats()
    docs = list(iter_documents(str(path), stats=stats))
    assert docs and min(len(d.split()) for d in docs) >= 20
    assert len(docs) < doc_lines and stats.stubs_dropped == doc_lines - len(docs)
    assert not any("<doc" in d or "</doc>" in d for d in docs)
    # the title line is dropped: "Jarred Shaw\n\nJarred Shaw (born ..." keeps only the body
    assert docs[0].startswith("Jarred Shaw (born September 28, 1990)")


def test_jsonl(tmp_path: Path) -> None:
    rows = [{"text": " first doc "}, {"text": ""}, {"body": "other field", "text": "second"}]
    path = jsonl(tmp_path / "c.jsonl", rows)
    write(path, path.read_text() + "\n\n")  # blank lines are skipped
    assert list(iter_documents(str(path))) == ["first doc", "second"]
    other = jsonl(tmp_path / "d.jsonl", [{"body": "other field", "text": 1}])
    assert list(iter_documents(str(other), text_field="body")) == ["other field"]


def test_jsonl_several_fields(tmp_path: Path) -> None:
    """``text_field=query,positive,negatives`` reads every text of a groups file, lists included, in order."""
    rows = [{"query": "q1", "positive": "p1", "negatives": ["n1", " ", "n2"]}, {"query": "q2", "positive": "p2",
                                                                                "negatives": []}]
    path = jsonl(tmp_path / "g.jsonl", rows)
    assert list(iter_documents(str(path), text_field="query,positive,negatives")) == ["q1", "p1", "n1", "n2", "q2",
                                                                                      "p2"]
    bad = jsonl(tmp_path / "b.jsonl", [{"query": "q", "negatives": ["n", 3]}])
    with pytest.raises(DataError) as err:
        list(iter_documents(str(bad), text_field="query,negatives"))
    assert "b.jsonl:1" in str(err.value) and "expected a string" in str(err.value)


@pytest.mark.parametrize(
    ("third", "field", "words"),
    [
        ('{"text": "unterminated', None, "malformed JSON"),
        ('["text"]', None, "expected a JSON object"),
        ('{"title": "no text"}', "text", "missing required field"),
        ('{"text": 7}', "text", "expected a string, got a number"),
    ],
)
def test_jsonl_bad_line(tmp_path: Path, third: str, field: str | None, words: str) -> None:
    path = write(tmp_path / "bad.jsonl", '{"text": "a"}\n\n' + third + "\n")
    with pytest.raises(DataError) as err:
        list(iter_documents(str(path)))
    message = str(err.value)
    assert "bad.jsonl:3" in message and words in message and err.value.field == field


def test_text_paragraphs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path / "book.txt", "\n  One line.\nTwo line.  \n\n\n\nThree.\n   \nFour.")
    assert list(iter_documents(str(path))) == ["One line.\nTwo line.", "Three.", "Four."]
    # a file with no blank lines is one document, cut so that it is never held whole
    write(path, "".join(f"sentence {i}.\n" for i in range(5)))
    monkeypatch.setattr(text_module, "_MAX_DOC_LINES", 2)
    docs = list(iter_documents(str(path)))
    assert docs == ["sentence 0.\nsentence 1.", "sentence 2.\nsentence 3.", "sentence 4."]


def test_comma_separated_specs(tmp_path: Path) -> None:
    a = write(tmp_path / "a.txt", "from a\n")
    b = jsonl(tmp_path / "b.jsonl", [{"text": "from b"}])
    stats = CorpusStats()
    docs = list(iter_documents(f"{b}, {a},", stats=stats))
    assert docs == ["from b", "from a"] and stats.files == 2


def test_folder_recursive_sorted(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    write(root / "b.txt", "b\n")
    write(root / "a" / "z.txt", "a/z\n")
    write(root / "a" / "y" / "x.jsonl", '{"text": "a/y/x"}\n')
    write(root / "a" / "wiki_00", WIKI)
    write(root / ".hidden.txt", "hidden\n")
    write(root / ".git" / "config", "hidden too\n")
    stats = CorpusStats()
    docs = list(iter_documents(str(root), min_words=8, stats=stats))
    assert docs == [CATS, DOGS, "a/y/x", "a/z", "b"]
    assert (stats.files, stats.stubs_dropped) == (4, 2)


@pytest.mark.parametrize(
    ("content", "line", "words"),
    [
        (b"", None, "holds no text"),
        (b" \n\t\n\n", None, "holds no text"),
        (b"\x00\x01\xff\xfe binary", 1, "binary file"),
        (b"text\nmore\n\x00\x00", 3, "binary file"),
        (b"fine\ncaf\xe9\n", 2, "not valid UTF-8"),
    ],
)
def test_unreadable_files(tmp_path: Path, content: bytes, line: int | None, words: str) -> None:
    path = write(tmp_path / "bad.txt", content)
    with pytest.raises(DataError) as err:
        list(iter_documents(str(path)))
    assert (err.value.path, err.value.line) == (str(path), line) and words in str(err.value)
    if line is not None:
        assert "UTF-8" in str(err.value.hint)


def test_binary_file_in_folder_is_named(tmp_path: Path) -> None:
    write(tmp_path / "c" / "a.txt", "good text\n")
    bad = write(tmp_path / "c" / "b.parquet", b"PAR1\x00\x00\x15")
    docs = iter_documents(str(tmp_path / "c"))
    assert next(docs) == "good text"
    with pytest.raises(DataError, match="b.parquet:1: holds NUL bytes") as err:
        next(docs)
    assert err.value.path == str(bad)


def test_no_documents_mentions_min_words(tmp_path: Path) -> None:
    path = write(tmp_path / "wiki_00", WIKI)
    with pytest.raises(DataError, match=r"holds no documents \(4 wiki stubs under min_words=20"):
        list(iter_documents(str(path)))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="the folder holds no files"):
        list(iter_documents(str(tmp_path / "empty")))
    with pytest.raises(ConfigError):
        list(iter_documents(str(path), min_words=-1))


def hub_repo(root: Path) -> Path:
    """A folder laid out like a hub dataset repo, with train and test split files."""
    jsonl(root / "train.jsonl", [{"text": "train one", "id": 1}, {"text": " "}, {"text": "two"}])
    jsonl(root / "test.jsonl", [{"text": "test one", "id": 1}])
    return root


def redirect_hub(monkeypatch: pytest.MonkeyPatch, names: dict[str, Path]) -> list[tuple]:
    """Serve hub names from local folders through the real ``datasets.load_dataset``."""
    import datasets

    real, calls = datasets.load_dataset, []

    def load(name: str, config: Any = None, **kwargs: Any) -> Any:
        calls.append((name, config, kwargs))
        return real(str(names[name]), config, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", load)
    return calls


def test_hub_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = redirect_hub(monkeypatch, {"someone/corpus": hub_repo(tmp_path / "repo")})
    stats = CorpusStats()
    assert list(iter_documents("someone/corpus", stats=stats)) == ["train one", "two"]
    assert calls == [("someone/corpus", None, {"split": "train", "streaming": True})]
    assert stats == CorpusStats(files=1, documents=2, stubs_dropped=0, words=3)
    assert list(iter_documents("someone/corpus", hub_split="test")) == ["test one"]
    with pytest.raises(DataError) as err:
        list(iter_documents("someone/corpus", text_field="body"))
    assert err.value.path == "someone/corpus" and err.value.field == "train[0].body"


def test_hub_parquet_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "repo" / "data").mkdir(parents=True)
    table = pa.table({"content": ["alpha beta", "gamma"], "n": [1, 2]})
    pq.write_table(table, tmp_path / "repo" / "data" / "train-00000-of-00001.parquet")
    redirect_hub(monkeypatch, {"someone/books": tmp_path / "repo"})
    docs = iter_documents("someone/books", text_field="content")
    assert list(docs) == ["alpha beta", "gamma"]


def test_hub_failure_is_one_data_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError(f"Couldn't reach '{args[0]}' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr("datasets.load_dataset", offline)
    for spec in ("someone/corpus", "no/such/corpus.txt"):
        with pytest.raises(DataError) as err:
            list(iter_documents(spec))
        message = str(err.value)
        assert message.startswith(f"could not load {spec!r} from the Hugging Face hub: ")
        assert "ConnectionError: Couldn't reach" in message and "pass a local path" in message


# ---------------------------------------------------------------------------- packing


def test_pack_blocks_by_hand(tokenizer: Any) -> None:
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    docs = ["the data file is open", "", "return a list", "sort the items by key and value"]
    blocks = list(pack_blocks(docs, tokenizer, 8))
    # stream: 5 tokens, sep, 3 tokens, sep, 7 tokens = 17 tokens -> 6 + 6 + 5
    assert blocks == [
        [cls_id, *ids(tokenizer, "the data file is open"), sep_id, sep_id],
        [cls_id, *ids(tokenizer, "return a list"), sep_id, *ids(tokenizer, "sort the"), sep_id],
        [cls_id, *ids(tokenizer, "items by key and value"), sep_id],
    ]


def test_pack_blocks_invariants(tokenizer: Any) -> None:
    docs = [" ".join(["the data", "file"] * (i % 7 + 1)) + " python" for i in range(40)]
    blocks = list(pack_blocks(docs, tokenizer, 16, batch_docs=7))
    assert all(b[0] == tokenizer.cls_token_id and b[-1] == tokenizer.sep_token_id for b in blocks)
    assert all(len(b) == 16 for b in blocks[:-1]) and 3 <= len(blocks[-1]) <= 16
    expected = ids(tokenizer, docs[0])
    for doc in docs[1:]:
        expected += [tokenizer.sep_token_id, *ids(tokenizer, doc)]
    assert [t for b in blocks for t in b[1:-1]] == expected
    assert list(pack_blocks(docs, tokenizer, 16, batch_docs=1)) == blocks
    # a stream that is an exact multiple of the block content leaves no empty last block
    six = "the data file is open list"
    only = [tokenizer.cls_token_id, *ids(tokenizer, six), tokenizer.sep_token_id]
    assert list(pack_blocks([six], tokenizer, 8)) == [only]


def test_pack_blocks_config_errors(tokenizer: Any) -> None:
    with pytest.raises(ConfigError, match="block_size must be at least 8"):
        pack_blocks(["x"], tokenizer, 7)
    with pytest.raises(ConfigError, match="no cls or sep token"):
        pack_blocks(["x"], SimpleNamespace(cls_token_id=None, sep_token_id=3), 16)


# ---------------------------------------------------------------------------- block store


def corpus(root: Path) -> str:
    write(root / "one.txt", "the data file is open\n\nreturn a list of items\n")
    jsonl(root / "two.jsonl", [{"text": f"sort the items by key {i}"} for i in range(30)])
    return f"{root / 'one.txt'},{root / 'two.jsonl'}"


def test_build_block_store_and_cache(tmp_path: Path, tokenizer: Any) -> None:
    specs, cache = corpus(tmp_path / "c"), tmp_path / "cache"
    store, info = build_block_store(specs, tokenizer, 16, cache, show_progress=False)
    expected = list(pack_blocks(iter_documents(specs), tokenizer, 16))
    assert list(store) == expected and len(store) == len(expected) > 5
    assert info == {
        "blocks": len(expected),
        "tokens": sum(map(len, expected)),
        "documents": 32,
        "stubs_dropped": 0,
        "files": 2,
        "cached": False,
        "path": str(store.path),
    }
    assert store.path.name.startswith("blocks-") and store.block_size == 16
    again, info2 = build_block_store(specs, tokenizer, 16, cache, show_progress=False)
    assert info2 == {**info, "cached": True} and list(again) == expected
    assert list(BlockStore.open(store.path.with_suffix(".json"))) == expected

    other, info3 = build_block_store(specs, tokenizer, 32, cache, show_progress=False)
    assert other.path != store.path and not info3["cached"] and other.block_size == 32
    capped, info4 = build_block_store(specs, tokenizer, 16, cache, max_blocks=3, show_progress=False)
    assert list(capped) == expected[:3] and info4["blocks"] == 3 and capped.path != store.path

    # a changed file is a different corpus: its fingerprint changes
    write(tmp_path / "c" / "one.txt", "the data file is open\n\nreturn a list of items too\n")
    changed, info5 = build_block_store(specs, tokenizer, 16, cache, show_progress=False)
    assert changed.path != store.path and not info5["cached"]


def test_block_store_views(tmp_path: Path, tokenizer: Any) -> None:
    specs = corpus(tmp_path / "c")
    store, _ = build_block_store(specs, tokenizer, 16, tmp_path / "cache", show_progress=False)
    blocks = list(pack_blocks(iter_documents(specs), tokenizer, 16))
    assert store.lengths() == [len(b) for b in blocks] and store.lengths()[-1] < 16
    assert store[-1] == blocks[-1] and store[0] == blocks[0]
    with pytest.raises(IndexError):
        store[len(blocks)]
    view = store.subset([3, 0, -1])
    assert list(view) == [blocks[3], blocks[0], blocks[-1]] and view.lengths()[2] < 16
    assert view.subset(range(1, 3))[0] == blocks[0] and view[-1] == blocks[-1]
    assert list(store[2:6:2]) == [blocks[2], blocks[4]] and len(store[::-1]) == len(blocks)
    assert isinstance(store[1:], BlockStore) and list(store[1:][::2]) == blocks[1::2]
    assert view._rows is store._rows  # a view shares the memory map, no copy
    unpickled = pickle.loads(pickle.dumps(view))
    assert list(unpickled) == list(view) and len(pickle.dumps(store)) < 1000


def test_interrupted_build_is_not_reused(tmp_path: Path, tokenizer: Any) -> None:
    specs, cache = corpus(tmp_path / "c"), tmp_path / "cache"
    store, _ = build_block_store(specs, tokenizer, 16, cache, show_progress=False)
    expected, path = list(store), store.path
    del store
    # what a kill leaves behind: a stray temp file, and a .bin cut short under its meta
    write(cache / f".{path.name}.x1y2.tmp", b"\xff" * 100)
    with path.open("r+b") as fh:
        fh.truncate(path.stat().st_size - 64)
    with pytest.raises(DataError, match="holds .* bytes, but"):
        BlockStore.open(path)
    rebuilt, info = build_block_store(specs, tokenizer, 16, cache, show_progress=False)
    assert not info["cached"] and list(rebuilt) == expected
    # a .bin without its meta (killed between the two renames) is not a store either
    path.with_suffix(".json").unlink()
    rebuilt, info = build_block_store(specs, tokenizer, 16, cache, show_progress=False)
    assert not info["cached"] and list(rebuilt) == expected


def test_failed_build_leaves_nothing(tmp_path: Path, tokenizer: Any) -> None:
    write(tmp_path / "c" / "a.txt", "the data file\n")
    write(tmp_path / "c" / "b.txt", b"binary \x00")
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="b.txt:1"):
        build_block_store(str(tmp_path / "c"), tokenizer, 16, cache, show_progress=False)
    assert os.listdir(cache) == []
