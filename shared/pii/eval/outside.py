# ruff: noqa: E501 - tables of phrasings read best one language per line
"""The outside corpus: personal values from Faker, in Claude Code-shaped texts, never from our recognizer tables.

Faker (an independent library, installed from the package index) supplies every planted value: names, phone
numbers, e-mail addresses, IBANs, card numbers, US SSNs, IP addresses and passwords, in the locales the
pipeline serves (English US/GB/IN/AU, German, French, Spanish, Dutch, Indonesian, Brazilian Portuguese). It
also supplies the look-alikes that must survive: versions, UUIDs, SHAs, ports, timestamps, paths, order ids,
amounts. The texts around them are four content kinds the CLI emits: a prompt in the locale's language, a
Bash command, a JSON tool input, an API error.

Nothing here comes from a recognizer: no province codes, no phone metadata, no secret phrasings list. The
phrasings that carry a value ("call me on ...", "Passwort: ...") are how people write in each language.

Held-out split: each sample is assigned to "dev" or "held-out" by a hash of (split seed, sample number),
30 % held out. ``make eval-redaction`` gates on the held-out split and only ever prints the dev split's
errors; anyone tuning a recognizer looks at dev errors only (docs/redaction.md).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from faker import Faker

LOCALES = ("en_US", "en_GB", "en_IN", "en_AU", "de_DE", "fr_FR", "es_ES", "nl_NL", "id_ID", "pt_BR")
LANGUAGE = {
    "en_US": "en", "en_GB": "en", "en_IN": "en", "en_AU": "en", "de_DE": "de", "fr_FR": "fr", "es_ES": "es",
    "nl_NL": "nl", "id_ID": "id", "pt_BR": "pt",
}
CONTENT_KINDS = ("prompt", "bash", "json_tool", "api_error")
HELD_OUT_SHARE = 0.3
# Faker's dates end "now" by default; a fixed end keeps the corpus the same from one day to the next.
_END_OF_TIME = datetime(2026, 1, 1, tzinfo=UTC)
SPLIT_SEED = "outside-corpus-split-1"

# kind -> phrasings per language, "{v}" the planted value. How people write, not what a recognizer keys on.
PHRASES: dict[str, dict[str, tuple[str, ...]]] = {
    "PERSON": {
        "en": ("ask {v} to review it", "cc {v} on the thread", "this came from {v}", "{v} said the build is red",
               "assign the ticket to {v}", "thanks {v} for the fix", "Hi {v}, can you check this?",
               "email {v} when it is done", "the customer {v} complained", "written by {v} last week"),
        "de": ("frag {v} nach dem Review", "das kam von {v}", "{v} sagt, der Build ist rot", "Hallo {v}, kannst du das prüfen?",
               "schick {v} eine Mail", "der Kunde {v} hat sich beschwert", "danke {v} für den Fix"),
        "fr": ("demande à {v} de relire", "ça vient de {v}", "{v} dit que le build est cassé", "Bonjour {v}, peux-tu vérifier ?",
               "envoie un mail à {v}", "le client {v} s'est plaint", "merci {v} pour le correctif"),
        "es": ("pregunta a {v} por la revisión", "esto vino de {v}", "{v} dice que la build falla", "Hola {v}, ¿puedes revisarlo?",
               "manda un correo a {v}", "el cliente {v} se quejó", "gracias {v} por el arreglo"),
        "nl": ("vraag {v} om een review", "dit kwam van {v}", "{v} zegt dat de build faalt", "Hallo {v}, kun je dit nakijken?",
               "mail {v} als het klaar is", "de klant {v} klaagde", "bedankt {v} voor de fix"),
        "id": ("tanya {v} soal review", "ini dari {v}", "{v} bilang build-nya gagal", "Halo {v}, bisa dicek?",
               "kirim email ke {v}", "pelanggan {v} komplain", "terima kasih {v} atas perbaikannya"),
        "pt": ("pergunte a {v} sobre a revisão", "isso veio de {v}", "{v} disse que o build falhou", "Olá {v}, pode verificar?",
               "mande um email para {v}", "o cliente {v} reclamou", "obrigado {v} pela correção"),
    },
    "PHONE": {
        "en": ("call me on {v}", "my number is {v}", "phone: {v}", "text {v} if it breaks", "reach the customer at {v}"),
        "de": ("ruf mich unter {v} an", "meine Nummer ist {v}", "Telefon: {v}", "erreichbar unter {v}"),
        "fr": ("appelle-moi au {v}", "mon numéro est le {v}", "Tél : {v}", "joignable au {v}"),
        "es": ("llámame al {v}", "mi número es {v}", "Teléfono: {v}", "contacto: {v}"),
        "nl": ("bel me op {v}", "mijn nummer is {v}", "Telefoon: {v}", "bereikbaar op {v}"),
        "id": ("hubungi saya di {v}", "nomor HP saya {v}", "Telp: {v}", "WA ke {v}"),
        "pt": ("me liga no {v}", "meu número é {v}", "Telefone: {v}", "contato: {v}"),
    },
    "EMAIL": {
        "en": ("send it to {v}", "my email is {v}", "contact: {v}"), "de": ("schick es an {v}", "E-Mail: {v}"),
        "fr": ("envoie-le à {v}", "courriel : {v}"), "es": ("envíalo a {v}", "correo: {v}"),
        "nl": ("stuur het naar {v}", "e-mail: {v}"), "id": ("kirim ke {v}", "email saya {v}"),
        "pt": ("envie para {v}", "email: {v}"),
    },
    "IBAN": {
        "en": ("pay to IBAN {v}", "account {v}"), "de": ("überweise auf {v}", "IBAN: {v}"),
        "fr": ("virement sur {v}", "IBAN : {v}"), "es": ("transfiere a {v}", "IBAN: {v}"),
        "nl": ("maak over naar {v}", "IBAN: {v}"), "id": ("transfer ke {v}", "rekening {v}"),
        "pt": ("transfira para {v}", "IBAN: {v}"),
    },
    "CARD": {
        "en": ("charge card {v}", "my card number is {v}"), "de": ("Karte {v} belasten", "Kartennummer {v}"),
        "fr": ("débiter la carte {v}", "carte n° {v}"), "es": ("cobra la tarjeta {v}", "tarjeta {v}"),
        "nl": ("schrijf af van kaart {v}", "kaartnummer {v}"), "id": ("tagih kartu {v}", "nomor kartu {v}"),
        "pt": ("cobre no cartão {v}", "cartão {v}"),
    },
    "US_SSN": {"en": ("my SSN is {v}", "social security number {v}", "ssn: {v}")},
    "IP_ADDRESS": {
        "en": ("the server at {v} is down", "ssh into {v}", "blocked {v} in the firewall"),
        "de": ("der Server {v} antwortet nicht", "ssh auf {v}"), "fr": ("le serveur {v} ne répond pas", "ssh vers {v}"),
        "es": ("el servidor {v} no responde", "ssh a {v}"), "nl": ("de server {v} reageert niet", "ssh naar {v}"),
        "id": ("server {v} mati", "ssh ke {v}"), "pt": ("o servidor {v} caiu", "ssh para {v}"),
    },
    "PASSWORD": {
        "en": ("my password is {v}", "password: {v}", "the prod password is {v}", "log in with password {v}"),
        "de": ("mein Passwort ist {v}", "Passwort: {v}", "das Kennwort lautet {v}"),
        "fr": ("mon mot de passe est {v}", "mot de passe : {v}"), "es": ("mi contraseña es {v}", "contraseña: {v}"),
        "nl": ("mijn wachtwoord is {v}", "wachtwoord: {v}"), "id": ("password saya {v}", "kata sandi: {v}"),
        "pt": ("minha senha é {v}", "password: {v}"),
    },
}
# Look-alikes: what must come through unchanged. Product and library names are a fixed sample of the tools a
# developer names; everything else is generated.
PRODUCTS = (
    "Docker Compose", "React Router", "Pull Request", "GitHub Actions", "Visual Studio Code", "Claude Code",
    "Spring Boot", "Next.js", "Node.js", "Apache Kafka", "Google Cloud", "Amazon Web Services", "Jest", "Tailwind CSS",
    "Redux Toolkit", "Ruby on Rails", "Django REST Framework", "Angular Material", "Azure DevOps", "Vue Router",
)


@dataclass(frozen=True)
class Planted:
    value: str  # as the engine sees it after JSON decoding
    kind: str  # PERSON, PHONE, ... or LOOKALIKE
    detail: str = ""


@dataclass
class OutsideSample:
    number: int
    locale: str
    content_kind: str
    split: str
    text: str
    planted: list[Planted] = field(default_factory=list)


def split_of(number: int) -> str:
    digest = hashlib.sha256(f"{SPLIT_SEED}:{number}".encode()).digest()
    return "held-out" if digest[0] / 256 < HELD_OUT_SHARE else "dev"


class _Text:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.planted: list[Planted] = []
        self.length = 0

    def add(self, text: str, kind: str | None = None, detail: str = "", value: str | None = None) -> None:
        if kind is not None:
            self.planted.append(Planted(text if value is None else value, kind, detail))
        self.parts.append(text)
        self.length += len(text)

    def phrase(self, template: str, value: str, kind: str, detail: str = "") -> None:
        before, after = template.split("{v}")
        self.add(before)
        self.add(value, kind, detail)
        self.add(after)

    @property
    def text(self) -> str:
        return "".join(self.parts)


class OutsideCorpus:
    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.fakers = {locale: Faker(locale) for locale in LOCALES}
        for index, locale in enumerate(LOCALES):
            self.fakers[locale].seed_instance(seed * 100 + index)

    def value(self, kind: str, locale: str) -> tuple[str, str]:
        """A planted value of ``kind`` and its detail (the country of a phone, the locale otherwise)."""
        fake = self.fakers[locale]
        if kind == "PERSON":
            # As Faker writes names: titles, degrees, double and particled surnames included.
            return fake.name(), locale
        if kind == "PHONE":
            return fake.phone_number(), locale
        if kind == "EMAIL":
            return fake.email(), locale
        if kind == "IBAN":
            return fake.iban(), locale
        if kind == "CARD":
            return fake.credit_card_number(), locale
        if kind == "US_SSN":
            return self.fakers["en_US"].ssn(), "en_US"
        if kind == "IP_ADDRESS":
            return (fake.ipv4_public() if self.random.random() < 0.7 else fake.ipv6()), locale
        if kind == "PASSWORD":
            return fake.password(length=self.random.choice((8, 10, 12, 14)), special_chars=self.random.random() < 0.6), locale
        raise ValueError(kind)

    def lookalike(self, locale: str) -> tuple[str, str]:
        fake, rnd = self.fakers[locale], self.random
        choice = rnd.randrange(13)
        if choice == 0:
            return f"v{rnd.randint(1, 20)}.{rnd.randint(0, 9)}.{rnd.randint(0, 9)}.{rnd.randint(0, 20)}", "version"
        if choice == 1:
            return f"version {rnd.randint(1, 12)}.{rnd.randint(0, 9)}.{rnd.randint(0, 9)}.{rnd.randint(1, 9)}", "version"
        if choice == 2:
            return f"{fake.word()}=={rnd.randint(1, 9)}.{rnd.randint(0, 20)}.{rnd.randint(0, 9)}.{rnd.randint(0, 9)}", "requirements"
        if choice == 3:
            return f'"{fake.word()}": "^{rnd.randint(1, 19)}.{rnd.randint(0, 20)}.{rnd.randint(0, 9)}"', "package.json"
        if choice == 4:
            return str(fake.uuid4()), "uuid"
        if choice == 5:
            return fake.sha1(), "sha"
        if choice == 6:
            return f"localhost:{fake.port_number()}", "port"
        if choice == 7:
            return fake.iso8601(end_datetime=_END_OF_TIME), "timestamp"
        if choice == 8:
            return fake.file_path(depth=rnd.randint(2, 4)), "path"
        if choice == 9:
            return fake.bothify("ORD-####-####-??").upper(), "order id"
        if choice == 10:
            return rnd.choice(PRODUCTS), "product"
        if choice == 11:
            return f"{fake.word().capitalize()}{rnd.choice(('Service', 'Controller', 'Repository', 'Handler'))}", "identifier"
        return str(fake.unix_time(end_datetime=_END_OF_TIME)).split(".")[0], "epoch"

    def sample(self, number: int) -> OutsideSample:
        rnd = self.random
        locale = LOCALES[number % len(LOCALES)]
        language = LANGUAGE[locale]
        content_kind = CONTENT_KINDS[(number // len(LOCALES)) % len(CONTENT_KINDS)]
        kinds = [k for k in PHRASES if language in PHRASES[k] or (k == "US_SSN" and locale == "en_US")]
        kinds = [k for k in kinds if k != "US_SSN" or locale == "en_US"]
        # Names are a large share of what people paste; every sample has a fair chance of one.
        chosen = rnd.sample(kinds, 2) if rnd.random() < 0.6 else ["PERSON", rnd.choice(kinds)]
        chosen = list(dict.fromkeys(chosen))
        out = _Text()
        render = _RENDERERS[content_kind]
        render(self, out, locale, chosen)
        return OutsideSample(number, locale, content_kind, split_of(number), out.text, out.planted)

    def phrase_for(self, kind: str, locale: str) -> str:
        phrases = PHRASES[kind]
        return self.random.choice(phrases.get(LANGUAGE[locale]) or phrases["en"])


def _prompt(corpus: OutsideCorpus, out: _Text, locale: str, kinds: list[str]) -> None:
    rnd = corpus.random
    look, detail = corpus.lookalike(locale)
    out.add(rnd.choice(("Please ", "", "Quick one: ", "Hey, ")) if LANGUAGE[locale] == "en" else "")
    out.add(rnd.choice(("Fix the login bug. ", "Update the README. ", "The tests fail. ", "Deploy failed. ")))
    for kind in kinds:
        value, value_detail = corpus.value(kind, locale)
        out.phrase(corpus.phrase_for(kind, locale), value, kind, value_detail)
        out.add(". ")
    out.add("See ")
    out.add(look, "LOOKALIKE", detail)
    out.add(" for details.")


def _bash(corpus: OutsideCorpus, out: _Text, locale: str, kinds: list[str]) -> None:
    rnd = corpus.random
    look, detail = corpus.lookalike(locale)
    first, *rest = kinds
    value, value_detail = corpus.value(first, locale)
    shape = rnd.randrange(3)
    if shape == 0:
        out.add('git commit -m "')
        out.phrase(corpus.phrase_for(first, locale), value, first, value_detail)
        out.add(" (")
        out.add(look, "LOOKALIKE", detail)
        out.add(')"')
    elif shape == 1:
        out.add("echo '")
        out.phrase(corpus.phrase_for(first, locale), value, first, value_detail)
        out.add("' >> notes.txt && grep -rn '")
        out.add(look, "LOOKALIKE", detail)
        out.add("' src/")
    else:
        out.add('curl -s -X POST https://api.internal.example/v1/notes -d "')
        out.phrase(corpus.phrase_for(first, locale), value, first, value_detail)
        out.add('" -H "X-Ref: ')
        out.add(look, "LOOKALIKE", detail)
        out.add('"')
    for kind in rest:
        value, value_detail = corpus.value(kind, locale)
        out.add(" # ")
        out.phrase(corpus.phrase_for(kind, locale), value, kind, value_detail)


def _json_tool(corpus: OutsideCorpus, out: _Text, locale: str, kinds: list[str]) -> None:
    """A tool input as the CLI sends it: the planted values inside JSON strings (escaped as JSON escapes)."""
    look, detail = corpus.lookalike(locale)
    out.add('{"file_path": ')
    out.add(json.dumps(corpus.fakers[locale].file_path(depth=3)))
    out.add(', "content": "')
    for kind in kinds:
        value, value_detail = corpus.value(kind, locale)
        before, after = corpus.phrase_for(kind, locale).split("{v}")
        out.add(json.dumps(before)[1:-1])
        out.add(json.dumps(value, ensure_ascii=False)[1:-1], kind, value_detail, value)
        out.add(json.dumps(after)[1:-1] + "\\n")
    out.add('", "ref": "')
    out.add(json.dumps(look)[1:-1], "LOOKALIKE", detail, look)
    out.add('"}')


def _api_error(corpus: OutsideCorpus, out: _Text, locale: str, kinds: list[str]) -> None:
    look, detail = corpus.lookalike(locale)
    status = corpus.random.choice((400, 409, 422, 500))
    out.add(f'API Error: {status} {{"type":"error","error":{{"type":"invalid_request_error","message":"')
    for kind in kinds:
        value, value_detail = corpus.value(kind, locale)
        before, after = corpus.phrase_for(kind, locale).split("{v}")
        out.add(json.dumps(before, ensure_ascii=False)[1:-1])
        out.add(json.dumps(value, ensure_ascii=False)[1:-1], kind, value_detail)
        out.add(json.dumps(after, ensure_ascii=False)[1:-1] + "; ")
    out.add("request ")
    out.add(json.dumps(look, ensure_ascii=False)[1:-1], "LOOKALIKE", detail)
    out.add('"}}')


_RENDERERS: dict[str, Callable[[OutsideCorpus, _Text, str, list[str]], None]] = {
    "prompt": _prompt, "bash": _bash, "json_tool": _json_tool, "api_error": _api_error,
}


def build_outside_corpus(count: int = 2000, seed: int = 7) -> list[OutsideSample]:
    corpus = OutsideCorpus(seed)
    return [corpus.sample(number) for number in range(count)]
