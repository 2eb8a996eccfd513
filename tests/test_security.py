import math

import pytest

from cic import security
from cic.errors import ValidationFailed


def test_api_key_format_and_entropy() -> None:
    k = security.generate_api_key("pepper", "prod")
    assert security.KEY_RE.match(k.plaintext)
    env, random_part = k.plaintext.split("_", 2)[1:]
    assert env == "prod"
    assert len(random_part) * math.log2(62) >= 192
    assert k.prefix == k.plaintext[: len("clsk_prod_") + 6]
    assert k.last4 == k.plaintext[-4:]
    assert k.hash == security.hash_secret("pepper", k.plaintext)
    assert k.plaintext not in k.hash and len(k.hash) == 64


def test_keys_are_unique_and_pepper_matters() -> None:
    keys = {security.generate_api_key("p", "dev").plaintext for _ in range(200)}
    assert len(keys) == 200
    k = security.generate_api_key("p", "dev")
    assert security.hash_secret("other", k.plaintext) != k.hash


def test_env_names_with_dashes_roundtrip() -> None:
    k = security.generate_api_key("p", "eu-staging")
    assert security.looks_like_api_key(k.plaintext)
    assert not security.looks_like_api_key("sk-" + k.plaintext)
    assert not security.looks_like_api_key(k.plaintext[:-1])


@pytest.mark.parametrize(
    "password",
    ["short1A!", "lowercaseonly", "password123", "aaaaaaaaaaaaaaaaaaaa", "alice-Secret-99"],
)
def test_weak_passwords_rejected(password: str) -> None:
    with pytest.raises(ValidationFailed) as exc:
        security.check_password_strength(password, "alice@example.com")
    assert exc.value.code == "weak_password"
    assert exc.value.message.startswith("Password is too weak")


@pytest.mark.parametrize("password", ["Sturdy-Passw0rd!", "four random words in a row"])
def test_good_passwords_accepted(password: str) -> None:
    security.check_password_strength(password, "bob@example.com")


def test_password_hash_roundtrip() -> None:
    h = security.hash_password("Sturdy-Passw0rd!")
    assert h.startswith("$argon2id$")
    assert security.verify_password(h, "Sturdy-Passw0rd!")
    assert not security.verify_password(h, "sturdy-passw0rd!")
    assert not security.verify_password(None, "anything")
