"""Listwise teachers: permutation parsing and repairs, the sliding-window merge against a synthetic teacher whose
true order is known, ``label mode=listwise`` with a tiny random Qwen3, and published rankings read as they are.
vLLM (``backend=vllm``) is not installed here: only its missing-package error is tested."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from tiny_llm import make_tiny_causal_lm

from distilrank import ConfigError
from distilrank.config import LabelConfig
from distilrank.labeling import run_label
from distilrank.models.listwise import SlidingWindows, parse_permutation, window_prompt


@pytest.mark.parametrize("answer, order, repairs", [
    ("[2] > [3] > [1]", [1, 2, 0], {}),
    ("[2] > [2] > [1] > [3]", [1, 0, 2], {"repeated": 1}),
    ("[3] > [7] > [1]", [2, 0, 1], {"out_of_range": 1, "missing": 1}),
    ("2 > 1", [1, 0, 2], {"missing": 1}),
    ("I think [ 3 ] is best", [2, 0, 1], {"missing": 2}),
    ("no idea", [0, 1, 2], {"unparsable": 1}),
])
def test_parse_permutation_repairs_and_counts(answer, order, repairs) -> None:
    got, fixed = parse_permutation(answer, 3)
    assert got == order and sorted(got) == [0, 1, 2]
    counts = {k: v for k, v in fixed.as_dict().items() if k != "windows" and v}
    assert counts == repairs and fixed.windows == 1


def perfect_teacher(relevance: dict[str, float]):
    """A listwise teacher that knows each passage's true relevance and answers the exact permutation."""

    def generate(prompts: list[str]) -> list[str]:
        answers = []
        for prompt in prompts:
            passages = re.findall(r"^\[(\d+)\] (\S+)$", prompt, flags=re.M)
            best = sorted(passages, key=lambda p: -relevance[p[1]])
            answers.append(" > ".join(f"[{k}]" for k, _ in best))
        return answers

    return generate


def test_sliding_windows_bring_the_true_top_to_the_top() -> None:
    rng = random.Random(0)
    n, window, stride = 45, 20, 10
    docs = [f"doc{i}" for i in range(n)]
    relevance = {d: rng.random() for d in docs}
    rng.shuffle(docs)
    windows = SlidingWindows(window, stride)
    assert windows.starts(n) == [25, 15, 5, 0]
    prompt = lambda q, ps: window_prompt(q, ps)[1]["content"]  # noqa: E731
    order = windows.rank(["q"], [docs], perfect_teacher(relevance), prompt)[0]
    ranked = [docs[i] for i in order]
    truth = sorted(docs, key=lambda d: -relevance[d])
    assert sorted(order) == list(range(n))
    assert ranked[: window - stride] == truth[: window - stride]  # one pass: the best window - stride are exact
    assert windows.repairs.windows == 4 and windows.repairs.missing == 0
    # a list that fits one window comes back fully sorted; several queries are ranked in the same calls
    short = docs[:15]
    calls = []

    def counting(prompts):
        calls.append(len(prompts))
        return perfect_teacher(relevance)(prompts)

    both = SlidingWindows(window, stride).rank(["a", "b"], [short, docs], counting, prompt)
    assert [short[i] for i in both[0]] == sorted(short, key=lambda d: -relevance[d])
    assert both[1] == order and calls == [2, 1, 1, 1]


@pytest.fixture(scope="module")
def long_context_qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_causal_lm(tmp_path_factory.mktemp("tiny-qwen-long"), "qwen3", context=4096)


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_label_listwise_with_a_causal_lm_writes_one_ranking_per_query(long_context_qwen, groups_file, tmp_path):
    out = tmp_path / "ranks.jsonl"
    summary = run_label(LabelConfig(teacher=str(long_context_qwen), data=str(groups_file), output=str(out),
                                    mode="listwise", window=3, stride=2, max_queries=3, batch_size=2))
    rows = _rows(out)
    groups = [json.loads(x) for x in groups_file.read_text().splitlines()][:3]
    assert summary["queries"] == 3 and summary["repairs"]["windows"] == 3 * 2  # 4 documents: starts [1, 0]
    for g in groups:
        mine = [r for r in rows if r["query"] == g["query"]]
        assert sorted(r["contents"] for r in mine) == sorted([g["positive"], *g["negatives"]])
        assert [r["rank"] for r in mine] == [1, 2, 3, 4] and [r["score"] for r in mine] == [-1.0, -2.0, -3.0, -4.0]
    # a random model's answers need mending: every repair is counted, and the report file says so
    report = json.loads((tmp_path / "ranks.jsonl.report.json").read_text())
    assert report["repairs"] == summary["repairs"]


def test_listwise_rows_train_with_targets_ranks(tiny_model, tmp_path) -> None:
    from distilrank import TrainConfig
    from distilrank.training.run import run_training

    rows = [{"query": f"q{k}", "contents": f"doc {d} of {k}", "rank": d + 1, "score": -(d + 1.0)}
            for k in range(4) for d in range(4)]
    path = tmp_path / "ranks.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    metrics = run_training(TrainConfig(train_file=str(path), model=str(tiny_model), output_dir=str(tmp_path / "r"),
                                       loss="adr_mse", targets="ranks", max_steps=2, batch_size=2, group_size=4))
    assert metrics["train"]["steps"] == 2


def test_a_window_larger_than_the_context_is_one_error_and_writes_nothing(groups_file, tmp_path) -> None:
    small = make_tiny_causal_lm(tmp_path / "small", "qwen3", context=256)
    out = tmp_path / "out" / "ranks.jsonl"
    out.parent.mkdir()
    with pytest.raises(ConfigError, match=r"more than the model's context \(256 tokens\); lower window"):
        run_label(LabelConfig(teacher=str(small), data=str(groups_file), output=str(out), mode="listwise",
                              window=4, stride=2, max_queries=2))
    with pytest.raises(ConfigError, match=r"max_length=512 is larger than the context .* \(256 tokens\)"):
        run_label(LabelConfig(teacher=str(small), data=str(groups_file), output=str(out), mode="listwise",
                              window=4, stride=2, max_queries=2, max_length=512))
    assert list(out.parent.iterdir()) == []


def test_listwise_refuses_other_teachers_and_bad_windows(tiny_model, groups_file, tmp_path) -> None:
    with pytest.raises(ConfigError, match="mode=listwise asks a causal LM for permutations"):
        run_label(LabelConfig(teacher=str(tiny_model), data=str(groups_file), output=str(tmp_path / "a.jsonl"),
                              mode="listwise"))
    with pytest.raises(ConfigError, match="stride in"):
        LabelConfig(teacher="x", data="y", mode="listwise", window=10, stride=20)
    with pytest.raises(ConfigError, match="ensembles"):
        LabelConfig(teacher="x,y", data="y", mode="listwise")


def test_backend_vllm_without_vllm_is_a_clear_error(long_context_qwen, groups_file, tmp_path) -> None:
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
        pytest.skip("vllm is installed")
    except ImportError:
        pass
    with pytest.raises(ConfigError, match="backend=vllm needs the vllm package"):
        run_label(LabelConfig(teacher=str(long_context_qwen), data=str(groups_file), output=str(tmp_path / "v"),
                              mode="listwise", backend="vllm", max_queries=1))


def test_published_rankings_rank_llm_json_and_trec_run(tmp_path) -> None:
    hits = [{"qid": "q1", "docid": f"d{k}", "content": f"passage {k}", "rank": p + 1, "score": 10.0 - p}
            for p, k in enumerate((2, 0, 1))]
    ranked = tmp_path / "rankzephyr.json"
    ranked.write_text(json.dumps([{"query": "sort a list", "hits": hits}]))
    out = tmp_path / "a.jsonl"
    run_label(LabelConfig(teacher=str(ranked), data="unused", output=str(out), mode="listwise"))
    rows = _rows(out)
    assert [(r["doc_id"], r["rank"], r["contents"]) for r in rows] == [
        ("d2", 1, "passage 2"), ("d0", 2, "passage 0"), ("d1", 3, "passage 1")]
    # a TREC run (e.g. an LLM's published run) over a BEIR folder: its order, texts from the corpus
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{k}", "title": "", "text": f"text {k}"}) + "\n"
                                               for k in range(6)))
    (beir / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "sort a list"}) + "\n")
    (beir / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    doc_ids = ["d4", "d1", "d5", "d0", "d2"]
    run = tmp_path / "teacher.run"
    run.write_text("".join(f"q1 Q0 {d} {k + 1} {5.0 - k} rankzephyr\n" for k, d in enumerate(doc_ids)))
    out2 = tmp_path / "b.jsonl"
    run_label(LabelConfig(teacher=str(run), data=str(beir), output=str(out2), mode="listwise", top_k=4))
    rows2 = _rows(out2)
    assert [(r["query_id"], r["doc_id"], r["rank"]) for r in rows2] == [("q1", d, k + 1)
                                                                        for k, d in enumerate(doc_ids[:4])]
    assert rows2[0]["contents"] == "text 4"


def _two_query_beir(tmp_path: Path) -> Path:
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{k}", "title": "", "text": f"text {k}"}) + "\n"
                                               for k in range(6)))
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": f"query {q}"}) + "\n"
                                                for q in ("q1", "q2")))
    (beir / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td0\t1\n")
    return beir


def test_published_runs_are_read_through_datasets(tmp_path, monkeypatch) -> None:
    """A remote run (URL or hf:// path, e.g. Rank-DistiLLM's on Zenodo) goes through ``datasets``' text
    builder with the local reader's checks; tested on a local file given to the same loader."""
    from distilrank.data import hub
    from distilrank.data.readers import read_trec_run
    from distilrank.errors import DataError

    run = tmp_path / "rankzephyr.run"
    run.write_text("q1 Q0 d4 1 5.0 rz\nq1 Q0 d1 2 4.0 rz\n\nq2 Q0 d0 1 3.0 rz\n")
    assert hub.load_run_hub(str(run)) == read_trec_run(run)
    bad = tmp_path / "bad.run"
    bad.write_text("q1 Q0 d4 1 5.0 rz\nq1 Q0 d1 2 high rz\n")
    with pytest.raises(DataError, match=r"bad\.run:2: field 'score'"):
        hub.load_run_hub(str(bad))
    assert hub.is_remote(hub.RANK_DISTILLM + "x.run") and hub.is_remote("hf://datasets/o/n/x.run")
    assert not hub.is_remote(str(run))

    # label mode=listwise and eval first_stage= route a URL teacher to that loader (no network here)
    seen = []

    def fake(spec, cache_dir=None):
        seen.append(spec)
        return read_trec_run(run)

    monkeypatch.setattr(hub, "load_run_hub", fake)
    beir = _two_query_beir(tmp_path)
    url = hub.RANK_DISTILLM + "__rankzephyr-colbert-10000-sampled-100__msmarco-passage-train-judged.run"
    out = tmp_path / "ranked.jsonl"
    run_label(LabelConfig(teacher=url, data=str(beir), output=str(out), mode="listwise"))
    assert seen == [url]
    assert [(r["query_id"], r["doc_id"], r["rank"]) for r in _rows(out)] == [
        ("q1", "d4", 1), ("q1", "d1", 2), ("q2", "d0", 1)]


def test_an_unreachable_published_run_is_one_clear_error(tmp_path, monkeypatch) -> None:
    from distilrank.errors import DataError

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "ranked.jsonl"
    with pytest.raises(DataError, match="could not load 'hf://datasets/nobody/none/x.run' through datasets"):
        run_label(LabelConfig(teacher="hf://datasets/nobody/none/x.run", data=str(_two_query_beir(tmp_path)),
                              output=str(out),
                              mode="listwise"))
    assert not out.exists()
