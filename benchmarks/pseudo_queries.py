"""Inverse-cloze pseudo-queries from a groups file's own passages (RESULTS.md, issue 19 session 15, candidate S1).

    python benchmarks/pseudo_queries.py GROUPS.jsonl OUT.jsonl SEED

For each group, 2 of its passages drawn at random (seeded); from each, one random sentence cut to its first 16
words (a one-sentence passage: a random 12-word window) is a pseudo-query whose candidates are the group's passages
(the source passage as "positive", kept whole). The output is a groups jsonl for `distilrank label`.
"""
import json
import random
import re
import sys

src, out, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(seed)
with open(src, encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
res = []
for r in rows:
    docs = [r["positive"], *r["negatives"]]
    for i in rng.sample(range(len(docs)), 2):
        sents = [s for s in re.split(r"(?<=[.!?])\s+", docs[i].strip()) if len(s.split()) >= 3]
        if len(sents) > 1:
            q = " ".join(rng.choice(sents).split()[:16])
        else:
            w = docs[i].split()
            a = rng.randrange(max(1, len(w) - 11))
            q = " ".join(w[a:a + 12])
        res.append({"query": q, "positive": docs[i], "negatives": [d for j, d in enumerate(docs) if j != i]})
with open(out, "w", encoding="utf-8") as f:
    for x in res:
        f.write(json.dumps(x) + "\n")
print(len(res), "pseudo groups; e.g.", [x["query"] for x in res[:4]])
