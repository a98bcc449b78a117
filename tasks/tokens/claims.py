"""Data tokens: short-lived ES256 JWTs that carry a recipient's datasets and secure filters.

The rules are in ``notes/security.md`` ("Data tokens"): a fixed algorithm allowlist, every registered claim required,
an explicit ``typ``, a TTL capped at an hour, keys by ``kid`` (``tasks.tokens.keys``). Pure functions; the clock is
always an argument.

Time checks: PyJWT compares ``exp``/``nbf``/``iat`` with ``time.time()``, which would ignore the ``now`` we are given.
So ``verify_token`` turns PyJWT's three time checks off and makes them itself, against ``now``, after PyJWT has
checked the signature, ``iss``, ``aud`` and the presence of every required claim.

No message raised here contains a token or key material: reasons are fixed strings, never PyJWT's text.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import jwt
from pydantic import TypeAdapter, ValidationError

from bulletin.clock import require_aware
from bulletin.errors import ConfigError, DefinitionError, TokenError
from bulletin.models import Filter, FilterGroups, Identifier, normalise_filters

# The key API is re-exported: callers import everything token-related from here.
from tasks.tokens.keys import (
    ALGORITHM,
    KeySet,
    SigningKey,
)

TOKEN_TYPE = "bulletin-data+jwt"  # noqa: S105 - a JWT `typ`, not a password
MAX_TTL_MINUTES = 60
MAX_LEEWAY_SECONDS = 300
#: Generous for a token with long ``is_one_of`` lists, small enough that a junk string is refused unparsed.
MAX_TOKEN_CHARS = 64 * 1024
REQUIRED_CLAIMS = ("iss", "aud", "sub", "iat", "nbf", "exp", "jti", "dataset_ids", "secure_filters")
#: Every other header parameter is refused: jku/x5u/jwk/x5c would name keys, crit/b64 change how the JWS is read.
ALLOWED_HEADERS = frozenset({"alg", "kid", "typ"})

_SECURE_FILTERS = TypeAdapter(dict[Identifier, list[list[Filter]]])
_DATASET_ID = TypeAdapter(Identifier)


@dataclass(frozen=True)
class MintedToken:
    """A freshly signed token. Record ``jti``, never ``token`` (kept out of ``repr`` so it cannot reach a log)."""

    token: str = field(repr=False)
    jti: str
    issued_at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class TokenClaims:
    """What a verified token grants: the only source of secure filters."""

    subject: str
    jti: str
    issued_at: datetime
    expires_at: datetime
    dataset_ids: list[str] | Literal["*"]
    secure_filters: dict[str, FilterGroups]
    kid: str

    def allows(self, dataset_id: str) -> bool:
        """Whether the token names the dataset (or every dataset, with ``"*"``)."""
        return self.dataset_ids == "*" or dataset_id in self.dataset_ids

    def filters_for(self, dataset_id: str) -> FilterGroups:
        """The secure filter groups for one dataset; ``[]`` when the token has none (the engine then decides)."""
        return [list(group) for group in self.secure_filters.get(dataset_id, [])]


def _check_ttl(ttl_minutes: int) -> None:
    if isinstance(ttl_minutes, bool) or not isinstance(ttl_minutes, int) or not 1 <= ttl_minutes <= MAX_TTL_MINUTES:
        raise ConfigError(f"token TTL must be a whole number of minutes from 1 to {MAX_TTL_MINUTES}")


def _claim_filters(secure_filters: dict[str, FilterGroups]) -> dict[str, list[list[dict[str, Any]]]]:
    out: dict[str, list[list[dict[str, Any]]]] = {}
    for dataset_id, groups in secure_filters.items():
        try:
            _DATASET_ID.validate_python(dataset_id)
            normalised = normalise_filters(groups)
        except ValidationError as exc:
            raise DefinitionError(f"secure filters for {dataset_id!r} are invalid: {exc.errors()[0]['msg']}") from exc
        if any(not group for group in normalised):
            # An empty AND group is TRUE: it would turn "(region = A) OR ()" into every row.
            raise DefinitionError(f"secure filters for {dataset_id!r} contain an empty group")
        out[dataset_id] = [[f.model_dump(mode="json") for f in group] for group in normalised]
    return out


def mint_token(
    ks: KeySet,
    *,
    subject: str,
    dataset_ids: list[str] | Literal["*"],
    secure_filters: dict[str, FilterGroups],
    ttl_minutes: int,
    issuer: str,
    audience: str,
    now: datetime,
) -> MintedToken:
    """Sign a data token with the active key. ``exp - iat`` is exactly ``ttl_minutes * 60`` seconds."""
    require_aware(now)
    _check_ttl(ttl_minutes)
    if not subject:
        raise DefinitionError("a data token needs a subject")
    if dataset_ids != "*":
        if not dataset_ids:
            raise DefinitionError("a data token needs at least one dataset id, or '*'")
        for dataset_id in dataset_ids:
            try:
                _DATASET_ID.validate_python(dataset_id)
            except ValidationError as exc:
                raise DefinitionError(f"dataset id {dataset_id!r} is not a valid identifier") from exc
    key = ks.active
    if not key.usable_at(now):
        raise ConfigError(f"the active signing key {key.kid!r} is retired: generate a new key")
    iat = int(now.timestamp())  # whole seconds, so exp - iat is exactly the TTL
    exp = iat + ttl_minutes * 60
    jti = uuid.uuid4().hex
    payload = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "iat": iat,
        "nbf": iat,
        "exp": exp,
        "jti": jti,
        "dataset_ids": dataset_ids if dataset_ids == "*" else list(dataset_ids),
        "secure_filters": _claim_filters(secure_filters),
    }
    token = jwt.encode(payload, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": TOKEN_TYPE})
    return MintedToken(token, jti, datetime.fromtimestamp(iat, UTC), datetime.fromtimestamp(exp, UTC))


def _verification_key(header: dict[str, Any], ks: KeySet, now: datetime) -> SigningKey:
    extra = sorted(set(header) - ALLOWED_HEADERS)
    if extra:
        raise TokenError(f"token header parameter {extra[0]!r} is not allowed")
    if header.get("alg") != ALGORITHM:
        raise TokenError("token algorithm is not allowed")
    if header.get("typ") != TOKEN_TYPE:
        raise TokenError("token type is not a Bulletin data token")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise TokenError("token has no key id")
    key = ks.keys.get(kid)
    if key is None:
        raise TokenError("token key id is unknown")
    if not key.usable_at(now):
        raise TokenError("token key is retired")
    return key


def _int_claim(payload: dict[str, Any], name: str) -> int:
    value = payload[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise TokenError(f"token claim {name} must be an integer")
    return value


def verify_token(
    token: str,
    ks: KeySet,
    *,
    issuer: str,
    audience: str,
    now: datetime,
    leeway_seconds: int = 0,
) -> TokenClaims:
    """Verify a data token completely or raise ``TokenError`` with a short reason (never the token itself)."""
    require_aware(now)
    if not 0 <= leeway_seconds <= MAX_LEEWAY_SECONDS:
        raise ConfigError(f"token leeway must be 0..{MAX_LEEWAY_SECONDS} seconds")
    if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_CHARS or token.count(".") != 2:
        raise TokenError("token is malformed")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise TokenError("token header is malformed") from exc
    key = _verification_key(header, ks, now)
    try:
        payload: dict[str, Any] = jwt.decode(
            token,
            key.private_key.public_key(),
            algorithms=[ALGORITHM],  # fixed: never read from the token
            audience=audience,
            issuer=issuer,
            options={
                "verify_signature": True,
                "require": list(REQUIRED_CLAIMS),
                "verify_aud": True,
                "strict_aud": True,
                "verify_iss": True,
                "verify_sub": True,
                "verify_jti": True,
                # Checked below against `now`: PyJWT would read the wall clock.
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
            },
        )
    except jwt.InvalidSignatureError as exc:
        raise TokenError("token signature is invalid") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise TokenError(f"token has no {exc.claim} claim") from exc
    except jwt.InvalidAudienceError as exc:
        raise TokenError("token audience is wrong") from exc
    except jwt.InvalidIssuerError as exc:
        raise TokenError("token issuer is wrong") from exc
    except jwt.PyJWTError as exc:
        raise TokenError("token is invalid") from exc
    return _claims(payload, kid=key.kid, now=now, leeway=leeway_seconds)


def _claims(payload: dict[str, Any], *, kid: str, now: datetime, leeway: int) -> TokenClaims:
    iat, nbf, exp = (_int_claim(payload, name) for name in ("iat", "nbf", "exp"))
    clock = now.timestamp()
    # Same comparisons as PyJWT's own, only against our clock.
    if exp <= clock - leeway:
        raise TokenError("token has expired")
    if nbf > clock + leeway:
        raise TokenError("token is not yet valid")
    if iat > clock + leeway:
        raise TokenError("token was issued in the future")
    if not 0 < exp - iat <= MAX_TTL_MINUTES * 60:
        raise TokenError("token lifetime exceeds the cap")
    subject, jti = payload["sub"], payload["jti"]
    if not subject or not jti or len(jti) > 128:
        raise TokenError("token sub or jti is empty or malformed")
    dataset_ids = payload["dataset_ids"]
    if dataset_ids != "*" and (
        not isinstance(dataset_ids, list) or not all(isinstance(d, str) and d for d in dataset_ids)
    ):
        raise TokenError("token dataset_ids claim is malformed")
    try:
        secure_filters: dict[str, FilterGroups] = _SECURE_FILTERS.validate_python(payload["secure_filters"])
    except ValidationError as exc:
        raise TokenError("token secure_filters claim is malformed") from exc
    if any(not group for groups in secure_filters.values() for group in groups):
        raise TokenError("token secure_filters claim has an empty group")
    return TokenClaims(
        subject=subject,
        jti=jti,
        issued_at=datetime.fromtimestamp(iat, UTC),
        expires_at=datetime.fromtimestamp(exp, UTC),
        dataset_ids=dataset_ids,
        secure_filters=secure_filters,
        kid=kid,
    )
