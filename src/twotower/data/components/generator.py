"""A deterministic synthetic query/document generator where letter trigrams matter.

Pseudo-words are built from syllables. Each of ``num_topics`` topics owns ``stems_per_topic``
stems; a few English function words are shared by all. A document has a topic and 3-4 *key*
stems from it (their combination identifies the document), written in one morphological form
each (``-s``, ``-ed``, ``-ing`` ...), plus filler from its topic and common words. A query
names mostly the key stems of its document, often in another form and sometimes with a typo,
so exact word overlap misses matches that shared letter trigrams still catch; and sometimes by
a synonym (a fixed unrelated pseudo-word per stem) that only a trained model can match.

>>> data = SyntheticGenerator(num_docs=40, num_topics=2, seed=0).generate()
>>> len(data.docs), len(data.train.queries), len(data.val.queries)
(40, 128, 12)
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from twotower.errors import check

SUFFIXES = (
    "",
    "s",
    "ed",
    "ing",
    "er",
    "ly",
    "ers",
    "ings",
    "ingly",
    "ness",
    "ment",
    "ation",
    "ations",
)
COMMON = (
    "the of and to in for with on by from at as is are was be this that it or an a which new "
    "how what about into more most some other after before between under over all can will"
).split()
_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "st", "tr")
_VOWELS = ("a", "e", "i", "o", "u")
_CODAS = ("", "", "", "n", "r", "l", "s")
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass
class SyntheticSplit:
    """The queries of one split and the documents they may retrieve.

    ``pos_ids[i]`` is query ``i``'s document; ``neg_ids[i]`` its presampled (unclicked)
    documents, alternating hard (same topic) and random, all from ``doc_ids``.
    """

    doc_ids: list[int]
    queries: list[str]
    query_ids: list[int]
    pos_ids: list[int]
    neg_ids: list[list[int]]


@dataclass
class SyntheticData:
    """Every document (``doc_id`` = index into ``docs``) and the three splits."""

    docs: list[str]
    topics: list[int]
    train: SyntheticSplit
    val: SyntheticSplit
    test: SyntheticSplit


class SyntheticGenerator:
    """Generates :class:`SyntheticData`; the same arguments always give the same data.

    Documents are split 80/10/10 into train / val / test, so evaluation measures
    generalisation to unseen documents.

    Args:
        num_docs: documents in the corpus (all splits).
        num_topics: topics, each with its own stems.
        stems_per_topic: stems per topic.
        queries_per_doc: queries written for each train document.
        eval_queries_per_doc: queries written for each val / test document.
        num_negatives: presampled negatives per query.
        typo_rate: probability that a query word gets one typo.
        variant_rate: probability that a query writes a key stem in another form than its
            document does.
        synonym_rate: probability that a query names a key stem by its synonym.
        seed: random seed. Each split's queries have their own stream, so changing
            ``queries_per_doc`` leaves the val / test queries unchanged.
    """

    def __init__(
        self,
        num_docs: int = 7000,
        num_topics: int = 20,
        stems_per_topic: int = 60,
        queries_per_doc: int = 4,
        eval_queries_per_doc: int = 3,
        num_negatives: int = 4,
        typo_rate: float = 0.1,
        variant_rate: float = 0.5,
        synonym_rate: float = 0.3,
        seed: int = 0,
    ):
        counts = {  # key: (value, smallest, largest)
            "num_docs": (num_docs, 30, None),  # >= 3 documents per split
            "num_topics": (num_topics, 1, None),
            "stems_per_topic": (stems_per_topic, 6, 200),  # 200: a topic has 10 syllables
            "queries_per_doc": (queries_per_doc, 1, None),
            "eval_queries_per_doc": (eval_queries_per_doc, 1, None),
            "num_negatives": (num_negatives, 1, None),
        }
        for key, (value, lo, hi) in counts.items():
            ok = type(value) is int and lo <= value <= (hi or value)
            check(ok, key, value, f"must be an integer in [{lo}, {hi or 'inf'}]")
        rates = {"typo_rate": typo_rate, "variant_rate": variant_rate, "synonym_rate": synonym_rate}
        for key, rate in rates.items():
            check(isinstance(rate, int | float) and 0 <= rate <= 1, key, rate, "must be in [0, 1]")
        self.num_docs, self.num_topics, self.stems_per_topic = num_docs, num_topics, stems_per_topic
        self.queries_per_doc, self.eval_queries_per_doc = queries_per_doc, eval_queries_per_doc
        self.num_negatives, self.seed = num_negatives, seed
        self.typo_rate, self.variant_rate, self.synonym_rate = typo_rate, variant_rate, synonym_rate

    def generate(self) -> SyntheticData:
        """Build the corpus, the splits, the queries and their negatives."""
        rng = random.Random(self.seed)
        stems, synonyms = self._stems(rng)  # stems[topic]: its stems; synonyms[stem]: a word
        docs, topics, keys = [], [], []  # keys[d]: {stem: the form document d uses}
        for _ in range(self.num_docs):
            topic = rng.randrange(self.num_topics)
            text, doc_keys = self._document(rng, stems[topic])
            docs.append(text)
            topics.append(topic)
            keys.append(doc_keys)
        order = list(range(self.num_docs))
        rng.shuffle(order)
        n_train, n_val = round(0.8 * self.num_docs), round(0.1 * self.num_docs)
        parts = {
            "train": (order[:n_train], self.queries_per_doc),
            "val": (order[n_train : n_train + n_val], self.eval_queries_per_doc),
            "test": (order[n_train + n_val :], self.eval_queries_per_doc),
        }
        query_ids: dict[str, int] = {}  # identical texts share an id, across splits
        splits = {}
        for name, (doc_ids, per_doc) in parts.items():
            rng = random.Random(f"{self.seed}/{name}")  # str seeds are hashed stably (sha512)
            doc_ids = sorted(doc_ids)
            pairs = [
                (self._query(rng, keys[d], stems[topics[d]], synonyms), d)
                for d in doc_ids
                for _ in range(per_doc)
            ]
            rng.shuffle(pairs)  # mix documents within eval batches too
            queries = [q for q, _ in pairs]
            pos_ids = [d for _, d in pairs]
            splits[name] = SyntheticSplit(
                doc_ids=doc_ids,
                queries=queries,
                query_ids=[query_ids.setdefault(q, len(query_ids)) for q in queries],
                pos_ids=pos_ids,
                neg_ids=self._negatives(rng, pos_ids, doc_ids, topics),
            )
        return SyntheticData(docs, topics, **splits)

    def _stems(self, rng: random.Random) -> tuple[list[list[str]], dict[str, str]]:
        syllables = sorted({o + v + c for o in _ONSETS for v in _VOWELS for c in _CODAS})
        seen = set(COMMON)

        def new_word(pool: list[str]) -> str:
            while True:
                word = "".join(rng.choice(pool) for _ in range(rng.choice((2, 2, 3))))
                if word not in seen:
                    seen.add(word)
                    return word

        # A topic's stems share a few syllables, so their trigrams overlap a lot.
        stems = []
        for _ in range(self.num_topics):
            own = rng.sample(syllables, 10)
            stems.append([new_word(own) for _ in range(self.stems_per_topic)])
        synonyms = {s: new_word(syllables) for topic_stems in stems for s in topic_stems}
        return stems, synonyms

    def _document(self, rng: random.Random, topic_stems: list[str]) -> tuple[str, dict[str, str]]:
        keys = {s: s + rng.choice(SUFFIXES) for s in rng.sample(topic_stems, rng.randint(3, 4))}
        words = [form for form in keys.values() for _ in range(rng.randint(1, 3))]
        length = rng.randint(20, 40)
        while len(words) < length:
            if rng.random() < 0.5:
                words.append(rng.choice(COMMON))
            else:  # topic filler: other documents' key stems appear here as noise
                words.append(rng.choice(topic_stems) + rng.choice(SUFFIXES))
        rng.shuffle(words)
        return " ".join(words), keys

    def _query(
        self,
        rng: random.Random,
        keys: dict[str, str],
        topic_stems: list[str],
        synonyms: dict[str, str],
    ) -> str:
        unused = list(keys)
        rng.shuffle(unused)
        words = []
        for i in range(rng.randint(2, 5)):
            r = rng.random()
            if unused and (i == 0 or r < 0.7):
                stem = unused.pop()
                form = keys[stem]
                if rng.random() < self.synonym_rate:  # learnable, invisible to lexical match
                    form = synonyms[stem] + rng.choice(SUFFIXES)
                elif rng.random() < self.variant_rate:
                    form = stem + rng.choice([s for s in SUFFIXES if stem + s != form])
                words.append(self._typo(rng, form))
            elif r < 0.9:
                words.append(self._typo(rng, rng.choice(topic_stems) + rng.choice(SUFFIXES)))
            else:
                words.append(rng.choice(COMMON))
        rng.shuffle(words)
        return " ".join(words)

    def _typo(self, rng: random.Random, word: str) -> str:
        if len(word) < 4 or rng.random() >= self.typo_rate:
            return word
        i = rng.randrange(1, len(word) - 2)  # keep the first and last letters, as people do
        kind = rng.randrange(4)
        if kind == 0:  # swap two neighbours
            return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        if kind == 1:  # deletion
            return word[:i] + word[i + 1 :]
        if kind == 2:  # insertion
            return word[:i] + rng.choice(_LETTERS) + word[i:]
        return word[:i] + rng.choice(_LETTERS) + word[i + 1 :]  # substitution

    def _negatives(
        self, rng: random.Random, pos_ids: list[int], doc_ids: list[int], topics: list[int]
    ) -> list[list[int]]:
        by_topic: dict[int, list[int]] = {}
        for d in doc_ids:
            by_topic.setdefault(topics[d], []).append(d)
        distinct = len(doc_ids) - 1 >= self.num_negatives  # else repeats are unavoidable
        negs = []
        for pos in pos_ids:
            same = by_topic[topics[pos]]
            chosen: list[int] = []
            for k in range(self.num_negatives):
                pool = same if k % 2 == 0 and len(same) > self.num_negatives else doc_ids
                d = pos
                while d == pos or (distinct and d in chosen):
                    d = rng.choice(pool)
                chosen.append(d)
            negs.append(chosen)
        return negs
