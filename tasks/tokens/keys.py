"""Signing keys for data tokens: a keyset of EC P-256 keys by ``kid``, one active, rotated with an overlap.

``generate_key`` adds a key and makes it active; the older keys keep verifying until ``retire_key`` gives them a
``not_after``. The keyset is stored as JSON (private keys as PEM) in a 0600 file, the ``BULLETIN_SIGNING_KEYS``
setting or a Prefect Secret block. No error raised here echoes key material.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import AwareDatetime, BaseModel, ConfigDict, StringConstraints, ValidationError

from bulletin.clock import require_aware
from bulletin.errors import ConfigError
from tasks.secrets import read_secret_block

if TYPE_CHECKING:
    from bulletin.settings import Settings

ALGORITHM = "ES256"
Kid = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


@dataclass(frozen=True)
class SigningKey:
    """One EC P-256 key. After ``not_after`` it neither signs nor verifies."""

    kid: str
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)
    created_at: datetime
    not_after: datetime | None = None

    def usable_at(self, now: datetime) -> bool:
        return self.not_after is None or now <= self.not_after


@dataclass(frozen=True)
class KeySet:
    """Signing keys by ``kid``: ``active_kid`` signs, every key that is not retired verifies."""

    keys: dict[str, SigningKey]
    active_kid: str

    def __post_init__(self) -> None:
        if self.active_kid not in self.keys:
            raise ConfigError(f"signing keyset: active_kid {self.active_kid!r} is not one of its keys")
        for kid, key in self.keys.items():
            if key.kid != kid:
                raise ConfigError(f"signing keyset: key filed under {kid!r} says its kid is {key.kid!r}")

    @property
    def active(self) -> SigningKey:
        return self.keys[self.active_kid]


class _KeyDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kid: Kid
    alg: Literal["ES256"] = "ES256"
    created_at: AwareDatetime
    not_after: AwareDatetime | None = None
    private_key: str


class _KeySetDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    active_kid: Kid
    keys: list[_KeyDoc]


def generate_key(keyset: KeySet | None, *, now: datetime) -> KeySet:
    """A keyset with a fresh P-256 key added and made active; the previous keys stay, verify-only."""
    require_aware(now)
    existing = dict(keyset.keys) if keyset else {}
    kid = f"{now:%Y%m%d}-{secrets.token_hex(6)}"
    while kid in existing:  # 48 random bits: a clash is all but impossible, and cheap to rule out
        kid = f"{now:%Y%m%d}-{secrets.token_hex(6)}"
    key = SigningKey(kid=kid, private_key=ec.generate_private_key(ec.SECP256R1()), created_at=now)
    return KeySet(keys={**existing, kid: key}, active_kid=kid)


def retire_key(keyset: KeySet, kid: str, *, not_after: datetime) -> KeySet:
    """A keyset where ``kid`` is refused after ``not_after``: the end of its rotation overlap."""
    require_aware(not_after)
    if kid not in keyset.keys:
        raise ConfigError(f"signing keyset has no key {kid!r}")
    if kid == keyset.active_kid:
        raise ConfigError(f"key {kid!r} is the active key: generate a new key before retiring it")
    old = keyset.keys[kid]
    retired = SigningKey(old.kid, old.private_key, old.created_at, not_after)
    return KeySet(keys={**keyset.keys, kid: retired}, active_kid=keyset.active_kid)


def keyset_to_json(ks: KeySet) -> str:
    """The keyset as JSON, private keys as unencrypted PKCS#8 PEM: store it as a secret, mode 0600."""
    keys = [
        _KeyDoc(
            kid=key.kid,
            created_at=key.created_at,
            not_after=key.not_after,
            private_key=key.private_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode("ascii"),
        )
        for key in ks.keys.values()
    ]
    return _KeySetDoc(active_kid=ks.active_kid, keys=keys).model_dump_json(indent=2) + "\n"


def keyset_from_json(text: str) -> KeySet:
    """Parse what ``keyset_to_json`` wrote. Errors name the field, never the key material."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        # exc.msg is the parser's reason only; str(exc) would be the same, but never print exc.doc.
        raise ConfigError(f"signing keyset is not valid JSON: {exc.msg} (line {exc.lineno})") from exc
    try:
        doc = _KeySetDoc.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        raise ConfigError(f"signing keyset: {where}: {first['msg']}", field=where) from exc
    keys: dict[str, SigningKey] = {}
    for item in doc.keys:
        if item.kid in keys:
            raise ConfigError(f"signing keyset: kid {item.kid!r} appears twice")
        private_key = _load_private_key(item.kid, item.private_key)
        keys[item.kid] = SigningKey(item.kid, private_key, item.created_at, item.not_after)
    return KeySet(keys=keys, active_kid=doc.active_kid)


def _load_private_key(kid: str, pem: str) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(pem.encode("utf-8"), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"signing keyset: key {kid!r}: private_key is not an unencrypted PEM private key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ConfigError(f"signing keyset: key {kid!r}: private_key must be an EC P-256 key (ES256)")
    return key


def _b64url_int(number: int) -> str:
    return jwt.utils.base64url_encode(number.to_bytes(32, "big")).decode("ascii")


def public_jwks(ks: KeySet) -> dict[str, Any]:
    """The public half of every key, as a JWKS document others can verify tokens with."""
    keys = []
    for key in ks.keys.values():
        numbers = key.private_key.public_key().public_numbers()
        keys.append(
            {
                "kty": "EC",
                "crv": "P-256",
                "x": _b64url_int(numbers.x),
                "y": _b64url_int(numbers.y),
                "kid": key.kid,
                "use": "sig",
                "alg": ALGORITHM,
            }
        )
    return {"keys": keys}


def save_keyset(ks: KeySet, path: Path, *, replace: bool = True) -> bool:
    """Write the keyset with mode 0600, atomically (a reader never sees half a file), creating parent folders.

    ``replace=False`` writes only if no keyset is there yet (a hard link, which fails on an existing name): two
    processes generating the first keyset at once must not each keep their own. Returns whether it wrote."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    # mkstemp creates the file 0600 from the start, so the keys are never briefly world-readable.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(keyset_to_json(ks))
            out.flush()
            os.fsync(out.fileno())
        if replace:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            Path(tmp).unlink(missing_ok=True)
        return True
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_keyset(settings: Settings, *, create: bool = False, now: datetime | None = None) -> KeySet:
    """The signing keyset: ``signing_keys`` JSON, else the Prefect Secret block, else the keys file.

    With ``create`` a missing keys file is generated (mode 0600). ``now`` only dates a generated key.
    """
    if settings.signing_keys is not None:
        return keyset_from_json(settings.signing_keys.get_secret_value())
    if settings.signing_keys_block:
        return keyset_from_json(_read_secret_block(settings.signing_keys_block))
    path = settings.keyset_path
    try:
        return keyset_from_json(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if not create:
            raise ConfigError(
                f"no signing keyset at {path}: run `bulletin keys generate` (or set BULLETIN_SIGNING_KEYS)"
            ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the signing keyset at {path}: {exc.strerror}") from exc
    keyset = generate_key(None, now=now or datetime.now(UTC))
    if save_keyset(keyset, path, replace=False):
        return keyset
    # Another process wrote the first keyset a moment before: every process signs with that one.
    return keyset_from_json(path.read_text(encoding="utf-8"))


def _read_secret_block(name: str) -> str:
    value = read_secret_block(name, holding="the signing keyset")
    # A Secret block may hold the keyset as a JSON string or as the already-parsed object.
    return value if isinstance(value, str) else json.dumps(value)
