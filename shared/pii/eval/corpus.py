"""A labelled corpus shaped like Claude Code content, generated with Faker from a seed at run time.

Four shapes, as the redactor sees them: user prompts, Bash commands, JSON tool input (``tool_input`` /
``tool_parameters``, scanned value by value with the key as context, like the engine's JSON path) and API
error text. Five locales (en_US, en_GB, de_DE, fr_FR, id_ID) supply names, cities, companies, phone formats
and IBAN countries. Every sample also carries hard negatives that look like entities and are not: versions,
order and invoice ids, timestamps, epoch times, hashes, UUIDs, git SHAs, ports, durations, dotted numbers,
MAC addresses, numbers that fail a checksum, code that names a secret without holding one.

Labels are what a careful human would mark. Phone numbers are Faker's formats, kept only when
libphonenumber says the number exists in the locale's country (both engines measured here validate with
libphonenumber, so this favours neither; a number that cannot be dialled is not personal data). Card
numbers and IBANs are Faker's; NIK, NPWP and the secrets are built to their published formats.
"""

from __future__ import annotations

import base64
import json
import random
import re
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from urllib.parse import quote

import phonenumbers
from faker import Faker

from shared.pii.checksums import luhn_valid
from shared.pii.recognizers.id_nik import PROVINCE_CODES

LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "id_ID")
REGION_OF_LOCALE = {"en_US": "US", "en_GB": "GB", "de_DE": "DE", "fr_FR": "FR", "id_ID": "ID"}

# Entity types of the corpus, and the engine kind each is masked as.
KIND_OF_TYPE: dict[str, str] = {
    "EMAIL": "EMAIL",
    "PHONE": "PHONE",
    "CARD": "CARD",
    "IBAN": "IBAN",
    "US_SSN": "US_SSN",
    "IPV4": "IP_ADDRESS",
    "IPV6": "IP_ADDRESS",
    "ID_NIK": "ID_NIK",
    "ID_NPWP": "ID_NPWP",
    "SECRET_API_KEY": "SECRET",
    "SECRET_PRIVATE_KEY": "SECRET",
    "SECRET_JWT": "SECRET",
    "SECRET_URL_PASSWORD": "SECRET",
    "SECRET_ASSIGNED": "SECRET",
}
ENTITY_TYPES = tuple(KIND_OF_TYPE)


@dataclass(frozen=True)
class Entity:
    start: int
    end: int
    type: str


@dataclass
class LabelledField:
    """One text the engine scans: a whole prompt or command, or one string value of a JSON document."""

    key: str | None
    text: str
    entities: list[Entity] = field(default_factory=list)


@dataclass
class Sample:
    shape: str
    locale: str
    fields: list[LabelledField]
    # The JSON document as the CLI sends it, for JSON samples (the benchmark sends it through the pipeline).
    json_text: str | None = None


class _Builder:
    """Concatenates text and records where each entity landed."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.entities: list[Entity] = []
        self.length = 0

    def text(self, value: str) -> None:
        self.parts.append(value)
        self.length += len(value)

    def entity(self, entity_type: str, value: str, inner: tuple[int, int] | None = None) -> None:
        """``inner`` labels only part of the value (the password inside a URL)."""
        start, end = inner if inner else (0, len(value))
        self.entities.append(Entity(self.length + start, self.length + end, entity_type))
        self.text(value)

    def build(self, key: str | None = None) -> LabelledField:
        return LabelledField(key, "".join(self.parts), list(self.entities))


_SLOT = re.compile(r"\{(\w+)\}")
_B64URL = string.ascii_letters + string.digits + "-_"
_B62 = string.ascii_letters + string.digits
_B64 = string.ascii_letters + string.digits + "+/"


class Generator:
    """Entity values, filler and hard negatives for one seed; every draw goes through ``self.rng``."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.fakers: dict[str, Faker] = {}
        for index, locale in enumerate(LOCALES):
            faker = Faker(locale)
            faker.seed_instance(seed * 31 + index)
            self.fakers[locale] = faker
        self.locale = LOCALES[0]

    @property
    def fake(self) -> Faker:
        return self.fakers[self.locale]

    def pick(self, options: list[str] | tuple[str, ...]) -> str:
        return options[self.rng.randrange(len(options))]

    def chars(self, alphabet: str, length: int) -> str:
        return "".join(alphabet[self.rng.randrange(len(alphabet))] for _ in range(length))

    # Entities -------------------------------------------------------------------------------------------

    def email(self) -> str:
        choice = self.rng.random()
        if choice < 0.5:
            return str(self.fake.email())
        if choice < 0.8:
            return str(self.fake.company_email())
        user = self.fake.user_name()
        return f"{user}+{self.pick(['billing', 'ci', 'test', 'alerts'])}@{self.fake.domain_name(2)}"

    def phone(self) -> str:
        region = REGION_OF_LOCALE[self.locale]
        if self.locale == "id_ID" and self.rng.random() < 0.6:
            return self._indonesian_mobile()
        for _ in range(50):
            raw = str(self.fake.phone_number()).split("x")[0].strip()
            try:
                number = phonenumbers.parse(raw, region)
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(number):
                if self.rng.random() < 0.25:
                    style = self.pick(["E164", "INTERNATIONAL", "NATIONAL"])
                    return str(phonenumbers.format_number(number, getattr(phonenumbers.PhoneNumberFormat, style)))
                return raw
        raise RuntimeError(f"Faker gave no valid {region} phone number in 50 tries")

    def _indonesian_mobile(self) -> str:
        while True:
            prefix = self.pick(["811", "812", "813", "821", "822", "852", "853", "856", "857", "878", "896"])
            subscriber = self.chars(string.digits, self.rng.choice((7, 8)))
            number = phonenumbers.parse("0" + prefix + subscriber, "ID")
            if phonenumbers.is_valid_number(number):
                break
        national = "0" + prefix + subscriber
        style = self.rng.randrange(5)
        if style == 0:
            return national
        if style == 1:
            return f"{national[:4]}-{national[4:8]}-{national[8:]}"
        if style == 2:
            return f"{national[:4]} {national[4:8]} {national[8:]}"
        if style == 3:
            return "+62" + national[1:]
        return f"+62 {prefix}-{subscriber[:4]}-{subscriber[4:]}"

    def card(self) -> str:
        kind = self.pick(["visa16", "visa16", "mastercard", "mastercard", "amex", "discover", "jcb16", "diners",
                          "visa13", "jcb15", "maestro"])
        number = str(self.fake.credit_card_number(card_type=kind))
        if len(number) == 16 and self.rng.random() < 0.5:
            separator = self.pick([" ", "-"])
            return separator.join(number[i:i + 4] for i in range(0, 16, 4))
        if len(number) == 15 and number.startswith(("34", "37")) and self.rng.random() < 0.5:
            return f"{number[:4]} {number[4:10]} {number[10:]}"
        return number

    def iban(self) -> str:
        locale = self.pick(["de_DE", "fr_FR", "en_GB", "de_DE", "fr_FR", "en_GB", "nl_NL", "es_ES", "it_IT"])
        faker = self.fakers.get(locale)
        if faker is None:
            faker = Faker(locale)
            faker.seed_instance(self.rng.randrange(1 << 30))
            self.fakers[locale] = faker
        compact = str(faker.iban())
        if self.rng.random() < 0.5:
            return " ".join(compact[i:i + 4] for i in range(0, len(compact), 4))
        return compact

    def ssn(self) -> str:
        return str(self.fakers["en_US"].ssn())

    def ipv4(self) -> str:
        return str(self.fake.ipv4_private() if self.rng.random() < 0.5 else self.fake.ipv4_public())

    def ipv6(self) -> str:
        choice = self.rng.random()
        if choice < 0.5:
            return str(self.fake.ipv6())
        if choice < 0.75:
            return f"fe80::{self.chars('0123456789abcdef', 4)}:{self.chars('0123456789abcdef', 4)}"
        return f"2001:db8:{self.chars('0123456789abcdef', 3)}::{self.rng.randrange(1, 255)}"

    def nik(self) -> str:
        province = self.pick(sorted(str(code) for code in PROVINCE_CODES if code <= 94))
        regency = self.rng.randrange(1, 30) if self.rng.random() < 0.8 else self.rng.randrange(71, 80)
        district = self.rng.randrange(1, 41)
        born = date(1945, 1, 1) + timedelta(days=self.rng.randrange(62 * 365))
        day = born.day + (40 if self.rng.random() < 0.5 else 0)
        serial = self.rng.randrange(1, 3000)
        return f"{province}{regency:02d}{district:02d}{day:02d}{born.month:02d}{born.year % 100:02d}{serial:04d}"

    def npwp_digits(self) -> str:
        taxpayer = self.pick(["01", "02", "03", "07", "08", "09", "21", "31", "44", "47", "49", "54", "66", "76", "86"])
        serial = f"{self.rng.randrange(1, 999_999):06d}"
        for check in "0123456789":
            if luhn_valid(taxpayer + serial + check):
                break
        office = f"{self.rng.randrange(1, 999):03d}"
        branch = "000" if self.rng.random() < 0.8 else f"{self.rng.randrange(1, 20):03d}"
        return taxpayer + serial + check + office + branch

    @staticmethod
    def printed_npwp(digits: str) -> str:
        return f"{digits[:2]}.{digits[2:5]}.{digits[5:8]}.{digits[8]}-{digits[9:12]}.{digits[12:]}"

    def password(self) -> str:
        if self.rng.random() < 0.04:
            # People do use dictionary words.
            word = ""
            while len(word) < 6:
                word = str(self.fakers["en_US"].word())
            return word + self.pick(["", "", str(self.rng.randrange(10, 99))])
        if self.rng.random() < 0.5:
            return str(self.fake.password(length=self.rng.randrange(10, 20)))
        return self.chars(_B62, self.rng.randrange(12, 32))

    def url_password(self) -> str:
        return quote(str(self.fake.password(length=self.rng.randrange(10, 18))), safe="")

    def api_key(self) -> str:
        vendor = self.rng.randrange(8)
        if vendor == 0:
            return "sk-ant-api03-" + self.chars(_B64URL, 93) + "AA"
        if vendor == 1:
            return "sk-proj-" + self.chars(_B64URL, 74) + "T3BlbkFJ" + self.chars(_B64URL, 74)
        if vendor == 2:
            return "sk-" + self.chars(_B62, 20) + "T3BlbkFJ" + self.chars(_B62, 20)
        if vendor == 3:
            return self.aws_key_id()
        if vendor == 4:
            return self.pick(["ghp_", "gho_", "ghu_", "ghs_", "ghr_"]) + self.chars(_B62, 36)
        if vendor == 5:
            return "github_pat_" + self.chars(_B62, 22) + "_" + self.chars(_B62, 59)
        if vendor == 6:
            return (
                f"xox{self.pick(['b', 'p', 'a', 'o', 's', 'r'])}-{self.chars(string.digits, 12)}-"
                f"{self.chars(string.digits, 13)}-{self.chars(_B62, 24)}"
            )
        return "AIza" + self.chars(_B64URL, 35)

    def aws_key_id(self) -> str:
        return self.pick(["AKIA", "ASIA"]) + self.chars(string.ascii_uppercase + "234567", 16)

    def aws_secret_key(self) -> str:
        while True:
            key = self.chars(_B64, 40)
            if any(ch.isdigit() for ch in key) and any(ch.isupper() for ch in key):
                return key

    def jwt(self) -> str:
        header = {"alg": self.pick(["HS256", "RS256", "ES256"]), "typ": "JWT"}
        payload = {
            "sub": str(self.fake.uuid4()),
            "email": self.fake.email(),
            "iat": 1_795_000_000 + self.rng.randrange(10_000_000),
            "scope": self.pick(["read", "read write", "admin"]),
        }

        def segment(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        signature = bytes(self.rng.randrange(256) for _ in range(self.rng.choice((32, 64))))
        parts = (json.dumps(header).encode(), json.dumps(payload).encode(), signature)
        return ".".join(segment(part) for part in parts)

    def private_key(self) -> str:
        label = self.pick(["RSA PRIVATE KEY", "PRIVATE KEY", "OPENSSH PRIVATE KEY", "EC PRIVATE KEY"])
        lines = [self.chars(_B64, 64) for _ in range(self.rng.randrange(4, 12))]
        lines.append(self.chars(_B64, self.rng.randrange(10, 60)) + "==")
        return f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----"

    # Filler and hard negatives ---------------------------------------------------------------------------

    def version(self) -> str:
        return self.pick([
            f"{self.rng.randrange(0, 5)}.{self.rng.randrange(0, 30)}.{self.rng.randrange(0, 400)}",
            f"v{self.rng.randrange(0, 5)}.{self.rng.randrange(0, 30)}.{self.rng.randrange(0, 40)}",
            ".".join(str(self.rng.randrange(1 if i == 0 else 0, 9)) for i in range(5)),
            "2.1.332", f"1.0.{20260000 + self.rng.randrange(1, 1231)}", "3.11.7", "18.20.4",
        ])

    def order_id(self) -> str:
        # Order numbers come from a sequence: they start with 1-9, or are zero-padded ("000123456").
        length = self.rng.choice((8, 10, 12, 16))
        digits = (
            str(self.rng.randrange(1, 10)) + self.chars(string.digits, length - 1)
            if self.rng.random() < 0.8
            else f"{self.rng.randrange(1, 10**6):0{length}d}"
        )
        if len(digits) == 16 and luhn_valid(digits):
            digits = digits[:-1] + str((int(digits[-1]) + 1) % 10)  # order numbers are not cards
        return self.pick([
            digits, f"ORD-{self.rng.randrange(2020, 2027)}-{self.rng.randrange(1, 999_999):06d}",
            f"INV/{self.rng.randrange(2020, 2027)}/{self.rng.randrange(1, 12):02d}/{self.rng.randrange(1, 99999):05d}",
            f"#{self.rng.randrange(100_000, 99_999_999)}", f"PROJ-{self.rng.randrange(1, 9999)}",
        ])

    def timestamp(self) -> str:
        return self.pick([
            f"2026-{self.rng.randrange(1, 13):02d}-{self.rng.randrange(1, 29):02d} "
            f"{self.rng.randrange(24):02d}:{self.rng.randrange(60):02d}:{self.rng.randrange(60):02d}",
            f"2026-11-28T{self.rng.randrange(24):02d}:{self.rng.randrange(60):02d}:{self.rng.randrange(60):02d}."
            f"{self.rng.randrange(1000):03d}Z",
            str(1_732_812_345_000 + self.rng.randrange(10**9)),
            str(1_732_812_345 + self.rng.randrange(10**7)),
            f"{self.rng.randrange(24):02d}:{self.rng.randrange(60):02d}:{self.rng.randrange(60):02d}."
            f"{self.rng.randrange(1000):03d}",
            f"{self.rng.randrange(1, 29):02d}.{self.rng.randrange(1, 13):02d}.2026",
            f"{self.rng.randrange(1, 13):02d}/{self.rng.randrange(1, 29):02d}/2026",
        ])

    def hash_like(self) -> str:
        return self.pick([
            str(self.fake.sha1()), str(self.fake.sha256()), str(self.fake.md5()), str(self.fake.uuid4()),
            str(self.fake.sha1())[:7], f"0x{self.chars('0123456789abcdef', 12)}",
            f"sha256:{self.fake.sha256()}", str(self.fake.uuid4()).replace("-", ""),
        ])

    def quantity(self) -> str:
        return self.pick([
            f"{self.rng.randrange(1, 5000)}ms", f"{self.rng.randrange(1, 90)}s",
            f"port {self.rng.randrange(1024, 65535)}",
            f"localhost:{self.rng.randrange(1024, 65535)}", f"{self.rng.randrange(1, 10**9)} bytes",
            f"{self.rng.randrange(1, 10**6):,} tokens",
            "Rp " + f"{self.rng.randrange(1, 10**6) * 1000:,}".replace(",", "."),
            f"€{self.rng.randrange(1, 9999)},{self.rng.randrange(100):02d}", f"pid {self.rng.randrange(100, 99999)}",
            f"src/app/{self.fake.word()}.py:{self.rng.randrange(1, 900)}:{self.rng.randrange(1, 80)}",
            # A dotted quad with an octet over 255: not an address.
            ".".join(str(octet) for octet in (self.rng.randrange(1, 255), self.rng.randrange(256, 999), 7, 1)),
            "1.3.6.1.4.1.311.21.8", "00:1A:2B:3C:4D:5E", "std::vector<int>", "cpu: 500m", "HTTP/1.1 200",
        ])

    def bad_checksum(self) -> str:
        """Numbers with the right shape and a wrong check: not entities."""
        choice = self.rng.randrange(4)
        if choice == 0:
            number = str(self.fake.credit_card_number(card_type="visa16"))
            return number[:-1] + str((int(number[-1]) + 3) % 10)
        if choice == 1:
            iban = str(self.fakers["de_DE"].iban())
            return iban[:2] + f"{(int(iban[2:4]) + 1) % 100:02d}" + iban[4:]
        if choice == 2:
            digits = self.npwp_digits()
            return self.printed_npwp(digits[:8] + str((int(digits[8]) + 5) % 10) + digits[9:])
        # A 16-digit number whose province code does not exist.
        # No issuer uses these prefixes either, so the number is no card whatever its Luhn digit.
        return self.pick(["00", "10", "20", "80", "99"]) + self.chars(string.digits, 14)

    def negative(self) -> str:
        makers: list[Callable[[], str]] = [
            self.version, self.order_id, self.timestamp, self.hash_like, self.quantity, self.bad_checksum
        ]
        return makers[self.rng.randrange(len(makers))]()

    def name(self) -> str:
        return str(self.fake.name())

    def word(self) -> str:
        return str(self.fake.word())


def _entity_slots(gen: Generator) -> dict[str, tuple[str, Callable[[], str]]]:
    return {
        "EMAIL": ("EMAIL", gen.email),
        "PHONE": ("PHONE", gen.phone),
        "CARD": ("CARD", gen.card),
        "IBAN": ("IBAN", gen.iban),
        "SSN": ("US_SSN", gen.ssn),
        "SSN_BARE": ("US_SSN", lambda: gen.ssn().replace("-", "")),
        "IPV4": ("IPV4", gen.ipv4),
        "IPV6": ("IPV6", gen.ipv6),
        "NIK": ("ID_NIK", gen.nik),
        "NPWP": ("ID_NPWP", lambda: gen.printed_npwp(gen.npwp_digits())),
        "NPWP_BARE": ("ID_NPWP", gen.npwp_digits),
        "NPWP16": ("ID_NPWP", lambda: "0" + gen.npwp_digits()),
        "API_KEY": ("SECRET_API_KEY", gen.api_key),
        "AWS_SECRET": ("SECRET_API_KEY", gen.aws_secret_key),
        "AWS_KEY_ID": ("SECRET_API_KEY", gen.aws_key_id),
        "JWT": ("SECRET_JWT", gen.jwt),
        "PRIVATE_KEY": ("SECRET_PRIVATE_KEY", gen.private_key),
        "PASSWORD": ("SECRET_ASSIGNED", gen.password),
        "TOKEN": ("SECRET_ASSIGNED", lambda: gen.chars(_B62, gen.rng.randrange(24, 48))),
        "STRIPE": ("SECRET_API_KEY", lambda: "sk_live_" + gen.chars(_B62, 24)),
    }


def _fillers(gen: Generator) -> dict[str, Callable[[], str]]:
    return {
        "name": gen.name,
        "first": lambda: str(gen.fake.first_name()),
        "city": lambda: str(gen.fake.city()),
        "company": lambda: str(gen.fake.company()),
        "word": gen.word,
        "user": lambda: str(gen.fake.user_name()),
        "host": lambda: str(gen.fake.domain_name()),
        "path": lambda: str(gen.fake.file_path(depth=gen.rng.randrange(1, 4))),
        "neg": gen.negative,
        "version": gen.version,
        "order": gen.order_id,
        "ts": gen.timestamp,
        "hash": gen.hash_like,
        "qty": gen.quantity,
        "uuid": lambda: str(gen.fake.uuid4()),
        "db": lambda: gen.pick(["postgres", "postgresql", "mysql", "mongodb+srv", "redis", "amqp"]),
    }


# Templates by shape. {UPPER} slots are entities, {lower} slots are filler or hard negatives; {URL} is a
# connection string with a password inside.
PROMPTS: dict[str, list[str]] = {
    "en": [
        "please update the customer record for {name}: email {EMAIL}, phone {PHONE}; ticket {order} opened {ts}",
        "{name} says the refund for order {order} should go to card {CARD}, not the one ending in 4242",
        "the billing webhook failed at {ts} for {EMAIL}; retry after {qty} and check build {version}",
        "my SSN is {SSN} and the form keeps rejecting it, see {hash}",
        "ssn: {SSN_BARE} — can you check why the validator on line {qty} says it is invalid?",
        "send the wire to IBAN {IBAN} (account holder {name}), reference {order}",
        "the server at {IPV4} keeps timing out after {qty}; deploy {version} went out {ts}",
        "ping {IPV6} from the bastion and tell me the latency; the job id is {uuid}",
        "here is my key {API_KEY}, set it up in the .env and never commit it (commit {hash})",
        "why does login fail? I use the token {JWT} and get 401 at {ts}",
        "call me at {PHONE} or mail {EMAIL} if the migration {version} breaks",
        "the customer {name} from {city} paid with {CARD}; invoice {order}, amount {qty}",
        "DB is at {URL}, please run the migrations {version} against it",
        "my password is {PASSWORD} for the staging admin, rotate it after {qty}",
        "fix the test: it expects {neg} but gets {neg}; the fixture uses {EMAIL}",
        "refactor {path} so it no longer logs {neg}; keep {version} compatible",
        "the NIK {NIK} of {name} fails validation on the KTP upload form",
        "you can reach {first} on {PHONE} after 6pm, or write to {EMAIL}",
        "{first}'s number is {PHONE}; the old one was disconnected on {ts}",
    ],
    "de": [
        "Bitte überweise den Betrag an IBAN {IBAN}, Kontoinhaber {name}, Rechnung {order}",
        "Ruf {name} unter {PHONE} an oder schreib an {EMAIL}, Termin {ts}",
        "Der Server {IPV4} antwortet nicht mehr seit {ts}; Version {version}",
        "Meine Kreditkarte {CARD} wurde abgelehnt, Bestellung {order}",
        "Das Passwort für die Datenbank ist {PASSWORD}, bitte in den Tresor legen",
    ],
    "fr": [
        "Mon numéro est le {PHONE}, écris-moi à {EMAIL} avant {ts}",
        "Virement vers l'IBAN {IBAN} au nom de {name}, facture {order}",
        "La carte bancaire {CARD} a été refusée pour la commande {order}",
        "Le serveur {IPV4} ne répond plus depuis la version {version}",
    ],
    "id": [
        "Tolong perbarui data pelanggan {name}, NIK {NIK}, NPWP {NPWP}, no HP {PHONE}",
        "NIK saya {NIK} dan email {EMAIL}, kenapa verifikasi KTP gagal di {ts}?",
        "NPWP perusahaan {company}: {NPWP_BARE}, tolong cek di sistem pajak versi {version}",
        "npwp16 pribadi: {NPWP16}, tanggal {ts}, nomor pesanan {order}",
        "hubungi {name} di {PHONE} atau WA {PHONE}, kantor di {city}",
        "transfer ke rekening {IBAN} a.n. {name}, invoice {order}",
        "server {IPV4} down sejak {ts}, log {hash}",
        "kartu kredit {CARD} ditolak untuk pesanan {order}",
        "data KTP: {NIK} / {name} / {city}; NPWP: {NPWP}",
    ],
}
BASH: list[str] = [
    "psql '{URL}' -c \"select id, email from users where email = '{EMAIL}'\"",
    "curl -s -H 'Authorization: Bearer {TOKEN}' https://api.{host}/v1/orders/{order}",
    "export OPENAI_API_KEY={API_KEY} && python scripts/eval.py --run {uuid}",
    "export ANTHROPIC_API_KEY=\"{API_KEY}\"; claude -p 'summarise {path}'",
    "aws configure set aws_secret_access_key {AWS_SECRET} --profile {word}",
    "ssh deploy@{IPV4} -p {qty} 'sudo systemctl restart app'",
    "ping -c 3 {IPV6}",
    "mysql -u root -p{PASSWORD} shop -e 'select * from orders where id={order}'",
    "git log --author={EMAIL} --since={ts} --oneline | head -n 20",
    "DB_PASSWORD='{PASSWORD}' docker compose up -d api worker  # {version}",
    "kubectl create secret generic api --from-literal=api_key={TOKEN} -n {word}",
    "echo '{JWT}' | cut -d. -f2 | base64 -d",
    "grep -rn '{EMAIL}' logs/ | tail -n 50 > /tmp/{word}.log",
    "python manage.py createsuperuser --email {EMAIL} --noinput && echo done at {ts}",
    "curl -u {user}:{PASSWORD} https://{host}/api/health --max-time {qty}",
    "redis-cli -u {URL} ping",
    "nmap -sV {IPV4} -p 22,80,443  # scan started {ts}",
    "git clone https://{user}:{TOKEN}@github.com/{word}/{word}.git",
    "npm install lodash@4.17.21 && node scripts/seed.js --user {EMAIL} --phone '{PHONE}'",
    "./bin/charge --card {CARD} --amount {qty} --order {order}",
    "echo '{PRIVATE_KEY}' > ~/.ssh/id_{word} && chmod 600 ~/.ssh/id_{word}",
    "ls -la {path} && du -sh {path}  # {hash}",
    "pytest tests/ -k {word} --maxfail=1  # {version} {ts}",
]
ERRORS: list[str] = [
    "API Error: 400 {\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\","
    "\"message\":\"prompt rejected for {EMAIL}\"}}",
    "Error: connect ECONNREFUSED {IPV4}:5432 at TCPConnectWrap.afterConnect [as oncomplete] ({ts})",
    "Request failed with status code 401: invalid x-api-key {API_KEY} (request_id {uuid})",
    "stripe.error.CardError: Your card {CARD} was declined. request req_{hash}",
    "psycopg.OperationalError: connection to {URL} failed: timeout after {qty}",
    "ValidationError: phone '{PHONE}' for user {EMAIL} is not reachable (attempt {qty})",
    "upstream {IPV6} returned 503 after {qty}; trace {hash}",
    "jwt.exceptions.ExpiredSignatureError: token {JWT} expired at {ts}",
    "TypeError: Cannot read properties of undefined (reading 'id') at {path}:{qty} — build {version}",
    "Error: ENOENT: no such file or directory, open '{path}' ({ts})",
]
_URL_TEMPLATES = (
    "{db}://{user}:{PW}@{host}:5432/{word}",
    "{db}://{user}:{PW}@{host}/{word}?sslmode=require",
    "redis://:{PW}@{host}:6379/0",
    "https://{user}:{PW}@{host}/{word}.git",
)
# JSON tool input: (tool, document template). {UPPER} values become labelled fields.
JSON_TOOLS: list[tuple[str, dict[str, object]]] = [
    ("Bash", {"command": "@BASH", "description": "{word} {word} for {name}"}),
    ("Write", {"file_path": "/srv/app/.env", "content": "@ENV"}),
    ("Edit", {"file_path": "{path}", "old_string": "EMAIL = \"{EMAIL}\"",
              "new_string": "EMAIL = os.environ[\"EMAIL\"]"}),
    ("mcp__crm__update_customer", {"customer": {"name": "{name}", "email": "{EMAIL}", "phone": "{PHONE}",
                                                "nik": "{NIK}", "npwp": "{NPWP}", "city": "{city}"}}),
    ("mcp__billing__charge", {"card": "{CARD}", "amount": "{qty}", "order_id": "{order}", "iban": "{IBAN}"}),
    ("mcp__hr__employee", {"ssn": "{SSN_BARE}", "email": "{EMAIL}", "start": "{ts}", "phone": "{PHONE}"}),
    ("mcp__db__connect", {"host": "{IPV4}", "user": "{user}", "password": "{PASSWORD}", "port": 5432}),
    ("mcp__deploy__create", {"api_key": "{TOKEN}", "region": "{word}", "version": "{version}", "ip": "{IPV6}"}),
    ("WebFetch", {"url": "https://{host}/docs/{word}", "prompt": "summarise; ignore build {version} and {hash}"}),
    ("Read", {"file_path": "{path}", "offset": 120, "limit": 400}),
    ("Write", {"file_path": "/srv/app/client.py", "content": "@CODE"}),
    ("Write", {"file_path": "/srv/app/config.yaml", "content": "@YAML"}),
    ("Grep", {"pattern": "{neg}", "path": "{path}", "output_mode": "content"}),
]
_ENV_LINES = (
    "DATABASE_URL={URL}", "DB_PASSWORD={PASSWORD}", "STRIPE_SECRET_KEY={STRIPE}", "OPENAI_API_KEY={API_KEY}",
    "JWT_SECRET={TOKEN}", "ADMIN_EMAIL={EMAIL}", "DEBUG=false", "PORT={port}", "LOG_LEVEL=info",
    "SENTRY_RELEASE={version}", "AWS_ACCESS_KEY_ID={AWS_KEY_ID}", "aws_secret_access_key = {AWS_SECRET}",
)
# Source files written by the Write tool: mostly code that names secrets without holding them.
CODE: list[str] = [
    "import os\nimport requests\n\nAPI_URL = \"https://{host}/v2\"\nAPI_KEY = os.environ[\"API_KEY\"]\n\n"
    "def get_user(user_id: str, token: str | None = None) -> dict:\n"
    "    headers = {\"Authorization\": f\"Bearer {token or API_KEY}\"}\n"
    "    response = requests.get(f\"{API_URL}/users/{user_id}\", headers=headers, timeout=30)\n"
    "    response.raise_for_status()  # {version}\n    return response.json()\n",
    "const config = {\n  apiKey: process.env.API_KEY,\n  password: hashedPassword,\n  retries: 3,\n"
    "  timeoutMs: {qty},\n};\nexport async function login(email, password) {\n"
    "  const token = await auth.signIn(email, password);\n  return { token, expiresAt: Date.now() + 3600_000 };\n}\n",
    "class Settings(BaseSettings):\n    database_url: str\n    api_key: SecretStr\n"
    "    password: str = Field(min_length=12)\n"
    "    max_tokens: int = 4096\n    token_ttl_seconds: int = {port}\n",
    "STRIPE_KEY = \"{STRIPE}\"\nDEFAULT_TIMEOUT = {port}\n\ndef charge(amount_cents: int) -> str:\n"
    "    return stripe.Charge.create(amount=amount_cents, currency=\"eur\", api_key=STRIPE_KEY).id\n",
    "db = psycopg.connect(host=\"{IPV4}\", user=\"app\", password=\"{PASSWORD}\", dbname=\"{word}\")\n"
    "rows = db.execute(\"select id from orders where created_at > %s\", (\"{ts}\",)).fetchall()\n",
    "func main() {\n\ttoken := os.Getenv(\"GITHUB_TOKEN\")\n\tclient := github.NewClient(nil).WithAuthToken(token)\n"
    "\tlog.Printf(\"listening on :%d (build %s)\", {port}, \"{hash}\")\n}\n",
]
YAML: list[str] = [
    "database:\n  host: {IPV4}\n  port: 5432\n  user: app\n  password: {PASSWORD}\nlogging:\n  level: info\n",
    "smtp:\n  host: smtp.{host}\n  username: {EMAIL}\n  password: \"{PASSWORD}\"\n  port: 587\n",
    "auth:\n  client_id: {uuid}\n  client_secret: {TOKEN}\n  token_url: https://{host}/oauth/token\n"
    "  scopes: [read, write]\n",
    "image: registry.{host}/app:{version}\nresources:\n  limits: {cpu: 500m, memory: 512Mi}\n"
    "env:\n  - name: API_KEY\n    valueFrom: {secretKeyRef: {name: api, key: token}}\n",
]
# Hard negatives that could fool a careless engine, alone in a sample.
NEGATIVE_ONLY: list[str] = [
    "bump {word} from {version} to {version} and regenerate the lockfile ({hash})",
    "the cron ran at {ts} and {ts}, took {qty} and {qty}",
    "order {order} and {order} were shipped; invoices {order}",
    "compare {hash} with {hash}; both builds are {version}",
    "max_tokens=4096 token_count: {qty} password: str api_key = os.environ['API_KEY']",
    "const token = await getToken(); headers.Authorization = `Bearer ${token}`;",
    "def login(username: str, password: str) -> Token:  # see {path}",
    "set password=$DB_PASSWORD and secret: ${SECRET} in the template, never the values",
    "curl -H \"Authorization: Bearer $API_TOKEN\" https://{host}/v1/{word}",
    "Use <your-api-key> in place of sk-... when you copy the example",
    "the MAC 00:1A:2B:3C:4D:5E and the OID 1.3.6.1.4.1.311 are not addresses; nor is 999.1.1.1 or {version}",
    "listening on localhost:{port} — pid {qty}; uptime {qty}",
    "payment id {order}, amount Rp 1.250.000, date {ts}",
    "std::vector<int> v; v.reserve({port}); // {hash}",
    "NIK format: 16 digits, e.g. 0000000000000000 is rejected; npwp format 99.999.999.9-999.999",
    "git checkout {hash} && git cherry-pick {hash}",
    "memory at 0x7ffd5e8c{port} after {qty}; gc pause {qty}",
]


class CorpusBuilder:
    def __init__(self, seed: int) -> None:
        self.gen = Generator(seed)
        self.entity_slots = _entity_slots(self.gen)
        self.fillers = _fillers(self.gen)

    def _fill(self, template: str, builder: _Builder) -> None:
        cursor = 0
        for match in _SLOT.finditer(template):
            builder.text(template[cursor:match.start()])
            cursor = match.end()
            slot = match.group(1)
            if slot == "URL":
                self._url(builder)
            elif slot in self.entity_slots:
                entity_type, make = self.entity_slots[slot]
                builder.entity(entity_type, make())
            elif slot == "port":
                builder.text(str(self.gen.rng.randrange(1024, 65535)))
            elif slot in self.fillers:
                builder.text(self.fillers[slot]())
            else:
                builder.text(match.group())  # "${token}" in a code template is text, not a slot
        builder.text(template[cursor:])

    def _url(self, builder: _Builder) -> None:
        template = self.gen.pick(_URL_TEMPLATES)
        before, after = template.split("{PW}")
        builder.text(self._expand(before))
        builder.entity("SECRET_URL_PASSWORD", self.gen.url_password())
        builder.text(self._expand(after))

    def _expand(self, template: str) -> str:
        """Filler-only templates, expanded without labels."""
        return _SLOT.sub(lambda m: self.fillers[m.group(1)](), template)

    def text_sample(self, shape: str, template: str, locale: str) -> Sample:
        self.gen.locale = locale
        builder = _Builder()
        self._fill(template, builder)
        return Sample(shape, locale, [builder.build()])

    def json_sample(self, locale: str) -> Sample:
        self.gen.locale = locale
        tool, shape = self.gen.rng.choice(JSON_TOOLS)
        fields: list[LabelledField] = []
        document = self._json_value(shape, None, fields)
        return Sample(f"tool_input:{tool}", locale, fields, json.dumps(document, ensure_ascii=False))

    def _json_value(self, value: object, key: str | None, fields: list[LabelledField]) -> object:
        if isinstance(value, dict):
            return {k: self._json_value(v, k, fields) for k, v in value.items()}
        if not isinstance(value, str):
            return value
        builder = _Builder()
        if value == "@BASH":
            self._fill(self.gen.pick(BASH), builder)
        elif value == "@CODE":
            self._fill(self.gen.pick(CODE), builder)
        elif value == "@YAML":
            self._fill(self.gen.pick(YAML), builder)
        elif value == "@ENV":
            lines = self.gen.rng.sample(_ENV_LINES, self.gen.rng.randrange(3, 7))
            self._fill("\n".join(lines) + "\n", builder)
        elif value in {"{PASSWORD}", "{TOKEN}"}:
            # The key names the secret; the value alone is the whole entity.
            _, make = self.entity_slots[value.strip("{}")]
            builder.entity("SECRET_ASSIGNED", make())
        else:
            self._fill(value, builder)
        labelled = builder.build(key)
        fields.append(labelled)
        return labelled.text

    def samples(self, count: int) -> Iterator[Sample]:
        rng = self.gen.rng
        languages = {"en_US": "en", "en_GB": "en", "de_DE": "de", "fr_FR": "fr", "id_ID": "id"}
        for index in range(count):
            locale = LOCALES[index % len(LOCALES)]
            roll = rng.random()
            if roll < 0.30:
                yield self.text_sample("prompt", rng.choice(PROMPTS[languages[locale]]), locale)
            elif roll < 0.52:
                yield self.text_sample("bash", rng.choice(BASH), locale)
            elif roll < 0.72:
                yield self.json_sample(locale)
            elif roll < 0.85:
                yield self.text_sample("api_error", rng.choice(ERRORS), locale)
            else:
                yield self.text_sample("negative", rng.choice(NEGATIVE_ONLY), locale)


def build_corpus(count: int = 3000, seed: int = 20261128) -> list[Sample]:
    """``count`` samples, the same ones for the same seed."""
    return list(CorpusBuilder(seed).samples(count))
