"""``distilrank label``: rows equal the teacher's own scores, ids and order, shards, resuming, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from distilrank.cli import main
from distilrank.config import LabelConfig
from distilrank.errors import ConfigError, DataError
from distilrank.labeling import LabelQuery, Pairs, run_label, shard_bounds, shard_path
from distilrank.models.cross_encoder import CrossEncoder
from distilrank.models.seq2seq import Seq2SeqReranker


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny import make_tiny_t5

    return make_tiny_t5(tmp_path_factory.mktemp("tiny-t5"))


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def group_pairs(groups_file: Path) -> list[tuple[str, str]]:
    """The pairs the labeller must produce for a groups file of distinct queries: positive first."""
    pairs = []
    for row in read_rows(groups_file):
        pairs += [(row["query"], d) for d in [row["positive"], *row["negatives"]]]
    return pairs


def label(teacher: Path, data: Path, output: Path, **kw) -> dict:
    return run_label(LabelConfig(teacher=str(teacher), data=str(data), output=str(output), **kw))


def leftovers(output: Path) -> list[str]:
    return sorted(p.name for p in output.parent.iterdir() if p.name.startswith(output.stem))


# ---------------------------------------------------------------------------- rows equal the teacher


def test_cross_encoder_rows_equal_its_scores(tiny_model: Path, groups_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "labels.jsonl"
    summary = label(tiny_model, groups_file, out, batch_size=8, chunk_size=40)
    rows, pairs = read_rows(out), group_pairs(groups_file)
    assert [(r["query"], r["contents"]) for r in rows] == pairs
    assert all(set(r) == {"query", "contents", "score"} for r in rows)  # no ids: the input has none
    expected = CrossEncoder.from_pretrained(str(tiny_model)).score(pairs, batch_size=8)
    assert [r["score"] for r in rows] == pytest.approx(expected, abs=1e-5)
    assert len(set(r["score"] for r in rows)) > 1  # a real, varying teacher
    assert summary["pairs"] == 96 and summary["queries"] == 24 and summary["resumed_from"] == 0
    assert summary["output"] == str(out) and summary["pairs_per_second"] > 0
    assert leftovers(out) == ["labels.jsonl"]  # partial and sidecar are gone


def test_seq2seq_rows_equal_its_logits_in_inranker_format(tiny_t5: Path, groups_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "t5.jsonl"
    label(tiny_t5, groups_file, out, batch_size=16, chunk_size=50, max_length=64)
    rows, pairs = read_rows(out), group_pairs(groups_file)
    assert [(r["query"], r["contents"]) for r in rows] == pairs
    # InRanker's custom-dataset format exactly
    assert all(set(r) == {"query", "contents", "true_logit", "false_logit"} for r in rows)
    teacher = Seq2SeqReranker.from_pretrained(str(tiny_t5), max_length=64)
    expected = teacher.score_logits(pairs, batch_size=16)
    got = [(r["false_logit"], r["true_logit"]) for r in rows]
    for (f, t), (ef, et) in zip(got, expected, strict=True):
        assert f == pytest.approx(ef, abs=1e-5) and t == pytest.approx(et, abs=1e-5)


def test_duplicate_pairs_merge_under_their_query(tiny_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "triplets.jsonl"
    triplets = [("q one", "pos a", "neg b"), ("q two", "pos c", "neg d"), ("q one", "pos a", "neg e")]
    data.write_text("".join(json.dumps({"query": q, "positive": p, "negative": n}) + "\n" for q, p, n in triplets))
    out = tmp_path / "labels.jsonl"
    label(tiny_model, data, out)
    got = [(r["query"], r["contents"]) for r in read_rows(out)]
    # a query's pairs are contiguous; the repeated (q one, pos a) is labelled once
    assert got == [("q one", "pos a"), ("q one", "neg b"), ("q one", "neg e"), ("q two", "pos c"), ("q two", "neg d")]


def test_beir_rows_follow_the_first_stage_with_ids(tiny_model: Path, demo_beir: Path, tmp_path: Path) -> None:
    from distilrank.data.readers import read_beir
    from distilrank.evaluation.run import first_stage_run

    out = tmp_path / "beir.jsonl"
    summary = label(tiny_model, demo_beir, out, split="train", top_k=3, max_queries=5)
    dataset = read_beir(demo_beir, "train")
    run = first_stage_run(dataset, None, 3, 5)
    expected = [(q, d) for q, hits in run.items() for d, _ in hits]
    rows = read_rows(out)
    assert [(r["query_id"], r["doc_id"]) for r in rows] == expected
    assert all(r["query"] == dataset.queries[r["query_id"]].text for r in rows)
    assert all(r["contents"] == dataset.corpus[r["doc_id"]].contents for r in rows)
    assert list(rows[0]) == ["query_id", "query", "doc_id", "contents", "score"]
    assert summary["queries"] == 5 and summary["pairs"] == len(expected) == 15


def test_run_file_first_stage_skips_queries_it_lacks(tiny_model: Path, demo_beir: Path, tmp_path: Path) -> None:
    from distilrank.data.readers import read_beir

    dataset = read_beir(demo_beir, "train")
    qids = dataset.judged_queries()[:3]
    docs = list(dataset.corpus)[:2]
    run_file = tmp_path / "first.run"
    run_file.write_text(f"{qids[1]} Q0 {docs[0]} 1 9.0 t\n{qids[1]} Q0 {docs[1]} 2 8.0 t\n")
    out = tmp_path / "labels.jsonl"
    label(tiny_model, demo_beir, out, split="train", first_stage=str(run_file), max_queries=3)
    assert [(r["query_id"], r["doc_id"]) for r in read_rows(out)] == [(qids[1], docs[0]), (qids[1], docs[1])]


# ---------------------------------------------------------------------------- shards


def test_shard_bounds_and_paths() -> None:
    assert [shard_bounds(5, i, 3) for i in range(3)] == [(0, 2), (2, 4), (4, 5)]
    assert [shard_bounds(2, i, 4) for i in range(4)] == [(0, 1), (1, 2), (2, 2), (2, 2)]
    assert shard_path("out/labels.jsonl", 2, 4) == Path("out/labels.2-of-4.jsonl")
    assert shard_path("labels", 0, 2) == Path("labels.0-of-2")
    assert shard_path("labels.jsonl", 0, 1) == Path("labels.jsonl")


def test_pairs_locate_crosses_queries() -> None:
    pairs = Pairs([LabelQuery("a", ("x", "y")), LabelQuery("b", ("z",)), LabelQuery("c", ("u", "v", "w"))])
    assert len(pairs) == 6
    assert list(pairs.locate(1, 5)) == [(0, 1), (1, 0), (2, 0), (2, 1)]


def test_shards_concatenate_to_the_whole(tiny_model: Path, groups_file: Path, tmp_path: Path) -> None:
    # shard 0 holds 12 queries x 4 = 48 pairs, a multiple of the chunk: every chunk (one batch) is
    # the same in both runs, so the bytes must be equal
    whole = tmp_path / "all" / "labels.jsonl"
    label(tiny_model, groups_file, whole, batch_size=8, chunk_size=8)
    parts = tmp_path / "parts" / "labels.jsonl"
    for i in range(2):
        summary = label(tiny_model, groups_file, parts, batch_size=8, chunk_size=8, shard=f"{i}/2")
        assert summary["queries"] == 12 and summary["shard"] == f"{i}/2"
    files = [tmp_path / "parts" / f"labels.{i}-of-2.jsonl" for i in range(2)]
    assert sorted(p.name for p in (tmp_path / "parts").iterdir()) == [f.name for f in files]
    assert b"".join(f.read_bytes() for f in files) == whole.read_bytes()
    queries = [{r["query"] for r in read_rows(f)} for f in files]
    assert not queries[0] & queries[1]  # no query's group straddles two shards


# ---------------------------------------------------------------------------- resuming


def test_resume_after_a_crash_equals_an_uninterrupted_run(
    tiny_model: Path, groups_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = tmp_path / "ref.jsonl"
    label(tiny_model, groups_file, reference, batch_size=10, chunk_size=10)
    real_score, calls = CrossEncoder.score, []

    def crash_on_third_chunk(self, pairs, **kw):
        calls.append(len(pairs))
        if len(calls) == 3:
            raise RuntimeError("killed")
        return real_score(self, pairs, **kw)

    monkeypatch.setattr(CrossEncoder, "score", crash_on_third_chunk)
    out = tmp_path / "labels.jsonl"
    with pytest.raises(RuntimeError, match="killed"):
        label(tiny_model, groups_file, out, batch_size=10, chunk_size=10)
    partial = tmp_path / "labels.jsonl.partial"
    assert not out.exists() and len(read_rows(partial)) == 20
    with partial.open("a") as fh:  # a kill in the middle of a line
        fh.write('{"query": "half a ro')
    monkeypatch.setattr(CrossEncoder, "score", real_score)
    summary = label(tiny_model, groups_file, out, batch_size=10, chunk_size=10)
    assert summary["resumed_from"] == 20 and summary["pairs"] == 96
    assert out.read_bytes() == reference.read_bytes()
    assert leftovers(out) == ["labels.jsonl"]


SLOW_LABEL = """
import sys, time
from distilrank.models.cross_encoder import CrossEncoder
from distilrank.cli import main

real = CrossEncoder.score
def slow(self, pairs, **kw):  # a slow teacher, so the test can kill it mid-run
    time.sleep(0.15)
    return real(self, pairs, **kw)
CrossEncoder.score = slow
sys.exit(main(["label"] + sys.argv[1:]))
"""


def test_resume_after_sigkill_equals_an_uninterrupted_run(tiny_model: Path, groups_file: Path, tmp_path: Path) -> None:
    # a chunk is one batch and one small write, so a kill leaves whole chunks and the resumed run
    # batches every pair as the uninterrupted run does: the bytes must be equal
    args = [f"teacher={tiny_model}", f"data={groups_file}", "batch_size=8", "chunk_size=8"]
    reference = tmp_path / "ref.jsonl"
    assert main(["label", *args, f"output={reference}"]) == 0
    out = tmp_path / "labels.jsonl"
    partial = tmp_path / "labels.jsonl.partial"
    script = tmp_path / "slow_label.py"
    script.write_text(textwrap.dedent(SLOW_LABEL))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, str(script), *args, f"output={out}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (partial.exists() and partial.read_bytes().count(b"\n") >= 8):
            assert proc.poll() is None, "the labelling process ended before it could be killed"
            assert time.monotonic() < deadline, "the labelling process wrote nothing in 60 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = partial.read_bytes().count(b"\n")
    assert not out.exists() and 8 <= done < 96 and done % 8 == 0
    summary = run_label(LabelConfig(teacher=str(tiny_model), data=str(groups_file), output=str(out),
                                    batch_size=8, chunk_size=8))
    assert summary["resumed_from"] == done
    assert out.read_bytes() == reference.read_bytes()


def test_partial_of_another_job_is_refused(tiny_model: Path, groups_file: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    real_score = CrossEncoder.score

    def crash_on_second_chunk(self, pairs, **kw):
        if crash_on_second_chunk.calls == 1:
            raise RuntimeError("killed")
        crash_on_second_chunk.calls += 1
        return real_score(self, pairs, **kw)

    crash_on_second_chunk.calls = 0
    monkeypatch.setattr(CrossEncoder, "score", crash_on_second_chunk)
    out = tmp_path / "labels.jsonl"
    with pytest.raises(RuntimeError):
        label(tiny_model, groups_file, out, chunk_size=10)
    monkeypatch.setattr(CrossEncoder, "score", real_score)
    with pytest.raises(ConfigError, match=r"another labelling job \(max_length differ\).*delete"):
        label(tiny_model, groups_file, out, chunk_size=10, max_length=64)
    (tmp_path / "labels.jsonl.partial.json").unlink()
    with pytest.raises(ConfigError, match="job description .* is missing"):
        label(tiny_model, groups_file, out, chunk_size=10)
    assert not out.exists()


# ---------------------------------------------------------------------------- bad input


def test_existing_output_is_not_overwritten(tiny_model: Path, groups_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "labels.jsonl"
    out.write_text("mine\n")
    with pytest.raises(ConfigError, match="already exists"):
        label(tiny_model, groups_file, out)
    assert out.read_text() == "mine\n"


@pytest.mark.parametrize(("content", "match"), [
    ("", "has no training examples"),
    ('{"query": "q", "positive": "p", "negatives": ["n"]}\n{"query": "q2", "positive": "p", "negatives": []}\n',
     r"bad\.jsonl:2: field 'negatives'"),
    ('{"query": " ", "positive": "p", "negative": "n"}\n', r"bad\.jsonl:1: field 'query': is empty"),
    ('{"query": "q", "positive": "p", "negative": ""}\n', r"bad\.jsonl:1: field 'negative': is empty"),
])
def test_bad_input_files(tiny_model: Path, tmp_path: Path, content: str, match: str) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text(content)
    out = tmp_path / "out" / "labels.jsonl"
    with pytest.raises(DataError, match=match):
        label(tiny_model, data, out)
    assert not out.parent.exists()  # nothing written at all


def test_nan_from_the_teacher_names_the_pair(tiny_model: Path, groups_file: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    real_score = CrossEncoder.score

    def nan_at_sixth(self, pairs, **kw):
        scores = real_score(self, pairs, **kw)
        scores[5] = float("nan")  # query 1 (4 documents each), document 1
        return scores

    monkeypatch.setattr(CrossEncoder, "score", nan_at_sixth)
    out = tmp_path / "labels.jsonl"
    with pytest.raises(DataError, match=r"returned nan as score for query 1 .*, document 1.*check the teacher"):
        label(tiny_model, groups_file, out)
    assert not out.exists()


def test_inf_logit_from_a_seq2seq_teacher(tiny_t5: Path, groups_file: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Seq2SeqReranker, "score_logits",
                        lambda self, pairs, **kw: [(0.0, float("inf"))] * len(pairs))
    out = tmp_path / "labels.jsonl"
    with pytest.raises(DataError, match=r"returned inf as true_logit for query 0 .*, document 0"):
        label(tiny_t5, groups_file, out, max_length=64)
    assert not out.exists()


def test_teacher_without_true_false_tokens(groups_file: Path, tmp_path: Path) -> None:
    from tiny import make_tiny_t5

    teacher = make_tiny_t5(tmp_path / "no-true-false", true_false=False)
    out = tmp_path / "out" / "labels.jsonl"
    with pytest.raises(ConfigError, match="lacks single 'true'/'false' tokens"):
        label(teacher, groups_file, out)
    assert not out.parent.exists()  # no partial, no sidecar


# ---------------------------------------------------------------------------- command line


def test_cli_label(tiny_model: Path, groups_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "labels.jsonl"
    assert main(["label", f"teacher={tiny_model}", f"data={groups_file}", f"output={out}", "shard=1/3"]) == 0
    assert len(read_rows(tmp_path / "labels.1-of-3.jsonl")) == 32
    assert "labelled 32 pairs of 8 queries" in capsys.readouterr().out
    assert main(["label", f"teacher={tiny_model}", f"data={tmp_path / 'missing.jsonl'}", f"output={out}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("distilrank label: error: ") and "missing.jsonl" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
