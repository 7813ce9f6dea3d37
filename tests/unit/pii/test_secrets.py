from __future__ import annotations

import pytest

from shared.pii import PiiEngine
from tests.unit.pii.conftest import found

ANTHROPIC = "sk-ant-api03-" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z" * 3 + "AA"
OPENAI_PROJECT = "sk-proj-" + "x9Y8w7V6u5T4s3R2q1P0" * 4 + "T3BlbkFJ" + "a1B2c3D4e5F6g7H8"
OPENAI_LEGACY = "sk-" + "Zq3Wx8Ec5Rv2Tb7Yn4Um9Io1" + "T3BlbkFJ" + "Pa6Sd0Fg3Hj8Kl2Zx5Cv"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkphbmUgUm9lIn0."
    "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PRIVATE_KEY = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7x9zQ\nQm5vdCBhIHJlYWwga2V5\n-----END RSA PRIVATE KEY-----"

# (text, the secret that must be masked)
POSITIVES = [
    # Plain passwords in their common phrasings, in every listed language.
    ("use password Summer2024! to log in", "Summer2024!"),
    ("pw: s3cr3tPass", "s3cr3tPass"),
    ("pass: qwerty123", "qwerty123"),
    ("Das Passwort lautet Geheim123", "Geheim123"),
    ("het wachtwoord is Zomer2024", "Zomer2024"),
    ("wachtwoord: Zomer2024", "Zomer2024"),
    ("kata sandi saya Rahasia123", "Rahasia123"),
    ("the passcode is 482913", "482913"),
    ("Password hunter2 works", "hunter2"),
    ("la contraseña es Verano2024", "Verano2024"),
    (f"export ANTHROPIC_API_KEY={ANTHROPIC}", ANTHROPIC),
    (f"OPENAI_API_KEY='{OPENAI_PROJECT}'", OPENAI_PROJECT),
    (f"key {OPENAI_LEGACY} leaked", OPENAI_LEGACY),
    ("aws_access_key_id = AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    ("temporary ASIAY34FZKBOKMUTVV7A creds", "ASIAY34FZKBOKMUTVV7A"),
    ("aws secret access key wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("AKIAIOSFODNN7EXAMPLE\nwJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("GITHUB_TOKEN=ghp_16C7e42F292c6912E7710c838347Ae178B4a", "ghp_16C7e42F292c6912E7710c838347Ae178B4a"),
    ("gho_16C7e42F292c6912E7710c838347Ae178B4a", "gho_16C7e42F292c6912E7710c838347Ae178B4a"),
    (
        "github_pat_11ABCDEFG0abcdefghijkl_mnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklm",
        "github_pat_11ABCDEFG0abcdefghijkl_mnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklm",
    ),
    ("slack xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"),
    ("maps AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY ok", "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"),
    (f"Authorization: Bearer {JWT}", JWT),
    (f"token {JWT}", JWT),
    (f"echo '{PRIVATE_KEY}' > id_rsa", PRIVATE_KEY),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA"),
    ("postgres://app:s3cr3t@db.internal:5432/app", "s3cr3t"),
    ("redis://:p%40ss@cache:6379/0", "p%40ss"),
    ("mongodb+srv://admin:Tr0ub4dor&3@cluster0.example.net/x", "Tr0ub4dor&3"),
    ("password=hunter2", "hunter2"),
    ("DB_PASSWORD=sunshine docker compose up", "sunshine"),
    ("secret: Xk29_lm#Q", "Xk29_lm#Q"),
    ('"api_key": "abc123XYZ789"', "abc123XYZ789"),
    ('{\\"password\\": \\"hunter2\\"}', "hunter2"),
    ("client_secret=9f8e7d6c5b4a", "9f8e7d6c5b4a"),
    ("Server=db;User Id=sa;Password=Passw0rd!;", "Passw0rd!"),
    ("https://api.example.com/v1?access_token=abc123def456&page=2", "abc123def456"),
    ("--password Sup3rS3cret!", "Sup3rS3cret!"),
    ("mysql -u root -pS3cretPw shop", "S3cretPw"),
    ("sshpass -p 'hunter22' ssh host", "hunter22"),
    ("curl -u bob:pa55word https://x.example", "pa55word"),
    ("curl -H 'Authorization: Bearer 0a1b2c3d4e5f6a7b8c9d' https://x", "0a1b2c3d4e5f6a7b8c9d"),
    ("my password is Tr0ub4dor&3 for staging", "Tr0ub4dor&3"),
    ("Das Passwort für die Datenbank ist geheim123", "geheim123"),
    ("kata sandi adalah rahasia99", "rahasia99"),
]
# Code and prose that name a secret without holding one, and strings that look random but are not keys.
NEGATIVES = [
    "password reset link sent",
    "the password field is required",
    "token expired at 10:00",
    "the token 150000 was used",
    "passport number on file",
    "max_tokens=4096 token_count: 12 tokens: 150000",
    "def login(username: str, password: str) -> Token:",
    "api_key = settings.API_KEY",
    "api_key = os.environ['API_KEY']",
    "token = get_token()",
    'token := os.Getenv("GITHUB_TOKEN")',
    "password=$DB_PASSWORD secret: ${SECRET} token={{ token }}",
    'curl -H "Authorization: Bearer $API_TOKEN" https://x',
    "the password is incorrect",
    "Password must be at least 12 characters",
    "apiKey: SecretStr",
    "password: hashedPassword,",
    "pip install scikit-learn; sk-learn-contrib-project-template",
    "use <your-api-key> instead of sk-...",
    "aws secret commit da39a3ee5e6b4b0d3255bfef95601890afd80709",
    "eyJhbGciOi is cut off",
    "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkq\n-----END PUBLIC KEY-----",
    "postgres://localhost:5432/app and https://user@host/x",
    "PWD=/home/me OLDPWD=/tmp",
    "task-1234567890abcdefghijKLMN",
]


@pytest.mark.parametrize(("text", "secret"), POSITIVES)
def test_secret_is_masked(engine: PiiEngine, text: str, secret: str) -> None:
    result = engine.redact_text(text)
    assert secret not in result.text
    assert "<SECRET>" in result.text
    assert set(result.counts) == {"SECRET"}


@pytest.mark.parametrize("text", NEGATIVES)
def test_not_a_secret(engine: PiiEngine, text: str) -> None:
    assert all(kind != "SECRET" for kind, _ in found(engine, text))


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("postgres://app:s3cr3t@db.internal:5432/app", "postgres://app:<SECRET>@db.internal:5432/app"),
        ("password=hunter2&user=bob", "password=<SECRET>&user=bob"),
        ('"password": "hunter2"', '"password": "<SECRET>"'),
    ],
)
def test_only_the_value_is_masked(engine: PiiEngine, text: str, masked: str) -> None:
    assert engine.redact_text(text).text == masked


@pytest.mark.parametrize("key", ["password", "DB_PASSWORD", "apiKey", "client_secret", "x-api-key", "accessToken"])
def test_a_json_value_under_a_secret_key_is_masked_whole(engine: PiiEngine, key: str) -> None:
    redaction = engine.redact_json_text(f'{{"{key}": "correct horse battery staple", "user": "bob"}}')
    assert redaction.text == f'{{"{key}":"<SECRET>","user":"bob"}}'
    assert redaction.counts == {"SECRET": 1}


@pytest.mark.parametrize("value", ["", "null", "${DB_PASSWORD}", "********", "<redacted>"])
def test_placeholders_under_a_secret_key_stay(engine: PiiEngine, value: str) -> None:
    assert engine.redact_json_text(f'{{"password": "{value}"}}').counts == {}
