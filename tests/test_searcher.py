"""The searcher Tune drives: what Tune pickles of it."""

from __future__ import annotations

from ray import cloudpickle

from flipsearch.search.searcher import FlipSearcher
from flipsearch.search.space import load_space
from flipsearch.search.studies import StudyBook
from flipsearch.storage import Storage

SPACE = """
name: t-pickle
scenario: {datasets: [digits], arrangements: [exclusive-op, class-incremental], models: [small]}
objectives: [accuracy_new:max, nfr:min]
search: {sampler: nsga2, trials_per_scenario: 3}
methods: {ce: {init: {choice: [old, scratch]}}}
"""


def test_tune_can_pickle_the_searcher_and_the_live_one_keeps_its_studies(tiny_space, tmp_path):
    # Tune writes its settings, the searcher among them, to tuner.pkl before the first trial.
    # Optuna 5.1's NSGA-II sampler holds a thread lock, so a searcher pickled with its studies
    # stopped every nsga2 sweep there ("cannot pickle '_thread.lock' object").
    space = load_space(tiny_space(SPACE))
    book = StudyBook(space, Storage.open(str(tmp_path / "out")), space.objectives, space.constraints,
                     space.sampler, 0)
    searcher = FlipSearcher(space, book, lambda row: None, "run-1", {k: 3 for k in book.studies}, quiet=True)
    copy = cloudpickle.loads(cloudpickle.dumps(searcher))
    assert copy.book is None  # rebuilt from the journal on --resume, never from the pickle
    assert (copy.run_id, copy.remaining, copy.total) == ("run-1", searcher.remaining, 6)
    assert searcher.book is book  # the live searcher still asks its studies
    assert searcher.suggest("trial-a")["study"] in book.studies
