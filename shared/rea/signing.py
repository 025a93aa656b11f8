"""Signatures on people's decisions: HMAC-SHA256 over the whole event, with a nonce and an expiry.

Anyone who can write to the control topic could otherwise approve a plan, widen a budget or
accept a proposal in someone's name. A decision is acted on only when it carries a signature
made with a key the services hold:

- the MAC covers the canonical JSON of the event (sorted keys, every field: its id, time,
  campaign, payload, and the signature's own ``by``, ``key_id``, ``nonce`` and ``expires_at``),
  so changing any of it breaks the signature;
- a key either belongs to one person (``identity``: it signs only in that name) or is shared
  (no identity: whoever holds it asserts a name, as on a single-user machine);
- the nonce and the expiry bound replay: the services refuse a signature past its expiry and a
  nonce they have already seen on another message (:mod:`rea.decisions`).

HMAC is symmetric: the services hold every key, and each person only their own. The keyring is a
JSON file (``REA_DECISION_KEYS_FILE``, default ``<home>/keys/decisions.json``, mode 0600)::

    {"alice": {"key": "<64 hex digits>", "identity": "alice"},
     "local": {"key": "<64 hex digits>", "identity": null}}

Everything here is pure: clocks and nonces are passed in.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from rea.events import Signature, SignedDecision

LOCAL_KEY_ID = "local"
KEY_BYTES = 32

D = TypeVar("D", bound=SignedDecision)


@dataclass(frozen=True)
class DecisionKey:
    """One signing key: ``identity`` is the only person it signs for; None: any (shared)."""

    key_id: str
    secret: bytes = field(repr=False)
    identity: str | None = None


@dataclass(frozen=True)
class Keyring:
    """The keys decisions may be signed with, by id."""

    keys: Mapping[str, DecisionKey] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Keyring:
        """The keyring in ``path``; empty when there is none. Raises ValueError for a file that
        is not a keyring, naming what is wrong (never the keys)."""
        if not path.exists():
            return cls()
        try:
            entries = json.loads(path.read_text())
            keys = {
                key_id: DecisionKey(key_id, bytes.fromhex(entry["key"]), entry.get("identity"))
                for key_id, entry in entries.items()
            }
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"{path} is not a decision keyring ({type(error).__name__})") from None
        if any(len(key.secret) < 16 for key in keys.values()):
            raise ValueError(f"{path}: every key needs at least 16 bytes (32 hex digits)")
        return cls(keys)

    @classmethod
    def create(cls, path: Path) -> Keyring:
        """A new keyring in ``path`` (readable by its owner only) with one fresh shared key."""
        made = cls({LOCAL_KEY_ID: DecisionKey(LOCAL_KEY_ID, secrets.token_bytes(KEY_BYTES))})
        made.write(path, exclusive=True)
        return made

    def adding(self, key_id: str, identity: str | None) -> Keyring:
        """This keyring with a fresh key ``key_id`` (for ``identity`` only; None: shared)."""
        if key_id in self.keys:
            raise ValueError(f"the keyring already has a key {key_id!r}")
        key = DecisionKey(key_id, secrets.token_bytes(KEY_BYTES), identity)
        return Keyring({**self.keys, key_id: key})

    def only(self, key_id: str) -> Keyring:
        """The keyring of one key: what its owner holds to sign with."""
        return Keyring({key_id: self.keys[key_id]})

    def write(self, path: Path, exclusive: bool = False) -> None:
        """Save to ``path``, readable by its owner only (a new file, with ``exclusive``)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(
            {key.key_id: {"key": key.secret.hex(), "identity": key.identity} for key in self.keys.values()}
        )
        staged = path if exclusive else path.with_name(f".{path.name}.{os.getpid()}")
        flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
        with os.fdopen(os.open(staged, flags, 0o600), "w") as file:
            file.write(text)
        if staged != path:
            staged.replace(path)


def signing_bytes(event: SignedDecision) -> bytes:
    """What the MAC covers: the event's canonical JSON without the MAC itself."""
    data = event.model_dump(mode="json")
    if data.get("signature") is not None:
        data["signature"].pop("value", None)
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _mac(secret: bytes, event: SignedDecision) -> str:
    return base64.b64encode(hmac.new(secret, signing_bytes(event), hashlib.sha256).digest()).decode()


@dataclass(frozen=True)
class Signer:
    """Signs decisions as ``identity`` with ``key``."""

    key: DecisionKey
    identity: str

    def __post_init__(self) -> None:
        if self.key.identity is not None and self.key.identity != self.identity:
            raise ValueError(
                f"key {self.key.key_id!r} signs only for {self.key.identity!r}, not {self.identity!r}"
            )

    def sign(self, event: D, now: datetime, ttl_s: float, nonce: str) -> D:
        """``event`` with a signature valid from ``now`` for ``ttl_s`` seconds."""
        unsigned = Signature(
            by=self.identity,
            key_id=self.key.key_id,
            nonce=nonce,
            expires_at=now + timedelta(seconds=ttl_s),
            value="-",
        )
        draft = event.model_copy(update={"signature": unsigned})
        signed = unsigned.model_copy(update={"value": _mac(self.key.secret, draft)})
        return event.model_copy(update={"signature": signed})


def verify(
    event: SignedDecision, keyring: Keyring, now: datetime, max_ttl_s: float, skew_s: float
) -> str | None:
    """Why ``event`` must not be acted on, or None when its signature holds. Never raises."""
    signature = event.signature
    if signature is None:
        return "unsigned"
    key = keyring.keys.get(signature.key_id)
    if key is None:
        return f"signed with an unknown key {signature.key_id!r}"
    if key.identity is not None and key.identity != signature.by:
        return f"signed as {signature.by!r} with the key of {key.identity!r}"
    if not hmac.compare_digest(_mac(key.secret, event), signature.value):
        return "bad signature: the decision was altered, or signed with another key"
    if signature.by != event.decided_by():
        return f"signed by {signature.by!r} but made in the name of {event.decided_by()!r}"
    skew = timedelta(seconds=skew_s)
    occurred = event.occurred_at if event.occurred_at.tzinfo else event.occurred_at.replace(tzinfo=UTC)
    if occurred > now + skew:
        return f"made in the future ({occurred.isoformat()})"
    if signature.expires_at < now - skew:
        return f"expired at {signature.expires_at.isoformat()}"
    if signature.expires_at - occurred > timedelta(seconds=max_ttl_s):
        return f"valid for longer than the {max_ttl_s:g} s a decision may be"
    return None


def new_nonce() -> str:
    return secrets.token_hex(16)


__all__ = ["DecisionKey", "Keyring", "Signer", "new_nonce", "signing_bytes", "verify"]
