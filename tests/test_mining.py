import json
import random

from distilrank.config import MineConfig
from distilrank.data.readers import read_beir, read_training_file
from distilrank.mining.negatives import mine_groups, mine_to_file, select_negatives


def test_select_negatives_respects_rank_range_and_positives():
    ranked = [f"d{i}" for i in range(1, 21)]
    cfg = MineConfig(num_negatives=3, rank_min=2, rank_max=6, sampling="top")
    # positives d1 and d3 removed first: pool = d2 d4 d5 d6 d7 d8 ..., ranks 2..6 -> d4..d8
    assert select_negatives(ranked, {"d1", "d3"}, cfg, random.Random(0)) == ["d4", "d5", "d6"]
    rand = MineConfig(num_negatives=3, rank_min=2, rank_max=6, sampling="random")
    got = select_negatives(ranked, {"d1", "d3"}, rand, random.Random(0))
    assert len(got) == 3 and set(got) <= {"d4", "d5", "d6", "d7", "d8"}


def test_mined_groups_are_valid_training_data_and_deterministic(demo_beir, tmp_path):
    ds = read_beir(demo_beir, "dev")
    cfg = MineConfig(data=str(demo_beir), split="dev", output=str(tmp_path / "g.jsonl"), num_negatives=4, rank_max=20)
    summary = mine_to_file(ds, cfg)
    rows = [json.loads(x) for x in (tmp_path / "g.jsonl").read_text().splitlines()]
    assert summary.groups == len(rows) > 0
    for r in rows:
        assert r["positive_id"] not in r["negative_ids"]
        assert len(r["negatives"]) <= 4
        assert ds.qrels[r["query_id"]][r["positive_id"]] > 0
    assert rows == mine_groups(ds, cfg)[0]
    groups = read_training_file(tmp_path / "g.jsonl")
    assert len(groups) == len(rows)
    short = sum(summary.short.values())
    assert short == sum(1 for r in rows if len(r["negatives"]) < 4) + (summary.queries - len(rows))
