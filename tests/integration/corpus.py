"""A small generated review corpus with a learnable signal, for whole-job tests.

Each row is filler characters around one sentiment word; a seed RNN learns it in a few epochs,
so a trained model clearly beats an untrained one and promotion tests are not decided by noise.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

FILLER = list("这本书的内容我们你他她它在是有和了也都就很还")
POSITIVE = ["好看", "喜欢", "推荐", "满意", "great"]
NEGATIVE = ["难看", "失望", "退货", "垃圾", "awful"]


def write_corpus(path: Path, rows: int = 1200, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["review", "sentiment"])
        for i in range(rows):
            positive = i % 2 == 0
            word = rng.choice(POSITIVE if positive else NEGATIVE)
            before = "".join(rng.choices(FILLER, k=rng.randint(0, 6)))
            after = "".join(rng.choices(FILLER, k=rng.randint(0, 4)))
            w.writerow([f"{before}{word}{after}{i}", "pos" if positive else "neg"])
    return path
