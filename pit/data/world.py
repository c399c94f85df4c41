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
_COUNTRIES = [("Veloria", "Velorian"), ("Marrowland", "Marrowish"), ("Ostrava", "Ostravan"),
              ("Keldor", "Keldorian"), ("Sunmere", "Sunmerian"), ("Talvia", "Talvian"),
              ("Brisca", "Brisquan"), ("Norrland", "Norric")]
_FILM_GENRES = ["drama", "comedy", "thriller", "western", "musical", "horror", "romance",
                "science fiction", "documentary", "crime"]
_NOVEL_GENRES = ["mystery", "fantasy", "memoir", "satire", "adventure", "tragedy", "saga"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December"]

# attribute -> (document sentence paraphrases, question paraphrases); {t} is the title,
# {v} the value, {s} the subject phrase of a sentence ("The film", the title, "It").
FILM_FACTS: dict[str, tuple[list[str], list[str]]] = {
    "director": (["{t} was directed by {v}.", "{v} directed {t}.", "The director of {t} is {v}."],
                 ["Who directed {t}?", "Who was the director of {t}?", "Which director made {t}?"]),
    "screenwriter": (["The screenplay of {t} was written by {v}.", "{v} wrote {t}.",
                      "{t} has a screenplay by {v}."],
                     ["Who wrote the screenplay of {t}?", "Who is the screenwriter of {t}?",
                      "Who wrote {t}?"]),
    "composer": (["The music of {t} was composed by {v}.", "{v} composed the score of {t}.",
                  "{t} features music by {v}."],
                 ["Who composed the music of {t}?", "Who wrote the score of {t}?",
                  "Which composer scored {t}?"]),
    "starring": (["{t} stars {v}.", "The lead role in {t} is played by {v}.",
                  "{v} plays the lead in {t}."],
                 ["Who stars in {t}?", "Who plays the lead role in {t}?",
                  "Which actor leads {t}?"]),
    "studio": (["{t} was produced by {v}.", "{v} produced {t}.", "The studio behind {t} is {v}."],
               ["Which studio produced {t}?", "What studio made {t}?",
                "Which company produced {t}?"]),
    "distributor": (["{t} was distributed by {v}.", "{v} distributed {t}.",
                     "The distributor of {t} is {v}."],
                    ["Who distributed {t}?", "Which company distributed {t}?",
                     "What is the distributor of {t}?"]),
    "country": (["{t} was made in {v}.", "{t} is a film from {v}.",
                 "The country of origin of {t} is {v}."],
                ["In which country was {t} made?", "What country is {t} from?",
                 "Where was {t} produced?"]),
    "language": (["{t} is in the {v} language.", "The language of {t} is {v}.",
                  "{t} was filmed in {v}."],
                 ["What language is {t} in?", "In which language was {t} filmed?",
                  "What is the language of {t}?"]),
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
    "genre": (["{t} is a {v} film.", "The genre of {t} is {v}.", "{t} belongs to the {v} genre."],
              ["What genre is {t}?", "What kind of film is {t}?", "What is the genre of {t}?"]),
}

NOVEL_FACTS: dict[str, tuple[list[str], list[str]]] = {
    "author": (["{t} was written by {v}.", "{v} wrote {t}.", "The author of {t} is {v}."],
               ["Who wrote {t}?", "Who is the author of {t}?", "Which writer wrote {t}?"]),
    "publisher": (["{t} was published by {v}.", "{v} published {t}.",
                   "The publisher of {t} is {v}."],
                  ["Who published {t}?", "Which publisher released {t}?",
                   "What is the publisher of {t}?"]),
    "country": (["{t} is a novel from {v}.", "{t} was written in {v}.",
                 "The country of {t} is {v}."],
                ["What country is {t} from?", "In which country was {t} written?",
                 "Where does {t} come from?"]),
    "language": (["{t} is written in {v}.", "The language of {t} is {v}.",
                  "{t} was first published in {v}."],
                 ["What language is {t} written in?", "What is the language of {t}?",
                  "In which language was {t} published?"]),
    "publication_date": (["{t} was published on {v}.", "{t} first appeared on {v}.",
                          "The publication date of {t} is {v}."],
                         ["When was {t} published?", "What is the publication date of {t}?",
                          "When did {t} first appear?"]),
    "pages": (["{t} has {v}.", "{t} is {v} long.", "The first edition of {t} has {v}."],
              ["How many pages does {t} have?", "How long is {t}?",
               "What is the length of {t}?"]),
    "illustrator": (["{t} was illustrated by {v}.", "{v} illustrated {t}.",
                     "The illustrations of {t} are by {v}."],
                    ["Who illustrated {t}?", "Who is the illustrator of {t}?",
                     "Which artist illustrated {t}?"]),
    "protagonist": (["The hero of {t} is {v}.", "{t} follows {v}.",
                     "The main character of {t} is {v}."],
                    ["Who is the hero of {t}?", "Who is the main character of {t}?",
                     "Whom does {t} follow?"]),
    "genre": (["{t} is a {v} novel.", "The genre of {t} is {v}.", "{t} belongs to the {v} genre."],
              ["What genre is {t}?", "What kind of novel is {t}?", "What is the genre of {t}?"]),
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
    pool = [f"The {a} {b}" for a in _ADJ for b in _NOUN] + [f"{a} {b}" for a in _ADJ for b in _NOUN]
    if n > len(pool):
        pool += [f"The {a} {b} of {c}" for a in _ADJ for b in _NOUN for c in _NOUN if b != c]
    if n > len(pool):
        raise ValueError(f"the world can name at most {len(pool)} entities, asked for {n}")
    return rng.sample(pool, n)


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
    country, language = rng.choice(_COUNTRIES)
    year = rng.randint(1950, 2023)
    date, date_aliases = _date(rng, year)
    runtime = rng.randint(80, 170)
    budget = round(rng.uniform(1, 90), 1)
    gross = round(budget * rng.uniform(0.3, 6.0), 1)
    lead = rng.choice(pools["people"])
    facts = {
        "director": (rng.choice(pools["people"]), []),
        "screenwriter": (rng.choice(pools["people"]), []),
        "composer": (rng.choice(pools["people"]), []),
        "starring": (lead, []),
        "studio": (rng.choice(pools["studios"]), []),
        "distributor": (rng.choice(pools["distributors"]), []),
        "country": (country, []),
        "language": (language, []),
        "release_date": (date, date_aliases),
        "runtime": (f"{runtime} minutes", [f"{runtime} min", str(runtime)]),
        "budget": _money(budget),
        "box_office": _money(gross),
        "genre": (rng.choice(_FILM_GENRES), []),
    }
    return Entity(eid, title, "films", split, facts)


def _novel(rng: random.Random, pools: dict[str, list[str]], eid: str, title: str) -> Entity:
    country, language = rng.choice(_COUNTRIES)
    date, date_aliases = _date(rng, rng.randint(1850, 2023))
    pages = rng.randint(120, 900)
    copies = rng.randint(2, 400) * 1000
    facts = {
        "author": (rng.choice(pools["people"]), []),
        "publisher": (rng.choice(pools["publishers"]), []),
        "country": (country, []),
        "language": (language, []),
        "publication_date": (date, date_aliases),
        "pages": (f"{pages} pages", [str(pages)]),
        "illustrator": (rng.choice(pools["people"]), []),
        "protagonist": (rng.choice(pools["people"]), []),
        "genre": (rng.choice(_NOVEL_GENRES), []),
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


def _documents(e: Entity, cfg: WorldConfig, rng: random.Random) -> list[str]:
    table = FILM_FACTS if e.domain == "films" else NOVEL_FACTS
    docs = []
    for k in range(cfg.paraphrases):
        sentences = []
        for attr, (value, _) in e.facts.items():
            templates = table[attr][0]
            tpl = templates[(k + rng.randrange(len(templates))) % len(templates)]
            sentences.append(tpl.format(t=e.title, v=value))
        if cfg.shuffle_sentences and k > 0:
            rng.shuffle(sentences)
        docs.append(" ".join([_lead_sentence(e, rng), *sentences]))
    return docs


def build_world(cfg: WorldConfig) -> KnowledgeDataset:
    """Draw the world for `cfg.seed`: deterministic, so a seed names a world."""
    rng = random.Random(cfg.seed)
    namer = _Namer(rng)
    n_films = cfg.n_old + cfg.n_train + cfg.n_test
    pools = {
        "people": namer.people(max(40, (n_films + cfg.n_cross) * 2)),
        "studios": namer.companies(max(6, n_films // 8), ["Pictures", "Studios", "Films"]),
        "distributors": namer.companies(max(6, n_films // 8), ["Releasing", "Distribution"]),
        "publishers": namer.companies(max(6, cfg.n_cross // 8 + 1), ["Press", "Books", "House"]),
    }
    titles = _titles(rng, n_films + cfg.n_cross)
    entities: list[Entity] = []
    splits = ["old"] * cfg.n_old + ["train"] * cfg.n_train + ["test"] * cfg.n_test
    for i, split in enumerate(splits):
        entities.append(_film(rng, pools, f"film-{i:05d}", titles[i], split))
    for j in range(cfg.n_cross):
        entities.append(_novel(rng, pools, f"novel-{j:05d}", titles[n_films + j]))

    docs, qa = [], []
    for e in entities:
        for k, text in enumerate(_documents(e, cfg, rng)):
            docs.append({
                "doc_id": f"{e.entity_id}-p{k}", "entity_id": e.entity_id, "title": e.title,
                "text": text, "domain": e.domain, "split": e.split,
                "source": {"kind": "synthetic", "seed": str(cfg.seed)},
            })
        table = FILM_FACTS if e.domain == "films" else NOVEL_FACTS
        attrs = list(e.facts)
        asked = rng.sample(attrs, min(cfg.attributes_per_entity, len(attrs)))
        for attr in sorted(asked, key=attrs.index):
            value, aliases = e.facts[attr]
            question = rng.choice(table[attr][1]).format(t=e.title)
            qa.append({
                "qa_id": f"{e.entity_id}-{attr}", "doc_id": f"{e.entity_id}-p0",
                "entity_id": e.entity_id, "question": question,
                "answers": [value, *dict.fromkeys(a for a in aliases if a != value)],
                "split": e.split, "generator": "synthetic", "attribute": attr,
            })
    meta = {"kind": "synthetic", "world": cfg.model_dump()}
    return KnowledgeDataset(docs=docs, qa=qa, meta=meta)


def retention_questions(ds: KnowledgeDataset, n: int, seed: int = 0) -> list[dict]:
    """A fixed sample of old-world questions: what the base knew, to measure forgetting."""
    old = ds.qa_where("old")
    return random.Random(seed).sample(old, min(n, len(old)))
