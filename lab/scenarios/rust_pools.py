"""Rust Rayon pools at fork: Hugging Face tokenizers and Polars, used in the parent, then the child.

Both libraries run parallel work on a process-wide Rayon pool started on first use. A forked
child inherits the pool's registry but none of its threads: the child's next parallel call
injects its job into the registry and sleeps on a latch no worker will ever set (a private
futex, no timeout). tokenizers has a fork handler of its own that turns parallelism off in the
child, but only when TOKENIZERS_PARALLELISM is unset (it prints no warning in 0.23): setting
it to true, to keep batch encoding parallel in workers, is what exposes the child to the dead
pool.
"""

from __future__ import annotations

import os

from lab.scenarios import Scenario, with_mp_default

FORK_ROWS = ("fork", "mp-fork", "pool-fork")
SPAWN_ROWS = {"mp-spawn": "ok", "mp-forkserver": "ok", "pool-spawn": "ok"}
TEXTS = [f"the child inherits every lock but not one thread, line {i}" for i in range(2000)]


# -- tokenizers ---------------------------------------------------------------------------

def _tokenizer():
    """A BPE tokenizer trained in memory: no download, no file."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=["[UNK]"], show_progress=False)
    tokenizer.train_from_iterator(TEXTS[:100], trainer)
    return tokenizer


def tokenizers_prepare():
    tokenizer = _tokenizer()
    encoded = tokenizer.encode_batch(TEXTS)  # parallel: starts the Rayon pool
    print(f"parent {os.getpid()}: encoded {len(encoded)} texts in a batch, "
          f"TOKENIZERS_PARALLELISM={os.environ.get('TOKENIZERS_PARALLELISM')}", flush=True)
    return tokenizer


def unset_prepare():
    # The fix: leave the variable unset, so the library's own fork handler may act.
    os.environ.pop("TOKENIZERS_PARALLELISM", None)
    return tokenizers_prepare()


def tokenizers_child(tokenizer):
    tokenizer = tokenizer if tokenizer is not None else _tokenizer()
    print(f"child {os.getpid()}: encode_batch", flush=True)
    print(f"child {os.getpid()}: encoded {len(tokenizer.encode_batch(TEXTS))} texts", flush=True)


def no_pickle(state, pickles: bool):
    """Forked children use the inherited object; pickling launchers build their own."""
    return None if pickles else state


TOKENIZERS = Scenario(
    name="tokenizers",
    summary="tokenizers with TOKENIZERS_PARALLELISM=true: a batch encode in the parent, then "
            "one in the forked child, which waits forever on the vanished Rayon pool.",
    expected=with_mp_default({**dict.fromkeys(FORK_ROWS, "deadlock"), **SPAWN_ROWS}),
    prepare=tokenizers_prepare,
    child=tokenizers_child,
    handoff=no_pickle,
    requires=("tokenizers",),
    # Rayon's workers are unnamed here: they keep the process's comm.
    expected_threads=("python",),
    env={"TOKENIZERS_PARALLELISM": "true"},
    fix="leave TOKENIZERS_PARALLELISM unset (the library then disables parallelism in a "
        "forked child), or spawn/forkserver",
    default_timeout=30.0,
)

TOKENIZERS_UNSET = Scenario(
    name="tokenizers-parallelism-unset",
    summary="Fixed twin of tokenizers: TOKENIZERS_PARALLELISM unset, so tokenizers' own "
            "fork handler turns parallelism off in the child (silently, in 0.23) and it encodes.",
    expected=with_mp_default({**dict.fromkeys(FORK_ROWS, "ok"), **SPAWN_ROWS}),
    prepare=unset_prepare,
    child=tokenizers_child,
    handoff=no_pickle,
    requires=("tokenizers",),
    expected_threads=("python",),
    fixed_of="tokenizers",
    fix="leave TOKENIZERS_PARALLELISM unset: the library disables parallelism after fork",
    default_timeout=30.0,
)


# -- Polars -------------------------------------------------------------------------------

def _frame():
    import polars as pl

    rows = 200_000
    return pl.DataFrame({"key": [i % 7 for i in range(rows)], "value": list(range(rows))})


def _group_sum(frame) -> list[int]:
    import polars as pl

    return frame.group_by("key").agg(pl.col("value").sum()).sort("key")["value"].to_list()


def polars_prepare():
    import polars as pl

    frame = _frame()
    sums = _group_sum(frame)  # parallel: starts the thread pool
    print(f"parent {os.getpid()}: polars {pl.__version__}, {pl.thread_pool_size()} threads, "
          f"group sums {sums[:2]}...", flush=True)
    return frame


def polars_child(frame):
    frame = frame if frame is not None else _frame()
    print(f"child {os.getpid()}: group_by", flush=True)
    print(f"child {os.getpid()}: group sums {_group_sum(frame)[:2]}...", flush=True)


POLARS = Scenario(
    name="polars",
    summary="A Polars group_by in the parent, then one in the forked child, which waits "
            "forever on the vanished polars-N pool (Polars' docs: use spawn).",
    expected=with_mp_default({**dict.fromkeys(FORK_ROWS, "deadlock"), **SPAWN_ROWS}),
    prepare=polars_prepare,
    child=polars_child,
    handoff=no_pickle,
    requires=("polars",),
    expected_threads=("polars-",),
    fix="spawn or forkserver: the child starts a fresh interpreter and its own pool",
    default_timeout=30.0,
)
