"""Data tokens: one valid token, then one broken thing per test (the standard-webhooks test shape).

Every rejection listed in notes/security.md ("Data tokens") has its own test, and every rejection checks that the
error message does not contain the token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import SecretStr

from bulletin.errors import ConfigError, DefinitionError, TokenError
from bulletin.models import Filter
from bulletin.settings import Settings
from tasks.tokens import (
    KeySet,
    generate_key,
    keyset_from_json,
    load_keyset,
    mint_token,
    public_jwks,
    retire_key,
    save_keyset,
    verify_token,
)
from tasks.tokens.claims import TOKEN_TYPE
from tasks.tokens.keys import keyset_to_json

NOW = datetime(2026, 10, 31, 7, 0, 0, 250_000, tzinfo=UTC)  # a fraction of a second: iat must still be whole
ISS, AUD = "bulletin", "bulletin-query"
SCOPE = {"sales": [[{"field": "region", "op": "=", "value": "EMEA-North"}]]}


@pytest.fixture(scope="module")
def ks() -> KeySet:
    return generate_key(None, now=NOW)


def mint(ks: KeySet, **overrides: Any) -> str:
    args: dict[str, Any] = {
        "subject": "rm-emea-north",
        "dataset_ids": ["sales"],
        "secure_filters": SCOPE,
        "ttl_minutes": 5,
        "issuer": ISS,
        "audience": AUD,
        "now": NOW,
    }
    return mint_token(ks, **{**args, **overrides}).token


def claims_of(ks: KeySet) -> dict[str, Any]:
    """A valid payload, for tests that sign a variant of it themselves."""
    return jwt.decode(mint(ks), options={"verify_signature": False})


def sign(ks: KeySet, payload: dict[str, Any], **header: Any) -> str:
    """Sign with the real active key, with the header we choose."""
    headers = {"kid": ks.active_kid, "typ": TOKEN_TYPE, **header}
    return jwt.encode(payload, ks.active.private_key, algorithm="ES256", headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def verify(token: str, ks: KeySet, **overrides: Any):
    args: dict[str, Any] = {"issuer": ISS, "audience": AUD, "now": NOW + timedelta(seconds=30)}
    return verify_token(token, ks, **{**args, **overrides})


def rejected(token: str, ks: KeySet, reason: str, **overrides: Any) -> None:
    with pytest.raises(TokenError) as info:
        verify(token, ks, **overrides)
    message = str(info.value)
    assert reason in message
    assert token not in message
    assert token not in repr(info.value)
    if token.count(".") == 2 and token.rsplit(".", 1)[1]:
        assert token.rsplit(".", 1)[1] not in message


# --- The valid token -------------------------------------------------------------------------------------------------


def test_a_valid_token_verifies_and_carries_its_scope(ks):
    token = mint(ks, dataset_ids=["sales", "orders"])
    assert jwt.get_unverified_header(token) == {"alg": "ES256", "kid": ks.active_kid, "typ": TOKEN_TYPE}
    claims = verify(token, ks)
    assert claims.subject == "rm-emea-north"
    assert claims.kid == ks.active_kid
    assert len(claims.jti) == 32
    assert claims.allows("sales")
    assert claims.allows("orders")
    assert not claims.allows("other")
    assert claims.filters_for("sales") == [[Filter(field="region", op="=", value="EMEA-North")]]
    assert claims.filters_for("orders") == []


def test_star_allows_every_dataset(ks):
    claims = verify(mint(ks, dataset_ids="*"), ks)
    assert claims.dataset_ids == "*"
    assert claims.allows("anything")


def test_flat_filters_are_normalised_to_one_and_group(ks):
    flat = {
        "sales": [
            {"field": "region", "op": "is_one_of", "value": ["A", "B"]},
            {"field": "quantity", "op": ">", "value": 2},
        ]
    }
    claims = verify(mint(ks, secure_filters=flat), ks)
    assert [[f.op for f in g] for g in claims.filters_for("sales")] == [["is_one_of", ">"]]


def test_the_minted_token_is_kept_out_of_repr(ks):
    minted = mint_token(
        ks, subject="s", dataset_ids="*", secure_filters={}, ttl_minutes=1, issuer=ISS, audience=AUD, now=NOW
    )
    assert minted.token not in repr(minted)


@pytest.mark.parametrize("ttl", [1, 5, 17, 60])
def test_exp_minus_iat_is_exactly_the_ttl(ks, ttl):
    minted = mint_token(
        ks, subject="s", dataset_ids="*", secure_filters={}, ttl_minutes=ttl, issuer=ISS, audience=AUD, now=NOW
    )
    payload = jwt.decode(minted.token, options={"verify_signature": False})
    assert payload["exp"] - payload["iat"] == ttl * 60
    assert payload["nbf"] == payload["iat"] == int(NOW.timestamp())
    assert (minted.expires_at - minted.issued_at).total_seconds() == ttl * 60


@pytest.mark.parametrize("ttl", [0, 61, -5, 1440, True, 5.0])
def test_ttl_outside_1_to_60_minutes_is_refused(ks, ttl):
    with pytest.raises(ConfigError, match="TTL"):
        mint(ks, ttl_minutes=ttl)


def test_an_empty_secure_filter_group_cannot_be_minted(ks):
    with pytest.raises(DefinitionError, match="empty group"):
        mint(ks, secure_filters={"sales": [[{"field": "region", "op": "=", "value": "A"}], []]})


def test_public_jwks_verifies_a_token_independently(ks):
    token = mint(ks)
    (jwk,) = public_jwks(ks)["keys"]
    assert {k: jwk[k] for k in ("kty", "crv", "kid", "use", "alg")} == {
        "kty": "EC",
        "crv": "P-256",
        "kid": ks.active_kid,
        "use": "sig",
        "alg": "ES256",
    }
    key = jwt.PyJWK(jwk)
    assert jwt.decode(token, key, algorithms=["ES256"], audience=AUD, options={"verify_exp": False})["sub"]


# --- Rejections: one broken thing each -------------------------------------------------------------------------------


def test_alg_none_is_refused(ks):
    header = {"alg": "none", "kid": ks.active_kid, "typ": TOKEN_TYPE}
    payload = claims_of(ks)
    token = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}."
    rejected(token, ks, "algorithm is not allowed")


def test_hs256_signed_with_the_public_key_is_refused(ks):
    # The classic key-confusion attack, crafted by hand because PyJWT refuses to HMAC with a PEM key.
    public_pem = ks.active.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "kid": ks.active_kid, "typ": TOKEN_TYPE}
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims_of(ks)).encode())}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    rejected(f"{signing_input}.{b64(signature)}", ks, "algorithm is not allowed")


@pytest.mark.parametrize("alg", ["HS512", "RS256", "ES384", "EdDSA", "None", "es256"])
def test_any_other_algorithm_is_refused(ks, alg):
    header = {"alg": alg, "kid": ks.active_kid, "typ": TOKEN_TYPE}
    token = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims_of(ks)).encode())}.{b64(b'x' * 64)}"
    rejected(token, ks, "algorithm is not allowed")


def test_wrong_audience_is_refused(ks):
    rejected(mint(ks, audience="someone-else"), ks, "audience")


def test_audience_as_a_list_is_refused(ks):
    rejected(sign(ks, {**claims_of(ks), "aud": [AUD, "other"]}), ks, "audience")


def test_wrong_issuer_is_refused(ks):
    rejected(mint(ks, issuer="evil"), ks, "issuer")


@pytest.mark.parametrize("typ", ["JWT", "at+jwt", None])
def test_wrong_typ_is_refused(ks, typ):
    rejected(sign(ks, claims_of(ks), typ=typ), ks, "type")


def test_expired_token_is_refused(ks):
    token = mint(ks, ttl_minutes=5)
    verify(token, ks, now=NOW + timedelta(minutes=4, seconds=59))
    rejected(token, ks, "expired", now=NOW + timedelta(minutes=5, seconds=1))


def test_leeway_is_honoured_and_bounded(ks):
    token = mint(ks, ttl_minutes=5)
    verify(token, ks, now=NOW + timedelta(minutes=5, seconds=5), leeway_seconds=10)
    with pytest.raises(ConfigError):
        verify(token, ks, leeway_seconds=3600)


def test_not_yet_valid_token_is_refused(ks):
    rejected(mint(ks), ks, "not yet valid", now=NOW - timedelta(seconds=10))


def test_a_lifetime_over_the_cap_is_refused_even_when_signed(ks):
    payload = claims_of(ks)
    payload["exp"] = payload["iat"] + 20 * 24 * 3600  # "20 minutes" that became 20 days
    rejected(sign(ks, payload), ks, "lifetime")


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf", "jti", "sub", "iss", "aud", "dataset_ids", "secure_filters"])
def test_a_missing_claim_is_refused(ks, claim):
    payload = claims_of(ks)
    del payload[claim]
    rejected(sign(ks, payload), ks, f"no {claim} claim")


@pytest.mark.parametrize(("claim", "value"), [("exp", "soon"), ("iat", 1.5), ("sub", ""), ("jti", ""), ("sub", 7)])
def test_a_malformed_registered_claim_is_refused(ks, claim, value):
    rejected(sign(ks, {**claims_of(ks), claim: value}), ks, "token")


def test_missing_kid_is_refused(ks):
    payload = claims_of(ks)
    token = jwt.encode(payload, ks.active.private_key, algorithm="ES256", headers={"typ": TOKEN_TYPE})
    rejected(token, ks, "no key id")


def test_unknown_kid_is_refused(ks):
    rejected(sign(ks, claims_of(ks), kid="not-a-key-of-ours"), ks, "key id is unknown")


def test_a_retired_key_is_refused_while_the_overlap_key_still_verifies():
    t0 = NOW
    old = generate_key(None, now=t0)
    old_token = mint(old, ttl_minutes=60)
    rotated = generate_key(old, now=t0)  # a new active key; the old one still verifies...
    rotated = retire_key(rotated, old.active_kid, not_after=t0 + timedelta(minutes=5))  # ...for five minutes
    new_token = mint(rotated, ttl_minutes=60)
    assert verify(old_token, rotated, now=t0 + timedelta(minutes=4)).kid == old.active_kid
    rejected(old_token, rotated, "retired", now=t0 + timedelta(minutes=6))
    assert verify(new_token, rotated, now=t0 + timedelta(minutes=6)).kid == rotated.active_kid


def test_the_active_key_cannot_be_retired():
    keyset = generate_key(None, now=NOW)
    with pytest.raises(ConfigError, match="active key"):
        retire_key(keyset, keyset.active_kid, not_after=NOW)


def test_tampered_claims_are_refused(ks):
    token = mint(ks)
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["secure_filters"]["sales"][0][0]["value"] = "APAC-South"  # widen my scope to another region
    forged = f"{header}.{b64(json.dumps(claims).encode())}.{signature}"
    rejected(forged, ks, "signature is invalid")


def test_a_signature_from_another_key_with_our_kid_is_refused(ks):
    stranger = generate_key(None, now=NOW)
    token = jwt.encode(
        claims_of(ks), stranger.active.private_key, algorithm="ES256", headers={"kid": ks.active_kid, "typ": TOKEN_TYPE}
    )
    rejected(token, ks, "signature is invalid")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("jku", "https://evil.example/jwks.json"),
        ("x5u", "https://evil.example/cert.pem"),
        ("jwk", {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}),
        ("x5c", ["MIIB"]),
        ("crit", ["exp"]),
        ("b64", False),
    ],
)
def test_key_location_and_extension_headers_are_refused(ks, name, value):
    # No key is ever fetched from a URL: the header is refused before any key lookup. (PyJWT itself already
    # refuses an unknown `crit` while reading the header.)
    rejected(sign(ks, claims_of(ks), **{name: value}), ks, "header")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not-a-token",
        "a.b",
        "a.b.c",
        "...",
        "a.b.c.d",
        "eyJhbGciOiJFUzI1NiJ9.e30",
        "!!!.???.***",
        "x" * 70_000,
        "e30.e30.e30",
    ],
)
def test_malformed_token_strings_are_refused(ks, token):
    with pytest.raises(TokenError) as info:
        verify(token, ks)
    assert token not in str(info.value) or token == ""


@pytest.mark.parametrize(
    "filters",
    [
        {"sales": [{"field": "region", "op": "=", "value": "A"}]},  # flat: not OR-of-AND groups
        {"sales": [[{"field": "region; DROP", "op": "=", "value": "A"}]]},
        {"sales": [[{"field": "region", "op": "LIKE", "value": "A"}]]},
        {"sales": [[{"field": "region", "op": "=", "value": "A", "extra": 1}]]},
        {"sales": [[]]},
        {"bad id!": [[{"field": "region", "op": "=", "value": "A"}]]},
        ["region"],
    ],
)
def test_malformed_secure_filters_are_refused(ks, filters):
    rejected(sign(ks, {**claims_of(ks), "secure_filters": filters}), ks, "secure_filters")


@pytest.mark.parametrize("dataset_ids", ["sales", [""], [1], {"sales": 1}])
def test_malformed_dataset_ids_are_refused(ks, dataset_ids):
    rejected(sign(ks, {**claims_of(ks), "dataset_ids": dataset_ids}), ks, "dataset_ids")


# --- Keysets ---------------------------------------------------------------------------------------------------------


def test_generate_key_adds_an_active_key_and_keeps_the_old_ones():
    first = generate_key(None, now=NOW)
    second = generate_key(first, now=NOW)
    assert second.active_kid != first.active_kid
    assert set(second.keys) == {first.active_kid, second.active_kid}
    assert verify(mint(first), second).kid == first.active_kid


def test_keyset_json_round_trips():
    first = generate_key(None, now=NOW)
    keyset = retire_key(generate_key(first, now=NOW), first.active_kid, not_after=NOW + timedelta(days=1))
    loaded = keyset_from_json(keyset_to_json(keyset))
    assert loaded.active_kid == keyset.active_kid
    assert loaded.keys[first.active_kid].not_after == NOW + timedelta(days=1)
    assert verify(mint(keyset), loaded).kid == keyset.active_kid


def test_bad_keyset_json_is_a_config_error_without_key_material():
    keyset = generate_key(None, now=NOW)
    text = keyset_to_json(keyset)
    pem = json.loads(text)["keys"][0]["private_key"]
    broken_pem = text.replace(pem.splitlines()[1], pem.splitlines()[1][::-1])
    for bad, reason in [
        (text[:-5], "not valid JSON"),
        (broken_pem, "not an unencrypted PEM private key"),
        (text.replace('"active_kid"', '"active"'), "active"),
        ('{"active_kid": "k", "keys": []}', "not one of its keys"),
        ("[]", "signing keyset"),
    ]:
        with pytest.raises(ConfigError, match=reason) as info:
            keyset_from_json(bad)
        assert "PRIVATE KEY" not in str(info.value)
        assert pem.splitlines()[1] not in str(info.value)


def test_a_key_on_another_curve_is_refused():
    keyset = generate_key(None, now=NOW)
    doc = json.loads(keyset_to_json(keyset))
    other = ec.generate_private_key(ec.SECP384R1())
    doc["keys"][0]["private_key"] = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    with pytest.raises(ConfigError, match="P-256"):
        keyset_from_json(json.dumps(doc))


def settings_for(tmp_path: Path, **kwargs: Any) -> Settings:
    fields = {"signing_keys": None, "signing_keys_block": None, "keys_file": tmp_path / "keys" / "keyset.json"}
    return Settings(**{**fields, **kwargs})


def test_load_keyset_reads_the_setting_first(tmp_path):
    keyset = generate_key(None, now=NOW)
    loaded = load_keyset(settings_for(tmp_path, signing_keys=SecretStr(keyset_to_json(keyset))))
    assert loaded.active_kid == keyset.active_kid
    assert not (tmp_path / "keys").exists()


def test_load_keyset_without_a_file_tells_the_user_what_to_run(tmp_path):
    with pytest.raises(ConfigError, match="bulletin keys generate"):
        load_keyset(settings_for(tmp_path))


def test_load_keyset_creates_a_0600_file_once(tmp_path):
    settings = settings_for(tmp_path)
    created = load_keyset(settings, create=True, now=NOW)
    path = tmp_path / "keys" / "keyset.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_keyset(settings, create=True).active_kid == created.active_kid
    assert [p.name for p in path.parent.iterdir()] == ["keyset.json"]  # no temporary file left behind


def test_workers_creating_the_first_keyset_at_once_all_sign_with_the_same_one(tmp_path):
    """Two workers sharing an empty BULLETIN_HOME used to each generate a keyset, the last write winning: tokens the
    first had minted no longer verified. The first keyset written is the one every caller gets."""
    settings = settings_for(tmp_path)
    start = threading.Barrier(8)

    def first_run() -> str:
        start.wait()
        return load_keyset(settings, create=True, now=NOW).active_kid

    with ThreadPoolExecutor(8) as pool:
        kids = set(pool.map(lambda _: first_run(), range(8)))
    on_disk = keyset_from_json((tmp_path / "keys" / "keyset.json").read_text()).active_kid
    assert kids == {on_disk}
    assert [p.name for p in (tmp_path / "keys").iterdir()] == ["keyset.json"]  # no temporary file left behind


def test_save_keyset_replaces_the_file_atomically(tmp_path):
    path = tmp_path / "keyset.json"
    first = generate_key(None, now=NOW)
    save_keyset(first, path)
    second = generate_key(first, now=NOW)
    save_keyset(second, path)
    assert keyset_from_json(path.read_text()).active_kid == second.active_kid
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_naive_clock_is_refused(ks):
    with pytest.raises(ConfigError, match="timezone-aware"):
        mint(ks, now=datetime(2026, 10, 31, 7, 0))
