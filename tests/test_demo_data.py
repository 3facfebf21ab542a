from distilrank.data.demo import build_demo_dataset, fingerprint, write_beir
from distilrank.data.readers import read_beir
from distilrank.evaluation.ranking import evaluate_reranking
from distilrank.evaluation.run import first_stage_run


def test_demo_dataset_is_a_real_retrieval_problem(demo_beir):
    test = read_beir(demo_beir, "test")
    train = read_beir(demo_beir, "train")
    assert len(test.corpus) >= 2000
    assert len(test.queries) == 250 and len(train.queries) > 1000
    assert not set(test.queries) & set(train.queries)
    report = evaluate_reranking(test, first_stage_run(test, None, 100), None, 100)
    assert 0.3 <= report.first_stage["nDCG@10"] <= 0.85


def test_demo_dataset_is_deterministic(demo_beir, tmp_path):
    again = write_beir(build_demo_dataset(seed=13), tmp_path / "again")
    assert fingerprint(again) == fingerprint(demo_beir)
    other = write_beir(build_demo_dataset(seed=14), tmp_path / "other")
    assert fingerprint(other) != fingerprint(demo_beir)


def test_parsing_in_processes_gives_the_same_dataset():
    """``workers`` > 1 (used for big source trees) changes nothing but the speed; any tree works as a source."""
    import email
    from pathlib import Path

    from distilrank.data.demo import DemoSizes

    root = Path(email.__file__).parent
    one = build_demo_dataset(seed=3, sizes=DemoSizes(test=0, dev=0), stdlib=root)["train"]
    two = build_demo_dataset(seed=3, sizes=DemoSizes(test=0, dev=0), stdlib=root, workers=2)["train"]
    assert len(one.queries) >= 20  # a real tree with real pairs, so the comparison can fail
    assert one.queries == two.queries and one.qrels == two.qrels and one.corpus == two.corpus
