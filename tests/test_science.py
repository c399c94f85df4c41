"""The synthetic world and the measures that make a comparison informative.

Each test names a property the demo's science rests on: every stated fact is
asked, guessing scores little, no title has a twin, reading needs the context,
and the noise around a score is stated rather than assumed.
"""

from __future__ import annotations

from collections import Counter

import pytest

from pit.config import DataConfig, WorldConfig
from pit.data.world import FILM_FACTS, build_world, perplexity_floor, reading_passages
from pit.eval.chance import chance_exact_match
from pit.eval.cloze import cloze_items, cloze_prompt
from pit.eval.ordering import judge
from pit.eval.paired import paired_test, sign_test
from pit.recipe import Source, all_recipes
from pit.train.batches import resolve_source
from pit.train.callbacks.evaluation import EpochEvaluation
from pit.train.loop import Position, StageState


@pytest.fixture(scope="module")
def world():
    return build_world(WorldConfig(seed=3, n_old=20, n_train=40, n_test=15, n_cross=10,
                                   paraphrases=3, attributes_per_entity=6))


def test_every_fact_a_document_states_is_asked(world):
    for d in world.docs:
        asked = [q for q in world.qa if q["entity_id"] == d["entity_id"]]
        for q in asked:
            assert q["answers"][0] in d["text"], (d["doc_id"], q["qa_id"])
        assert d["text"].count(". ") == len(asked), "one sentence per asked fact, after the lead"


def test_guessing_the_most_common_answer_per_relation_scores_about_one_percent(world):
    chance = chance_exact_match(world.qa_where("test", "films"), world.qa_where("train", "films"))
    assert chance < 5.0
    by_attr = {}
    for q in world.qa:
        by_attr.setdefault(q["attribute"], set()).add(q["answers"][0])
    assert min(len(v) for a, v in by_attr.items() if a in FILM_FACTS) >= 15


def test_no_title_has_a_near_twin(world):
    firsts = [d for d in world.docs if d["doc_id"].endswith("-p0")]
    cores = Counter(d["title"].removeprefix("The ") for d in firsts)
    assert max(cores.values()) == 1


def test_no_question_reads_like_a_sentence_about_another_attribute():
    for attr, (_, questions) in FILM_FACTS.items():
        for other, (sentences, _) in FILM_FACTS.items():
            if other == attr:
                continue
            for q in questions:
                verb = q.split("{t}")[0].split()[-1].rstrip("?")
                assert not any(f"{{t}} was {verb} by" in s for s in sentences), (attr, other, q)


def test_reading_passages_are_about_films_no_world_names(world):
    titles = {d["title"] for d in world.docs}
    passages = reading_passages(WorldConfig.model_validate(world.meta["world"]), 30, seed=1)
    assert len(passages) == 30
    for text, question, answer in passages:
        assert answer in text
        assert not any(t in question for t in titles)
    assert reading_passages(WorldConfig(), 5, 1) != reading_passages(WorldConfig(), 5, 2)


def test_the_world_lexicon_holds_names_not_facts(world):
    lexicon = set(world.meta["lexicon"])
    test = world.qa_where("test", "films")
    assert any(w in lexicon for q in test for w in q["answers"][0].split())
    assert not any(q["question"] in lexicon for q in test)


def test_perplexity_floor_is_above_one_and_below_a_uniform_guess(world):
    docs = world.docs_where("test", "films")
    floor = perplexity_floor(docs, lambda t: len(t.split()))
    assert 1.0 < floor < 3.0


def test_cloze_prompt_ends_where_the_answer_starts():
    text = ("The Glass Horizon is a 1999 film. Sabun Nonhen directed The Glass Horizon. "
            "The Glass Horizon was directed by Sabun Nonhen.")
    assert cloze_prompt(text, "Sabun Nonhen") == "The Glass Horizon was directed by"
    assert cloze_prompt("Sabun Nonhen directed it.", "Sabun Nonhen") is None


def test_cloze_items_cover_test_questions_stated_in_their_documents(world):
    qs = world.qa_where("test", "films")
    items = cloze_items(qs, world.docs_where("test", "films"))
    assert len(items) >= 0.8 * len(qs)
    for q, prompt in items:
        assert q["answers"][0] not in prompt


def test_sign_test_matches_the_binomial_tails():
    assert sign_test(5, 0) == pytest.approx(0.0625)
    assert sign_test(3, 3) == 1.0
    assert sign_test(0, 0) == 1.0
    assert sign_test(20, 5) < 0.01


def test_paired_test_counts_only_disagreements():
    a = {"q1": 1.0, "q2": 1.0, "q3": 0.0, "q4": 1.0}
    b = {"q1": 1.0, "q2": 0.0, "q3": 0.0, "q4": 0.0}
    t = paired_test(a, b)
    assert (t.wins, t.losses) == (2, 0)


def _method(em, per_seed, per_question):
    return {"exact_match": em, "per_question": per_question,
            "per_seed": [{"seed": i, "exact_match": v} for i, v in enumerate(per_seed)]}


def test_a_gap_is_real_only_beyond_questions_and_seeds():
    many = {f"q{i}": 1.0 for i in range(30)}
    none = {f"q{i}": 0.0 for i in range(30)}
    methods = {"pit": _method(50, [49, 50, 51], many), "mix-all": _method(10, [9, 10, 11], none),
               "cpt-it": _method(9, [0, 20, 7], none)}
    verdicts = {(g.better, g.worse): g.verdict for g in judge(methods)}
    assert verdicts[("pit", "mix-all")] == "as in paper"
    assert verdicts[("mix-all", "cpt-it")] == "within noise"
    reversed_ = judge({"pit": methods["mix-all"], "mix-all": methods["pit"]})
    assert reversed_[0].verdict == "reversed"


def test_replay_takes_its_share_of_old_documents_per_test_document(world):
    from pit.config import TrainConfig

    view = world
    n_test = len(view.docs_where("test"))
    rows = resolve_source(view, Source(name="replay", share=0.5), TrainConfig())
    assert len(rows) == round(0.5 * n_test) and all(r["split"] == "old" for r in rows)
    assert resolve_source(view, Source(name="replay"), TrainConfig(replay_share=0.0)) == []


def test_cross_domain_recipes_train_on_other_domains_only():
    recipes = all_recipes()
    for slug in ("pit-cross", "cpt-it-cross"):
        assert all(st.cross_domain for st in recipes[slug].stages)
    assert recipes["pit-cross"].paper.exact_match == 36.9


def test_cross_domain_recipe_on_a_one_domain_set_fails_before_training():
    from pit.config import PitConfig
    from pit.data.checks import dataset_problems

    ds = build_world(WorldConfig(n_old=3, n_train=3, n_test=2, n_cross=0))
    problems = dataset_problems(ds, PitConfig(data=DataConfig()), [all_recipes()["pit-cross"]])
    assert any("pit-cross" in p and "world.n_cross" in p for p in problems)


def test_epoch_scores_come_every_nth_epoch_and_at_the_last():
    calls = []
    ev = EpochEvaluation(lambda: calls.append(1) or {"exact_match": 1.0}, every=3, last_epoch=7)
    for epoch in range(1, 8):
        ev.on_epoch_end(StageState(position=Position(epoch, 0, epoch)), {"loss_doc": 1.0})
    assert sorted(e for e, m in ev.history.items() if "exact_match" in m) == [3, 6, 7]
    assert len(calls) == 3


def test_replay_with_qa_adds_the_replayed_films_old_questions_but_never_a_held_out_one(world):
    from pit.config import PitConfig, TrainConfig
    from pit.data.views import retention_ids
    from pit.modeling import train_tokenizer
    from pit.recipe import Stage
    from pit.train.batches import stage_examples
    from pit.train.examples import ExampleBuilder

    tok = train_tokenizer([d["text"] for d in world.docs] + [q["question"] for q in world.qa],
                          400)
    builder = ExampleBuilder(tok, 256)
    held = retention_ids(world, PitConfig(data=DataConfig(retention_questions=4)).data)
    stage = Stage(sources=[{"name": "replay", "share": 1.0, "with_qa": True}])
    examples = stage_examples(world, stage, builder, TrainConfig(), exclude_qa=held)
    replayed = resolve_source(world, Source(name="replay", share=1.0), TrainConfig())
    films = {d["entity_id"] for d in replayed}
    expected = [q for q in world.qa_where("old") if q["entity_id"] in films
                and q["qa_id"] not in held]
    assert held and expected
    assert sum(e.kind == "qa" for e in examples) == len(expected)
    assert sum(e.kind == "doc" for e in examples) == len(replayed)
    questions = {tok.decode(e.input_ids) for e in examples if e.kind == "qa"}
    for q in world.qa_where("old"):
        if q["qa_id"] in held:
            assert not any(q["question"] in text for text in questions)
