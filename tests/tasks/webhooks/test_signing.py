"""Webhook signatures: one valid message per scheme, then one broken thing per test (the standard-webhooks shape).

Our signatures are checked against the reference ``standardwebhooks`` and ``svix`` verifiers and against published
vectors (the Standard Webhooks/Svix documentation example, GitHub's test vector, dbt Cloud's documented verifier).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
import standardwebhooks
import svix.webhooks
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from bulletin.errors import ConfigError, RequestError, SignatureError
from tasks.webhooks import dbt_signature, generate_secret, sign, standard_headers, verify_standard
from tasks.webhooks.signing import secret_bytes, verify_dbt, verify_github, verify_jwt_es256

NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
TS = int(NOW.timestamp())
SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(bytes(range(100, 132))).decode()
MSG_ID = "msg_2mN4bXkQp8r"
BODY = b'{"type":"report.delivered","report":"weekly-sales","links":["https://example.com/r/1"]}'


def _valid_headers(**overrides: str) -> dict[str, str]:
    headers = standard_headers([SECRET], MSG_ID, TS, BODY)
    headers.update(overrides)
    return headers


# --- Secrets ---


def test_generate_secret_is_whsec_and_32_random_bytes() -> None:
    first, second = generate_secret(), generate_secret()
    assert first.startswith("whsec_")
    assert len(secret_bytes(first)) == 32
    assert first != second


def test_secret_bytes_strips_the_prefix_and_accepts_unpadded_base64() -> None:
    raw = bytes(range(32))
    assert secret_bytes(SECRET) == raw
    assert secret_bytes(SECRET.removeprefix("whsec_")) == raw
    assert secret_bytes(SECRET.rstrip("=")) == raw  # Svix secrets come unpadded


@pytest.mark.parametrize("secret", ["", "whsec_"])
def test_secret_bytes_refuses_an_empty_secret(secret: str) -> None:
    with pytest.raises(ConfigError, match="empty"):
        secret_bytes(secret)


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        ("whsec_not*base64!hunter2", "base64"),
        ("whsec_" + base64.b64encode(b"x" * 16).decode(), "24-64 bytes"),
        ("whsec_" + base64.b64encode(b"x" * 65).decode(), "24-64 bytes"),
        ("whsec_é" + "A" * 40, "base64"),
    ],
)
def test_secret_bytes_refuses_a_bad_secret_without_echoing_it(secret: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as info:
        secret_bytes(secret)
    assert secret.removeprefix("whsec_") not in str(info.value)
    # Nothing derived from the secret is chained to the error either.
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__


# --- Signing (out) ---


def test_sign_matches_the_published_standard_webhooks_example() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    signature = sign([secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_sign_lists_one_signature_per_secret_while_a_secret_rotates() -> None:
    signature = sign([SECRET, OTHER_SECRET], MSG_ID, TS, BODY)
    first, second = signature.split(" ")
    assert first == sign([SECRET], MSG_ID, TS, BODY)
    assert second == sign([OTHER_SECRET], MSG_ID, TS, BODY)


@pytest.mark.parametrize("bad_id", ["", "msg id", "msg\r\nX-Injected: 1", "m" * 257])
def test_sign_refuses_a_message_id_that_cannot_be_a_header(bad_id: str) -> None:
    with pytest.raises(ConfigError, match="message id"):
        sign([SECRET], bad_id, TS, BODY)


@pytest.mark.parametrize("bad_ts", [-1, True, 1.5])
def test_sign_refuses_a_timestamp_that_is_not_unix_seconds(bad_ts: Any) -> None:
    with pytest.raises(ConfigError, match="timestamp"):
        sign([SECRET], MSG_ID, bad_ts, BODY)


@pytest.mark.parametrize("secrets", [[], SECRET])
def test_sign_needs_a_list_of_secrets(secrets: Any) -> None:
    with pytest.raises(ConfigError, match="list"):
        sign(secrets, MSG_ID, TS, BODY)


@pytest.mark.parametrize("secrets", [[SECRET], [SECRET, OTHER_SECRET]])
def test_our_headers_verify_with_the_reference_libraries(secrets: list[str]) -> None:
    timestamp = int(time.time())  # the reference verifiers read the wall clock
    headers = standard_headers(secrets, MSG_ID, timestamp, BODY)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    for secret in secrets:  # each receiver knows one secret: either must verify during a rotation
        assert standardwebhooks.Webhook(secret).verify(BODY, headers) == json.loads(BODY)
        svix.webhooks.Webhook(secret).verify(BODY, headers)
        svix_named = {name.replace("webhook-", "svix-"): value for name, value in headers.items()}
        svix.webhooks.Webhook(secret).verify(BODY, svix_named)


def test_a_reference_library_signature_verifies_with_ours() -> None:
    now = datetime.now(UTC)
    signature = standardwebhooks.Webhook(SECRET).sign(MSG_ID, now, BODY.decode())
    headers = {"webhook-id": MSG_ID, "webhook-timestamp": str(int(now.timestamp())), "webhook-signature": signature}
    assert verify_standard([SECRET], headers, BODY, now=now) == MSG_ID


# --- Verifying Standard Webhooks (in): one valid message, then one broken thing per test ---


def test_verify_standard_accepts_the_valid_message_and_returns_its_id() -> None:
    assert verify_standard([SECRET], _valid_headers(), BODY, now=NOW) == MSG_ID


def test_verify_standard_reads_header_names_case_insensitively() -> None:
    headers = {name.title(): value for name, value in _valid_headers().items()}
    assert verify_standard([SECRET], headers, BODY, now=NOW) == MSG_ID


def test_verify_standard_accepts_the_svix_header_names() -> None:
    headers = {name.replace("webhook-", "Svix-"): value for name, value in _valid_headers().items()}
    assert verify_standard([SECRET], headers, BODY, now=NOW) == MSG_ID


def test_verify_standard_accepts_the_edges_of_the_window() -> None:
    for now in (NOW - timedelta(seconds=300), NOW + timedelta(seconds=300)):
        assert verify_standard([SECRET], _valid_headers(), BODY, now=now) == MSG_ID


def test_wrong_secret_is_refused() -> None:
    with pytest.raises(SignatureError, match="no webhook signature matches") as info:
        verify_standard([OTHER_SECRET], _valid_headers(), BODY, now=NOW)
    assert info.value.status_code == 401


def test_tampered_body_is_refused() -> None:
    with pytest.raises(SignatureError, match="no webhook signature matches"):
        verify_standard([SECRET], _valid_headers(), BODY.replace(b"weekly", b"yearly"), now=NOW)


def test_tampered_message_id_is_refused() -> None:
    with pytest.raises(SignatureError, match="no webhook signature matches"):
        verify_standard([SECRET], _valid_headers(**{"webhook-id": "msg_other"}), BODY, now=NOW)


def test_stale_timestamp_is_refused() -> None:
    with pytest.raises(SignatureError, match="too old"):
        verify_standard([SECRET], _valid_headers(), BODY, now=NOW + timedelta(seconds=301))


def test_future_timestamp_is_refused() -> None:
    with pytest.raises(SignatureError, match="future"):
        verify_standard([SECRET], _valid_headers(), BODY, now=NOW - timedelta(seconds=301))


def test_a_resigned_timestamp_does_not_reuse_the_old_signature() -> None:
    headers = _valid_headers(**{"webhook-timestamp": str(TS + 10)})
    with pytest.raises(SignatureError, match="no webhook signature matches"):
        verify_standard([SECRET], headers, BODY, now=NOW)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_header_is_refused(missing: str) -> None:
    headers = _valid_headers()
    del headers[missing]
    with pytest.raises(SignatureError, match=f"missing {missing}"):
        verify_standard([SECRET], headers, BODY, now=NOW)


@pytest.mark.parametrize("emptied", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_empty_header_is_refused_as_missing(emptied: str) -> None:
    with pytest.raises(SignatureError, match=f"missing {emptied}"):
        verify_standard([SECRET], _valid_headers(**{emptied: ""}), BODY, now=NOW)


@pytest.mark.parametrize("timestamp", ["abc", "1.7e9", "-5", "0x67c2f7c0", str(TS) + "0" * 20])
def test_malformed_timestamp_is_a_bad_request(timestamp: str) -> None:
    with pytest.raises(RequestError, match="not an integer") as info:
        verify_standard([SECRET], _valid_headers(**{"webhook-timestamp": timestamp}), BODY, now=NOW)
    assert info.value.status_code == 400


def test_malformed_message_id_is_a_bad_request() -> None:
    with pytest.raises(RequestError, match="webhook-id header is malformed"):
        verify_standard([SECRET], _valid_headers(**{"webhook-id": "msg with spaces"}), BODY, now=NOW)


@pytest.mark.parametrize("secrets", [[""], ["whsec_"], []])
def test_empty_secret_is_a_config_error(secrets: list[str]) -> None:
    with pytest.raises(ConfigError):
        verify_standard(secrets, _valid_headers(), BODY, now=NOW)


def test_wrong_version_prefix_is_ignored_so_nothing_matches() -> None:
    valid = _valid_headers()["webhook-signature"]
    headers = _valid_headers(**{"webhook-signature": valid.replace("v1,", "v2,")})
    with pytest.raises(SignatureError, match="no webhook signature matches"):
        verify_standard([SECRET], headers, BODY, now=NOW)


@pytest.mark.parametrize("junk", ["v1,@@@not-base64@@@", "v1a,c29tZQ==", "nocomma", "v1,", ","])
def test_unreadable_entries_are_skipped_and_a_valid_one_still_counts(junk: str) -> None:
    valid = _valid_headers()["webhook-signature"]
    assert verify_standard([SECRET], _valid_headers(**{"webhook-signature": f"{junk} {valid}"}), BODY, now=NOW)
    with pytest.raises(SignatureError, match="no webhook signature matches"):
        verify_standard([SECRET], _valid_headers(**{"webhook-signature": junk}), BODY, now=NOW)


def test_rotated_secrets_either_one_verifies() -> None:
    signed_with_old = _valid_headers()
    signed_with_new = standard_headers([OTHER_SECRET], MSG_ID, TS, BODY)
    for headers in (signed_with_old, signed_with_new):
        assert verify_standard([OTHER_SECRET, SECRET], headers, BODY, now=NOW) == MSG_ID


def test_any_of_several_signatures_may_match() -> None:
    both = standard_headers([OTHER_SECRET, SECRET], MSG_ID, TS, BODY)
    assert verify_standard([SECRET], both, BODY, now=NOW) == MSG_ID


def test_too_many_signatures_is_a_bad_request() -> None:
    valid = _valid_headers()["webhook-signature"]
    with pytest.raises(RequestError, match="too many"):
        verify_standard([SECRET], _valid_headers(**{"webhook-signature": " ".join([valid] * 17)}), BODY, now=NOW)


def test_conflicting_repeated_header_is_a_bad_request() -> None:
    headers = {**_valid_headers(), "Webhook-Id": "msg_other"}
    with pytest.raises(RequestError, match="repeated"):
        verify_standard([SECRET], headers, BODY, now=NOW)


def test_a_naive_clock_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="timezone-aware"):
        verify_standard([SECRET], _valid_headers(), BODY, now=NOW.replace(tzinfo=None))


def test_refusals_never_echo_the_secret_or_the_signature() -> None:
    headers = _valid_headers()
    with pytest.raises(SignatureError) as info:
        verify_standard([OTHER_SECRET], headers, BODY, now=NOW)
    message = str(info.value)
    assert SECRET not in message and OTHER_SECRET not in message
    assert headers["webhook-signature"].removeprefix("v1,") not in message


# --- dbt Cloud ---

DBT_SECRET = "3f1f2d1c7b9a4e8c9d2b5a6f0e1d2c3b4a5f6e7d"  # dbt Cloud's hook secrets are plain strings
# A "job.run.completed" event shaped as in dbt Cloud's webhook documentation, byte for byte as sent.
DBT_BODY = (
    b'{"accountId": 1, "webhookId": "wsu_12345abcde", "eventId": "wev_2L6Z3l8uPedXKPq9zhMgHPUd7hk", '
    b'"timestamp": "2023-01-31T19:28:15.742843678Z", "eventType": "job.run.completed", "webhookName": "test", '
    b'"data": {"jobId": "123", "jobName": "Daily Job (dbt build)", "runId": "12345", "environmentId": "1234", '
    b'"environmentName": "Production", "dbtVersion": "1.0.0", "projectName": "Snowflake Github Demo", '
    b'"projectId": "167194", "runStatus": "Success", "runStatusCode": 10, "runStatusMessage": "None", '
    b'"runReason": "Kicked off from the UI by test@test.com", "runStartedAt": "2023-01-31T19:28:07Z", '
    b'"runFinishedAt": "2023-01-31T19:29:32Z"}}'
)
# `printf %s "$DBT_BODY" | openssl dgst -sha256 -hmac "$DBT_SECRET"`
DBT_SIGNATURE = "31a05ce91c9a04928e2ba6dc765e031994596c44948f8ace3e0330ab1cdc2892"


def test_dbt_signature_is_what_dbt_clouds_documented_verifier_computes() -> None:
    # The verifier from dbt Cloud's docs: hmac.new(secret.encode('utf-8'), raw_body.encode('utf-8'), sha256)
    documented = hmac.new(DBT_SECRET.encode("utf-8"), DBT_BODY.decode().encode("utf-8"), hashlib.sha256).hexdigest()
    assert dbt_signature(DBT_SECRET, DBT_BODY) == documented == DBT_SIGNATURE
    assert json.loads(DBT_BODY)["data"]["runStatus"] == "Success"


def test_verify_dbt_accepts_the_valid_message() -> None:
    verify_dbt(DBT_SECRET, DBT_SIGNATURE, DBT_BODY)
    verify_dbt(DBT_SECRET, DBT_SIGNATURE.upper(), DBT_BODY)  # hex is case-insensitive


def test_verify_dbt_refuses_a_wrong_secret() -> None:
    with pytest.raises(SignatureError, match="does not match"):
        verify_dbt(DBT_SECRET + "x", DBT_SIGNATURE, DBT_BODY)


def test_verify_dbt_refuses_a_tampered_body() -> None:
    with pytest.raises(SignatureError, match="does not match"):
        verify_dbt(DBT_SECRET, DBT_SIGNATURE, DBT_BODY.replace(b"Success", b"Error"))


@pytest.mark.parametrize("authorization", [None, "", "   "])
def test_verify_dbt_refuses_a_missing_header(authorization: str | None) -> None:
    with pytest.raises(SignatureError, match="missing Authorization"):
        verify_dbt(DBT_SECRET, authorization, DBT_BODY)


@pytest.mark.parametrize("authorization", ["Bearer " + DBT_SIGNATURE, DBT_SIGNATURE[:-1], "zz" * 32, "é" * 64])
def test_verify_dbt_refuses_a_malformed_signature(authorization: str) -> None:
    with pytest.raises(SignatureError, match="does not match") as info:
        verify_dbt(DBT_SECRET, authorization, DBT_BODY)
    assert DBT_SECRET not in str(info.value) and DBT_SIGNATURE not in str(info.value)


def test_verify_dbt_refuses_an_empty_secret() -> None:
    with pytest.raises(ConfigError, match="empty"):
        verify_dbt("", DBT_SIGNATURE, DBT_BODY)


# --- GitHub ---

GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_BODY = b"Hello, World!"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"  # GitHub's docs


def test_verify_github_accepts_githubs_published_vector() -> None:
    verify_github(GITHUB_SECRET, GITHUB_SIGNATURE, GITHUB_BODY)


def test_verify_github_refuses_a_tampered_body() -> None:
    with pytest.raises(SignatureError, match="does not match"):
        verify_github(GITHUB_SECRET, GITHUB_SIGNATURE, b"Hello, World?")


def test_verify_github_refuses_a_wrong_secret() -> None:
    with pytest.raises(SignatureError, match="does not match"):
        verify_github("It's a Secret to Nobody", GITHUB_SIGNATURE, GITHUB_BODY)


@pytest.mark.parametrize("header", [None, ""])
def test_verify_github_refuses_a_missing_header(header: str | None) -> None:
    with pytest.raises(SignatureError, match="missing X-Hub-Signature-256"):
        verify_github(GITHUB_SECRET, header, GITHUB_BODY)


@pytest.mark.parametrize("header", [GITHUB_SIGNATURE.removeprefix("sha256="), "sha1=" + "0" * 40, "SHA256=abc"])
def test_verify_github_refuses_another_scheme(header: str) -> None:
    with pytest.raises(SignatureError, match="sha256="):
        verify_github(GITHUB_SECRET, header, GITHUB_BODY)


def test_verify_github_refuses_an_empty_secret() -> None:
    with pytest.raises(ConfigError, match="empty"):
        verify_github("", GITHUB_SIGNATURE, GITHUB_BODY)


# --- ES256-signed JWT bodies (Vizzly-style) ---

SENDER_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())


def _pem(key: ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _jwt(
    claims: dict[str, Any] | None = None, *, key: Any = SENDER_KEY, headers: dict[str, Any] | None = None, **drop: bool
) -> str:
    payload: dict[str, Any] = {"iat": TS - 10, "exp": TS + 110, "jti": "evt_01HX", "event": {"reportId": "r1"}}
    payload.update(claims or {})
    for name in drop:
        payload.pop(name.removeprefix("no_"))
    return jwt.encode(payload, key, algorithm="ES256", headers=headers)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_verify_jwt_returns_the_claims_of_a_valid_token() -> None:
    claims = verify_jwt_es256([_pem(SENDER_KEY)], _jwt(), now=NOW)
    assert claims["jti"] == "evt_01HX" and claims["event"] == {"reportId": "r1"}


def test_verify_jwt_accepts_the_raw_body_bytes_with_a_trailing_newline() -> None:
    assert verify_jwt_es256([_pem(SENDER_KEY)], _jwt().encode() + b"\n", now=NOW)["jti"] == "evt_01HX"


def test_verify_jwt_tries_every_configured_key() -> None:
    assert verify_jwt_es256([_pem(OTHER_KEY), _pem(SENDER_KEY)], _jwt(), now=NOW)["jti"] == "evt_01HX"


def test_verify_jwt_refuses_a_wrong_key() -> None:
    with pytest.raises(SignatureError, match="does not verify"):
        verify_jwt_es256([_pem(OTHER_KEY)], _jwt(), now=NOW)


def test_verify_jwt_refuses_a_tampered_payload() -> None:
    header, _, signature = _jwt().split(".")
    forged = _b64(json.dumps({"iat": TS, "exp": TS + 60, "jti": "evt_02", "event": {"reportId": "r2"}}).encode())
    with pytest.raises(SignatureError, match="does not verify"):
        verify_jwt_es256([_pem(SENDER_KEY)], f"{header}.{forged}.{signature}", now=NOW)


def test_verify_jwt_refuses_alg_none() -> None:
    token = jwt.encode({"iat": TS, "jti": "evt_01HX"}, "", algorithm="none")
    with pytest.raises(SignatureError, match="algorithm"):
        verify_jwt_es256([_pem(SENDER_KEY)], token, now=NOW)


def test_verify_jwt_refuses_hs256_signed_with_the_public_key() -> None:
    # The classic confusion attack, built by hand because PyJWT refuses to sign it.
    public_pem = _pem(SENDER_KEY)
    signing_input = _b64(b'{"alg":"HS256","typ":"JWT"}') + "." + _b64(b'{"iat":%d,"jti":"evt_01HX"}' % TS)
    mac = hmac.new(public_pem.encode(), signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(SignatureError, match="algorithm"):
        verify_jwt_es256([public_pem], f"{signing_input}.{_b64(mac)}", now=NOW)


def test_verify_jwt_refuses_another_asymmetric_algorithm() -> None:
    token = jwt.encode({"iat": TS, "jti": "e"}, ec.generate_private_key(ec.SECP384R1()), algorithm="ES384")
    with pytest.raises(SignatureError, match="algorithm"):
        verify_jwt_es256([_pem(SENDER_KEY)], token, now=NOW)


def test_verify_jwt_refuses_an_expired_token() -> None:
    with pytest.raises(SignatureError, match="expired"):
        verify_jwt_es256([_pem(SENDER_KEY)], _jwt(), now=NOW + timedelta(seconds=200))


def test_verify_jwt_refuses_a_token_issued_too_long_ago() -> None:
    token = _jwt({"iat": TS - 301}, no_exp=True)
    with pytest.raises(SignatureError, match="too old"):
        verify_jwt_es256([_pem(SENDER_KEY)], token, now=NOW)


def test_verify_jwt_refuses_a_token_issued_in_the_future() -> None:
    with pytest.raises(SignatureError, match="future"):
        verify_jwt_es256([_pem(SENDER_KEY)], _jwt({"iat": TS + 120}), now=NOW)


def test_verify_jwt_refuses_a_token_not_yet_valid() -> None:
    with pytest.raises(SignatureError, match="not yet valid"):
        verify_jwt_es256([_pem(SENDER_KEY)], _jwt({"nbf": TS + 120}), now=NOW)


def test_verify_jwt_needs_exp_or_iat() -> None:
    with pytest.raises(SignatureError, match="neither exp nor iat"):
        verify_jwt_es256([_pem(SENDER_KEY)], _jwt(no_exp=True, no_iat=True), now=NOW)


def test_verify_jwt_accepts_exp_alone_within_the_max_age() -> None:
    assert verify_jwt_es256([_pem(SENDER_KEY)], _jwt(no_iat=True), now=NOW)["jti"] == "evt_01HX"


def test_verify_jwt_refuses_exp_alone_beyond_the_max_age() -> None:
    with pytest.raises(SignatureError, match="longer than"):
        verify_jwt_es256([_pem(SENDER_KEY)], _jwt({"exp": TS + 86_400}, no_iat=True), now=NOW)


def test_verify_jwt_refuses_a_non_numeric_time_claim() -> None:
    with pytest.raises(SignatureError, match="not a number"):
        verify_jwt_es256([_pem(SENDER_KEY)], _jwt({"exp": "tomorrow"}), now=NOW)


def test_verify_jwt_refuses_a_missing_jti() -> None:
    with pytest.raises(SignatureError, match="no jti claim"):
        verify_jwt_es256([_pem(SENDER_KEY)], _jwt(no_jti=True), now=NOW)


def test_verify_jwt_refuses_an_empty_jti() -> None:
    with pytest.raises(SignatureError, match="jti"):
        verify_jwt_es256([_pem(SENDER_KEY)], _jwt({"jti": ""}), now=NOW)


@pytest.mark.parametrize(
    "header",
    [
        {"jku": "http://127.0.0.1:1/keys.json"},
        {"x5u": "http://127.0.0.1:1/cert.pem"},
        {"jwk": {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}},
        {"x5c": ["AAAA"]},
    ],
)
def test_verify_jwt_refuses_headers_that_name_keys_or_change_processing(header: dict[str, Any]) -> None:
    with pytest.raises(SignatureError, match=f"'{next(iter(header))}' is not allowed"):
        verify_jwt_es256([_pem(SENDER_KEY)], _jwt(headers=header), now=NOW)


def test_verify_jwt_refuses_a_crit_header_it_cannot_honour() -> None:
    with pytest.raises(RequestError, match="header is malformed"):
        verify_jwt_es256([_pem(SENDER_KEY)], _jwt(headers={"crit": ["exp"]}), now=NOW)


def test_verify_jwt_checks_the_audience_and_issuer_when_given() -> None:
    token = _jwt({"aud": "bulletin", "iss": "vizzly"})
    assert verify_jwt_es256([_pem(SENDER_KEY)], token, now=NOW, audience="bulletin", issuer="vizzly")["aud"]
    with pytest.raises(SignatureError, match="audience or issuer"):
        verify_jwt_es256([_pem(SENDER_KEY)], token, now=NOW, audience="someone-else")
    with pytest.raises(SignatureError, match="audience or issuer"):
        verify_jwt_es256([_pem(SENDER_KEY)], token, now=NOW, audience="bulletin", issuer="mallory")
    with pytest.raises(SignatureError, match="no aud claim"):
        verify_jwt_es256([_pem(SENDER_KEY)], _jwt(), now=NOW, audience="bulletin")


def test_verify_jwt_refuses_an_audience_nobody_configured() -> None:
    with pytest.raises(SignatureError, match="audience or issuer"):
        verify_jwt_es256([_pem(SENDER_KEY)], _jwt({"aud": "another-service"}), now=NOW)


@pytest.mark.parametrize("body", [b"", b"{}", b"not.a.jwt", b"a..c", "é.é.é".encode(), b"\xff\xfe.a.b"])
def test_verify_jwt_refuses_a_body_that_is_not_a_jws_as_a_bad_request(body: bytes) -> None:
    with pytest.raises(RequestError) as info:
        verify_jwt_es256([_pem(SENDER_KEY)], body, now=NOW)
    assert info.value.status_code == 400


def test_verify_jwt_refuses_unusable_configured_keys() -> None:
    def spki(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> str:
        return (
            key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )

    p384, edwards = spki(ec.generate_private_key(ec.SECP384R1())), spki(ed25519.Ed25519PrivateKey.generate())
    garbage = "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n"
    for keys in ([], [garbage], [p384], [edwards], _pem(SENDER_KEY)):
        with pytest.raises(ConfigError):
            verify_jwt_es256(keys, _jwt(), now=NOW)
