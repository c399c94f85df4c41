import pytest

from pit.config import DataConfig, TrainConfig, WorldConfig
from pit.data.views import training_view
from pit.data.world import build_world
from pit.errors import ConfigError, UnknownRecipeError
from pit.modeling import train_tokenizer
from pit.recipe import MAIN_ORDER, all_recipes, select_recipes
from pit.train.batches import epoch_batches, resolve_source, stage_examples
from pit.train.examples import ExampleBuilder

TABLE_SLUGS = ["closed-book", "open-book", "cpt", "cpt-it", "cpt-it-no-forget",
               "it-no-train-docs", "weighted-cpt", "adapted-cpt", "mix-all", "pit-qa-only",
               "pit-qa-then-docs", "pit", "pit--", "pit++"]


@pytest.fixture(scope="module")
def full_world():
    return build_world(WorldConfig(n_old=4, n_train=5, n_test=3, n_cross=4, paraphrases=2))


@pytest.fixture(scope="module")
def world(full_world):
    """What a recipe stage sees of the world: films, old rows of every domain."""
    return training_view(full_world, DataConfig(), cross_domain=False)


@pytest.fixture(scope="module")
def builder(world):
    texts = [d["text"] for d in world.docs] + [q["question"] for q in world.qa]
    return ExampleBuilder(train_tokenizer(texts, 500), 256)


def test_every_slug_of_the_paper_table_ships_with_its_figures():
    recipes = all_recipes()
    assert set(TABLE_SLUGS) <= set(recipes)
    assert list(MAIN_ORDER) == TABLE_SLUGS
    for slug in TABLE_SLUGS:
        assert recipes[slug].paper.exact_match is not None
    variants = [r for r in recipes.values() if r.group == "variant"]
    assert len(variants) == 4
    assert {r.slug for r in recipes.values() if r.group == "epochs"} == {
        "pit-epochs-1", "pit-epochs-5", "pit-epochs-10"}


@pytest.mark.parametrize("slug", sorted(all_recipes()))
def test_every_recipe_expands_to_batches_of_its_sources(slug, world, builder):
    recipe = all_recipes()[slug]
    train = TrainConfig(cpt_qa_count=4)
    if recipe.evaluation != "zero-shot":
        assert recipe.stages == []
        return
    assert recipe.stages, f"{slug} trains nothing"
    for stage in recipe.stages:
        examples = stage_examples(world, stage, builder, train)
        batches = epoch_batches(examples, stage, train, seed=0)
        assert sum(len(b.examples) for b in batches) == len(examples)
        kinds = {b.kind for b in batches}
        names = set(stage.source_names)
        if names & {"train_docs", "test_docs"}:
            assert "doc" in kinds
        if "train_qa" in names and stage.arrangement != "interleaved":
            assert "qa" in kinds
        assert all(len({e.kind for e in b.examples}) == 1 for b in batches)
        assert stage.resolved_epochs(train) >= 1


def test_pit_reads_train_qa_and_train_docs_together_then_test_docs():
    pit = all_recipes()["pit"]
    assert [s.source_names for s in pit.stages] == [["train_qa", "train_docs"],
                                                    ["test_docs", "train_qa"]]
    assert pit.stages[1].sources[1].limit == "cpt_qa_count", "the answer format is kept"
    assert pit.stages[0].resolved_epochs(TrainConfig(pit_epochs=3)) == 3
    plus = all_recipes()["pit++"]
    assert [s.source_names for s in plus.stages] == [
        ["train_qa"], ["train_qa", "train_docs"], ["test_docs", "train_qa"]]


def test_cpt_keeps_only_a_few_train_qa(world, builder):
    stage = all_recipes()["cpt"].stages[0]
    examples = stage_examples(world, stage, builder, TrainConfig(cpt_qa_count=3))
    assert sum(e.kind == "qa" for e in examples) == 3


def test_grouped_puts_all_qa_batches_first_or_last(world, builder):
    train = TrainConfig(qa_batch_size=4, doc_batch_size=2)
    for slug, first in (("pit-before-grouped", "qa"), ("pit-after-grouped", "doc")):
        stage = all_recipes()[slug].stages[0]
        batches = epoch_batches(stage_examples(world, stage, builder, train), stage, train, 1)
        kinds = [b.kind for b in batches]
        n_first = kinds.count(first)
        assert kinds[:n_first] == [first] * n_first


def test_interleaved_puts_an_entitys_qa_beside_every_paraphrase(world, builder):
    stage = all_recipes()["pit-before-interleaved"].stages[0]
    roomy = ExampleBuilder(builder.tok, 4096)
    examples = stage_examples(world, stage, roomy, TrainConfig())
    assert all(e.kind == "doc" for e in examples)
    train_docs = world.docs_where("train", "films")
    assert len(examples) == len(train_docs)
    pairs = {}
    for q in world.qa_where("train", "films"):
        pairs[q["entity_id"]] = pairs.get(q["entity_id"], 0) + 1
    shown = sum(roomy.tok.decode(e.input_ids).count("Question:") for e in examples)
    assert shown == sum(pairs[d["entity_id"]] for d in train_docs)


def test_cross_domain_takes_train_data_from_the_other_domains(full_world):
    stage = all_recipes()["pit"].stages[0]
    view = training_view(full_world, DataConfig(), cross_domain=True)
    rows = resolve_source(view, stage.sources[1], TrainConfig())
    assert rows and {r["domain"] for r in rows} == {"novels"}
    test_rows = resolve_source(view, all_recipes()["pit"].stages[1].sources[0], TrainConfig())
    assert test_rows and {r["domain"] for r in test_rows} == {"films"}


def test_the_test_domain_is_a_config_fact_not_a_name_in_the_code(full_world):
    """With novels as the test domain, train rows are novels and no film trains."""
    renamed = training_view(full_world, DataConfig(test_domain="novels"), cross_domain=False)
    assert {d["domain"] for d in renamed.docs_where("train")} == {"novels"}
    cross = training_view(full_world, DataConfig(test_domain="novels"), cross_domain=True)
    assert {d["domain"] for d in cross.docs_where("train")} == {"films"}


def test_same_seed_same_batches_other_seed_other_order(world, builder):
    stage = all_recipes()["mix-all"].stages[0]
    train = TrainConfig()
    examples = stage_examples(world, stage, builder, train)
    a = [b.examples[0].input_ids for b in epoch_batches(examples, stage, train, 7)]
    b = [b.examples[0].input_ids for b in epoch_batches(examples, stage, train, 7)]
    c = [b.examples[0].input_ids for b in epoch_batches(examples, stage, train, 8)]
    assert a == b and a != c


def test_unknown_slug_names_the_known_recipes():
    with pytest.raises(UnknownRecipeError) as err:
        select_recipes("pit,pit+++")
    assert "unknown recipe 'pit+++'" in str(err.value)
    assert "pit++," in str(err.value) and "mix-all" in str(err.value)


def test_all_and_main_expand_in_table_order():
    assert [r.slug for r in select_recipes("main")] == TABLE_SLUGS
    assert len(select_recipes("all")) == len(all_recipes())


def test_user_recipe_in_yaml_needs_no_python(tmp_path):
    (tmp_path / "replay.yaml").write_text(
        "slug: replay\ndescription: test docs with old QA replayed\n"
        "stages:\n  - sources: [test_docs, {name: old_qa, limit: 8}]\n    epochs: 2\n"
    )
    (recipe,) = select_recipes(["replay"], [tmp_path])
    assert recipe.stages[0].source_names == ["test_docs", "old_qa"]


def test_invalid_recipe_names_the_field_and_the_allowed_values(tmp_path):
    (tmp_path / "bad.yaml").write_text(
        "slug: bad\ndescription: x\nstages:\n  - sources: [test_doc]\n    arrangement: mixed\n"
    )
    with pytest.raises(ConfigError) as err:
        select_recipes(["bad"], [tmp_path])
    text = str(err.value)
    assert "stages.0.sources.0.name" in text and "'train_qa'" in text and "test_doc" in text
    assert "stages.0.arrangement" in text and "'interleaved'" in text
