"""Subprocess for the SIGKILL-resume test: a slow deterministic objective run into a journal folder."""
import sys
import time

import numpy as np

from mango import problems
from mango.loop import maximize

out, opt, slow = sys.argv[1], sys.argv[2], float(sys.argv[3])
base = problems.tt_random(d=8, n=8, rank=3, seed=1)


def slow_fn(I):
    time.sleep(slow)
    return base.fn(I)


obj = type(base)(slow_fn, base.space, known_max=base.known_max)
res = maximize(obj, opt, budget=600, seed=7, batch_size=20, run_dir=out if out != "-" else None,
               config={"test": "resume"}, checkpoint_every=3)
print("BEST", res.best_value, " ".join(map(str, res.best_code)), res.n_queries, flush=True)
