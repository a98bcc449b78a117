"""Data tokens (short-lived ES256 JWTs, ``claims``) and the signing keys that make and check them (``keys``).

This ``__init__`` lists what other packages use. Modules that import Prefect, boto3 or paramiko are
imported from their own module, so importing this package stays cheap.
"""

from __future__ import annotations

from tasks.tokens.claims import MAX_TTL_MINUTES, TokenClaims, mint_token, verify_token
from tasks.tokens.keys import KeySet, generate_key, keyset_from_json, load_keyset, public_jwks, retire_key, save_keyset

__all__ = [
    "MAX_TTL_MINUTES",
    "KeySet",
    "TokenClaims",
    "generate_key",
    "keyset_from_json",
    "load_keyset",
    "mint_token",
    "public_jwks",
    "retire_key",
    "save_keyset",
    "verify_token",
]
