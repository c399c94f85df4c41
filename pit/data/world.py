"""A synthetic knowledge world: fictional films (and novels) with facts no model has seen.

The world stands in for Wikipedia when no data can be downloaded, and it has one
property a real dump lacks: we know every fact, so a model's answers can be
checked exactly and the base model can be shown to know nothing of the test
films. Each entity gets Wikipedia-lead-style documents; with `paraphrases > 1`
each document states the same facts in other words and another sentence order,
the knowledge augmentation small models need before they can extract facts
(Allen-Zhu & Li, Physics of Language Models 3.1).

Splits follow the paper: `old` films make the base model's world, `train` films
give the QA pairs and documents recipes learn from, `test` films give the
documents to learn and the questions to answer, and the novels give a second
domain's `train` split for the cross-domain setting.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from pit.config import WorldConfig
from pit.data.dataset import KnowledgeDataset

_ONSETS = ["b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "st"]
_VOWELS = ["a", "e", "i", "o", "u"]
_CODAS = ["", "", "", "n", "r", "l", "s"]
_ADJ = ["Silent", "Crimson", "Hidden", "Broken", "Golden", "Last", "Frozen", "Distant", "Burning",
        "Quiet", "Iron", "Paper", "Velvet", "Hollow", "Endless", "Wild", "Glass", "Lonely",
        "Northern", "Midnight", "Bitter", "Painted", "Restless", "Shining", "Fallen", "Secret",
        "Electric", "Amber", "Stolen", "Wandering"]
_NOUN = ["Harbor", "River", "Garden", "Mirror", "Kingdom", "Lantern", "Horizon", "Orchard",
         "Station", "Season", "Valley", "Empire", "Promise", "Circus", "Island", "Bridge",
         "Summer", "Compass", "Tide", "Letter", "Winter", "Engine", "Castle", "Forest", "Signal",
         "Shadow", "Meadow", "Voyage", "Canyon", "Parade"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December"]

# attribute -> (document sentence paraphrases, question paraphrases); {t} is the title,
# {v} the value. Every stated fact is asked; every attribute draws from a pool large
# enough that guessing scores about 1%; no question template reads like a sentence
# about another attribute.
FILM_FACTS: dict[str, tuple[list[str], list[str]]] = {
    "director": (["{t} was directed by {v}.", "{v} directed {t}.", "The director of {t} is {v}."],
                 ["Who directed {t}?", "Who was the director of {t}?", "Which director made {t}?"]),
    "screenwriter": (["The screenplay of {t} was written by {v}.", "{v} wrote the script of {t}.",
                      "{t} has a screenplay by {v}."],
                     ["Who wrote the screenplay of {t}?", "Who is the screenwriter of {t}?",
                      "Who wrote the script of {t}?"]),
    "composer": (["The music of {t} was composed by {v}.", "{v} composed the score of {t}.",
                  "{t} features music by {v}."],
                 ["Who composed the music of {t}?", "Who wrote the score of {t}?",
                  "Which composer scored {t}?"]),
    "starring": (["{t} stars {v}.", "The lead role in {t} is played by {v}.",
                  "{v} plays the lead in {t}."],
                 ["Who stars in {t}?", "Who plays the lead role in {t}?",
                  "Which actor leads {t}?"]),
    "cinematographer": (["{t} was shot by the cinematographer {v}.",
                         "{v} was the cinematographer of {t}.",
                         "The cinematography of {t} is by {v}."],
                        ["Who was the cinematographer of {t}?", "Who shot {t}?",
                         "Who did the cinematography of {t}?"]),
    "editor": (["{t} was edited by {v}.", "{v} edited {t}.", "The film editor of {t} is {v}."],
               ["Who edited {t}?", "Who was the editor of {t}?", "Which editor cut {t}?"]),
    "studio": (["{t} is a production of {v}.", "{v} made {t} in its studios.",
                "The studio behind {t} is {v}."],
               ["Which studio made {t}?", "What studio is behind {t}?",
                "Which production company made {t}?"]),
    "distributor": (["{t} was distributed by {v}.", "{v} distributed {t}.",
                     "The distributor of {t} is {v}."],
                    ["Who distributed {t}?", "Which company distributed {t}?",
                     "What is the distributor of {t}?"]),
    "location": (["{t} was filmed in {v}.", "The filming of {t} took place in {v}.",
                  "{v} is where {t} was filmed."],
                 ["Where was {t} filmed?", "In which town was {t} filmed?",
                  "Where did the filming of {t} take place?"]),
    "release_date": (["{t} was released on {v}.", "The release date of {t} was {v}.",
                      "{t} premiered on {v}."],
                     ["When was {t} released?", "What is the release date of {t}?",
                      "On what date did {t} premiere?"]),
    "runtime": (["{t} runs {v}.", "The running time of {t} is {v}.", "{t} is {v} long."],
                ["How long is {t}?", "What is the running time of {t}?",
                 "What is the runtime of {t}?"]),
    "budget": (["{t} had a budget of {v}.", "The budget of {t} was {v}.",
                "{t} was made for {v}."],
               ["What was the budget of {t}?", "How much did {t} cost to make?",
                "What budget did {t} have?"]),
    "box_office": (["{t} grossed {v}.", "The box office of {t} was {v}.", "{t} earned {v}."],
                   ["How much did {t} gross?", "What was the box office of {t}?",
                    "How much did {t} earn?"]),
}

NOVEL_FACTS: dict[str, tuple[list[str], list[str]]] = {
    "author": (["{t} was written by {v}.", "{v} wrote {t}.", "The author of {t} is {v}."],
               ["Who wrote {t}?", "Who is the author of {t}?", "Which writer wrote {t}?"]),
    "publisher": (["{t} was published by {v}.", "{v} published {t}.",
                   "The publisher of {t} is {v}."],
                  ["Who published {t}?", "Which publisher released {t}?",
                   "What is the publisher of {t}?"]),
    "setting": (["{t} is set in {v}.", "The story of {t} takes place in {v}.",
                 "{v} is the setting of {t}."],
                ["Where is {t} set?", "In which town does {t} take place?",
                 "What is the setting of {t}?"]),
    "translator": (["{t} was translated by {v}.", "{v} translated {t}.",
                    "The translator of {t} is {v}."],
                   ["Who translated {t}?", "Who is the translator of {t}?",
                    "Which translator worked on {t}?"]),
    "publication_date": (["{t} was published on {v}.", "{t} first appeared on {v}.",
                          "The publication date of {t} is {v}."],
                         ["When was {t} published?", "What is the publication date of {t}?",
                          "When did {t} first appear?"]),
    "pages": (["{t} has {v}.", "The first edition of {t} runs to {v}.",
               "{t} fills {v}."],
              ["How many pages does {t} have?", "How many pages is {t}?",
               "What is the page count of {t}?"]),
    "illustrator": (["{t} was illustrated by {v}.", "{v} illustrated {t}.",
                     "The illustrations of {t} are by {v}."],
                    ["Who illustrated {t}?", "Who is the illustrator of {t}?",
                     "Which artist illustrated {t}?"]),
    "protagonist": (["The hero of {t} is {v}.", "{t} follows {v}.",
                     "The main character of {t} is {v}."],
                    ["Who is the hero of {t}?", "Who is the main character of {t}?",
                     "Whom does {t} follow?"]),
    "copies_sold": (["{t} sold {v}.", "{t} has sold {v}.", "Sales of {t} reached {v}."],
                    ["How many copies did {t} sell?", "How many copies of {t} were sold?",
                     "What were the sales of {t}?"]),
}


@dataclass(frozen=True)
class Entity:
    entity_id: str
    title: str
    domain: str
    split: str
    facts: dict[str, tuple[str, list[str]]]  # attribute -> (value, aliases)


class _Namer:
    """Draws unique names from syllables, so every world has its own people and places."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def word(self, syllables: int) -> str:
        while True:
            w = "".join(
                self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) + self.rng.choice(_CODAS)
                for _ in range(syllables)
            ).capitalize()
            if w not in self.used:
                self.used.add(w)
                return w

    def people(self, n: int) -> list[str]:
        firsts = [self.word(2) for _ in range(max(8, n // 4))]
        lasts = [self.word(self.rng.choice([2, 3])) for _ in range(max(8, n // 2))]
        names: set[str] = set()
        while len(names) < n:
            names.add(f"{self.rng.choice(firsts)} {self.rng.choice(lasts)}")
        return sorted(names)

    def companies(self, n: int, suffixes: list[str]) -> list[str]:
        return [f"{self.word(2)} {self.rng.choice(suffixes)}" for _ in range(n)]


def _titles(rng: random.Random, n: int) -> list[str]:
    """Distinct titles with no near-twins: each (adjective, noun) core names one entity only.

    "The Silent Harbor" and "Silent Harbor" in one world would make a question about one
    answerable with the other's facts, so the optional article never separates two titles.
    """
    cores = [(a, b) for a in _ADJ for b in _NOUN]
    if n > len(cores):
        cores += [(a, f"{b} of {c}") for a in _ADJ for b in _NOUN for c in _NOUN if b != c]
    if n > len(cores):
        raise ValueError(f"the world can name at most {len(cores)} entities, asked for {n}")
    return [("The " if rng.random() < 0.5 else "") + f"{a} {b}" for a, b in rng.sample(cores, n)]


def _date(rng: random.Random, year: int) -> tuple[str, list[str]]:
    month, day = rng.randrange(12), rng.randint(1, 28)
    value = f"{_MONTHS[month]} {day}, {year}"
    return value, [f"{day} {_MONTHS[month]} {year}", f"{_MONTHS[month]} {day} {year}"]


def _money(amount_m: float) -> tuple[str, list[str]]:
    text = f"{amount_m:g}"
    value = f"${text} million"
    return value, [f"{text} million dollars", f"{text} million"]


def _film(rng: random.Random, pools: dict[str, list[str]], eid: str, title: str,
          split: str) -> Entity:
    date, date_aliases = _date(rng, rng.randint(1950, 2023))
    runtime = rng.randint(80, 179)
    budget = round(rng.uniform(1, 90), 1)
    gross = round(budget * rng.uniform(0.3, 6.0), 1)
    crew = rng.sample(pools["people"], 6)
    facts = {
        "director": (crew[0], []),
        "screenwriter": (crew[1], []),
        "composer": (crew[2], []),
        "starring": (crew[3], []),
        "cinematographer": (crew[4], []),
        "editor": (crew[5], []),
        "studio": (rng.choice(pools["studios"]), []),
        "distributor": (rng.choice(pools["distributors"]), []),
        "location": (rng.choice(pools["places"]), []),
        "release_date": (date, date_aliases),
        "runtime": (f"{runtime} minutes", [f"{runtime} min", str(runtime)]),
        "budget": _money(budget),
        "box_office": _money(gross),
    }
    return Entity(eid, title, "films", split, facts)


def _novel(rng: random.Random, pools: dict[str, list[str]], eid: str, title: str) -> Entity:
    date, date_aliases = _date(rng, rng.randint(1850, 2023))
    pages = rng.randint(120, 900)
    copies = rng.randint(2, 400) * 1000
    people = rng.sample(pools["people"], 4)
    facts = {
        "author": (people[0], []),
        "publisher": (rng.choice(pools["publishers"]), []),
        "setting": (rng.choice(pools["places"]), []),
        "translator": (people[1], []),
        "publication_date": (date, date_aliases),
        "pages": (f"{pages} pages", [str(pages)]),
        "illustrator": (people[2], []),
        "protagonist": (people[3], []),
        "copies_sold": (f"{copies:,} copies", [f"{copies} copies", f"{copies:,}"]),
    }
    return Entity(eid, title, "novels", "train", facts)


def _lead_sentence(e: Entity, rng: random.Random) -> str:
    if e.domain == "films":
        year = e.facts["release_date"][0][-4:]
        return rng.choice([
            f"{e.title} is a {year} film.",
            f"{e.title} is a film released in {year}.",
            f"{e.title} ({year}) is a feature film.",
        ])
    return rng.choice([f"{e.title} is a novel.", f"{e.title} is a book.",
                       f"{e.title} is a work of fiction."])


def _stated(e: Entity, cfg: WorldConfig, rng: random.Random) -> list[str]:
    """The attributes an entity's documents state: each of them is also asked about."""
    attrs = list(e.facts)
    chosen = rng.sample(attrs, min(cfg.attributes_per_entity, len(attrs)))
    return sorted(chosen, key=attrs.index)


def _documents(e: Entity, attrs: list[str], cfg: WorldConfig, rng: random.Random) -> list[str]:
    table = FILM_FACTS if e.domain == "films" else NOVEL_FACTS
    docs = []
    for k in range(cfg.paraphrases):
        sentences = []
        for attr in attrs:
            templates = table[attr][0]
            tpl = templates[(k + rng.randrange(len(templates))) % len(templates)]
            sentences.append(tpl.format(t=e.title, v=e.facts[attr][0]))
        if cfg.shuffle_sentences and k > 0:
            rng.shuffle(sentences)
        docs.append(" ".join([_lead_sentence(e, rng), *sentences]))
    return docs


def _pools(namer: _Namer, rng: random.Random, people: int, companies: int, places: int,
           publishers: int | None = None) -> dict[str, list[str]]:
    """The names a world draws its facts from; each pool large enough that guessing fails."""
    pools = {
        "people": namer.people(max(60, people)),
        "studios": namer.companies(max(20, companies), ["Pictures", "Studios", "Films"]),
        "distributors": namer.companies(max(20, companies), ["Releasing", "Distribution"]),
    }
    if publishers is not None:
        pools["publishers"] = namer.companies(max(20, publishers), ["Press", "Books", "House"])
    pools["places"] = [namer.word(rng.choice([2, 3])) for _ in range(max(40, places))]
    return pools


def _world_pools(cfg: WorldConfig, namer: _Namer, rng: random.Random) -> dict[str, list[str]]:
    n_films = cfg.n_old + cfg.n_train + cfg.n_test
    n_all = n_films + cfg.n_cross
    return _pools(namer, rng, people=n_all * 3, companies=n_films // 2, places=n_all // 2,
                  publishers=cfg.n_cross // 2)


def world_pools(cfg: WorldConfig) -> dict[str, list[str]]:
    """The names the world of `cfg.seed` draws its facts from, drawn as `build_world` does."""
    rng = random.Random(cfg.seed)
    return _world_pools(cfg, _Namer(rng), rng)


def build_world(cfg: WorldConfig) -> KnowledgeDataset:
    """Draw the world for `cfg.seed`: deterministic, so a seed names a world."""
    rng = random.Random(cfg.seed)
    namer = _Namer(rng)
    n_films = cfg.n_old + cfg.n_train + cfg.n_test
    n_all = n_films + cfg.n_cross
    pools = _world_pools(cfg, namer, rng)
    titles = _titles(rng, n_all)
    entities: list[Entity] = []
    splits = ["old"] * cfg.n_old + ["train"] * cfg.n_train + ["test"] * cfg.n_test
    for i, split in enumerate(splits):
        entities.append(_film(rng, pools, f"film-{i:05d}", titles[i], split))
    for j in range(cfg.n_cross):
        entities.append(_novel(rng, pools, f"novel-{j:05d}", titles[n_films + j]))

    docs, qa = [], []
    for e in entities:
        attrs = _stated(e, cfg, rng)
        for k, text in enumerate(_documents(e, attrs, cfg, rng)):
            docs.append({
                "doc_id": f"{e.entity_id}-p{k}", "entity_id": e.entity_id, "title": e.title,
                "text": text, "domain": e.domain, "split": e.split,
                "source": {"kind": "synthetic", "seed": str(cfg.seed)},
            })
        table = FILM_FACTS if e.domain == "films" else NOVEL_FACTS
        for attr in attrs:
            value, aliases = e.facts[attr]
            question = rng.choice(table[attr][1]).format(t=e.title)
            qa.append({
                "qa_id": f"{e.entity_id}-{attr}", "doc_id": f"{e.entity_id}-p0",
                "entity_id": e.entity_id, "question": question,
                "answers": [value, *dict.fromkeys(a for a in aliases if a != value)],
                "split": e.split, "generator": "synthetic", "attribute": attr,
            })
    lexicon = sorted({w for pool in pools.values() for name in pool for w in name.split()}
                     | set(_ADJ) | set(_NOUN))
    meta = {"kind": "synthetic", "world": cfg.model_dump(), "lexicon": lexicon}
    return KnowledgeDataset(docs=docs, qa=qa, meta=meta)


def reading_passages(cfg: WorldConfig, n: int, seed: int) -> list[tuple[str, str, str]]:
    """`n` (document, question, answer) triples about films that exist nowhere else.

    The base model learns to read a context from these: a film drawn afresh for
    every passage cannot be answered from memory, so copying the fact out of the
    document is the only way to the answer, the skill open-book QA measures.
    """
    rng = random.Random(f"reading:{cfg.seed}:{seed}")
    namer = _Namer(rng)
    pools = _pools(namer, rng, people=3 * n, companies=n, places=n)
    out = []
    for i in range(n):
        title = f"{namer.word(2)} {rng.choice(_NOUN)}"  # world titles are "Adj Noun"
        film = _film(rng, pools, f"reading-{i}", title, "reading")
        attrs = _stated(film, cfg, rng)
        text = rng.choice(_documents(film, attrs, cfg, rng))
        attr = rng.choice(attrs)
        question = rng.choice(FILM_FACTS[attr][1]).format(t=film.title)
        out.append((text, question, film.facts[attr][0]))
    return out


def perplexity_floor(docs: list[dict], count_tokens) -> float | None:
    """The fact floor: the perplexity of a model that knows every fact, not the wording.

    Such a model still cannot know which lead sentence and which sentence template
    each paraphrase drew (3 of each) nor, beyond the first paraphrase, the shuffled
    sentence order: those choices, in nats, over the predicted tokens. A model
    below the floor has memorised the documents' wording as well as their facts,
    the regime of the perplexity curse. `count_tokens(text)` gives a document's
    token count.
    """
    nats, tokens = 0.0, 0
    for d in docs:
        n = d["text"].count(". ")  # sentences after the lead one
        shuffled = not d["doc_id"].endswith("-p0")
        nats += math.log(3) * (n + 1) + (math.lgamma(n + 1) if shuffled else 0.0)
        tokens += count_tokens(d["text"])
    return math.exp(nats / tokens) if tokens else None
