"""Secrets: password hashing, API keys and session tokens.

API keys look like ``clsk_<env>_<40 base62 chars>`` (238 random bits). Keys and session tokens are
stored only as HMAC-SHA256 under the server's pepper, so a copy of the database cannot be used to
authenticate, and a lookup is one indexed equality match.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from cic.errors import ValidationFailed

KEY_PREFIX = "clsk"
KEY_RANDOM_LEN = 40
_BASE62 = string.ascii_letters + string.digits
KEY_RE = re.compile(rf"^{KEY_PREFIX}_([a-z][a-z0-9-]{{0,30}})_([A-Za-z0-9]{{{KEY_RANDOM_LEN}}})$")
SESSION_PREFIX = "clss"

_hasher = PasswordHasher()  # argon2id, the library's RFC 9106 low-memory profile


def hash_secret(pepper: str, secret: str) -> str:
    return hmac.new(pepper.encode(), secret.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class NewKey:
    plaintext: str
    prefix: str
    last4: str
    hash: str


def generate_api_key(pepper: str, env_name: str) -> NewKey:
    random_part = "".join(secrets.choice(_BASE62) for _ in range(KEY_RANDOM_LEN))
    plaintext = f"{KEY_PREFIX}_{env_name}_{random_part}"
    return NewKey(
        plaintext=plaintext,
        prefix=f"{KEY_PREFIX}_{env_name}_{random_part[:6]}",
        last4=random_part[-4:],
        hash=hash_secret(pepper, plaintext),
    )


def looks_like_api_key(value: str) -> bool:
    return KEY_RE.match(value) is not None


def generate_session_token() -> str:
    return f"{SESSION_PREFIX}_{secrets.token_urlsafe(32)}"


# --- passwords -----------------------------------------------------------------------------------

_COMMON = {
    "password",
    "password1",
    "password123",
    "123456789",
    "1234567890",
    "qwertyuiop",
    "iloveyou",
    "letmein123",
    "welcome123",
    "passw0rd",
    "administrator",
    "changeme",
    "changeme123",
    "qwerty123",
    "abc123456",
    "football1",
    "baseball1",
    "11111111",
    "00000000",
    "trustno1",
}


def check_password_strength(password: str, email: str = "") -> None:
    """Raise ``ValidationFailed`` with a readable reason when a password is too weak."""
    problems: list[str] = []
    if len(password) < 10:
        problems.append("use at least 10 characters")
    if len(password) > 256:
        problems.append("use at most 256 characters")
    classes = sum(
        any(pred(c) for c in password) for pred in (str.islower, str.isupper, str.isdigit, lambda c: not c.isalnum())
    )
    if len(password) < 16 and classes < 3:
        problems.append("mix at least three of lower case, upper case, digits and symbols (or use 16+ characters)")
    lowered = password.lower()
    if lowered in _COMMON or len(set(password)) < 4:
        problems.append("it is a commonly used password")
    local = email.split("@", 1)[0].lower()
    if len(local) >= 4 and local in lowered:
        problems.append("it must not contain your email address")
    if problems:
        raise ValidationFailed(
            "Password is too weak: " + "; ".join(problems) + ".", param="password", code="weak_password"
        )


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    if not password_hash:
        # Same work as a real check, so timing does not reveal which accounts have passwords.
        with contextlib.suppress(VerificationError, InvalidHashError):
            _hasher.verify(_DUMMY_HASH, password)
        return False
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


_DUMMY_HASH = _hasher.hash("not-the-password")
