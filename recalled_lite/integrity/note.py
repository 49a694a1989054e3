"""C2SP signed-note with Ed25519, byte-compatible with Go's golang.org/x/mod/sumdb/note.

    private key  PRIVATE+KEY+<name>+<8 hex key id>+base64(0x01 || 32-byte seed)
    verifier key <name>+<8 hex key id>+base64(0x01 || 32-byte public key)
    key id       first 4 bytes, big-endian, of SHA-256(name || 0x0A || 0x01 || public key)
    signed note  text (ending in "\\n") || "\\n" || one line per signature:
                 "\u2014 " || name || " " || base64(key id (4 bytes) || signature) || "\\n"

The Ed25519 signature is over the note text exactly (final newline included).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

ALG_ED25519 = 0x01
_DASH = "\u2014 "
MAX_SIGNATURES = 100  # Go's note.Open limit; the spec asks for at least 16
MAX_NOTE_BYTES = 1 << 20


class NoteError(ValueError):
    """A key or note is malformed, or a note does not verify."""


def _valid_name(name: str) -> bool:
    return bool(name) and "+" not in name and not any(c.isspace() for c in name) and name.isprintable()


def key_id(name: str, public_key: bytes) -> int:
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([ALG_ED25519]) + public_key).digest()
    return struct.unpack(">I", digest[:4])[0]


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise NoteError("not valid base64") from None


@dataclass(frozen=True)
class Verifier:
    name: str
    key_id: int
    public_key: bytes  # 32 bytes

    @property
    def vkey(self) -> str:
        return f"{self.name}+{self.key_id:08x}+" + base64.b64encode(bytes([ALG_ED25519]) + self.public_key).decode()

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True)
class Signer:
    name: str
    key_id: int
    _private: Ed25519PrivateKey

    @property
    def verifier(self) -> Verifier:
        public = self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return Verifier(self.name, self.key_id, public)

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)


def generate_key(name: str) -> tuple[str, str]:
    """A new (private key, verifier key) pair as note-format strings."""
    if not _valid_name(name):
        raise NoteError(f"invalid key name {name!r}: no spaces or '+'")
    private = Ed25519PrivateKey.generate()
    seed = private.private_bytes_raw()
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    kid = key_id(name, public)
    encoded = base64.b64encode(bytes([ALG_ED25519]) + seed).decode()
    verifier = Verifier(name, kid, public)
    return f"PRIVATE+KEY+{name}+{kid:08x}+{encoded}", verifier.vkey


def _split_key(text: str, parts: int) -> list[str]:
    # The base64 part may itself hold "+": split only at the first separators, as Go does.
    fields = text.split("+", parts - 1)
    if len(fields) != parts:
        raise NoteError("malformed key")
    return fields


def _parse_id(text: str) -> int:
    if len(text) != 8 or any(c not in "0123456789abcdef" for c in text):
        raise NoteError("malformed key id: expected 8 lowercase hex digits")
    return int(text, 16)


def parse_signer(skey: str) -> Signer:
    private_word, key_word, name, id_text, data = _split_key(skey, 5)
    if private_word != "PRIVATE" or key_word != "KEY" or not _valid_name(name):
        raise NoteError("malformed private key: expected PRIVATE+KEY+<name>+<id>+<key>")
    kid = _parse_id(id_text)
    raw = _b64decode(data)
    if len(raw) != 33 or raw[0] != ALG_ED25519:
        raise NoteError("the private key is not an Ed25519 note key")
    private = Ed25519PrivateKey.from_private_bytes(raw[1:])
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    if key_id(name, public) != kid:
        raise NoteError("the private key's id does not match its name and key")
    return Signer(name, kid, private)


def parse_verifier(vkey: str) -> Verifier:
    name, id_text, data = _split_key(vkey, 3)
    if not _valid_name(name):
        raise NoteError("malformed verifier key: invalid name")
    kid = _parse_id(id_text)
    raw = _b64decode(data)
    if len(raw) != 33 or raw[0] != ALG_ED25519:
        raise NoteError("the verifier key is not an Ed25519 note key")
    if key_id(name, raw[1:]) != kid:
        raise NoteError("the verifier key's id does not match its name and key")
    return Verifier(name, kid, raw[1:])


def _check_text(text: str) -> None:
    if not text.endswith("\n") or any(ord(c) < 0x20 and c != "\n" for c in text):
        raise NoteError("malformed note text: it must end in a newline and hold no control characters")


def sign(text: str, signer: Signer) -> str:
    """The signed note: text, a blank line, the signature line."""
    _check_text(text)
    message = text.encode("utf-8")
    blob = struct.pack(">I", signer.key_id) + signer.sign(message)
    return f"{text}\n{_DASH}{signer.name} {base64.b64encode(blob).decode()}\n"


@dataclass(frozen=True)
class Opened:
    text: str
    verified: list[Verifier]  # the known keys whose signatures verified
    unknown: list[tuple[str, int]]  # (name, key id) of signatures by keys not given


def open_note(note: str | bytes, verifiers: list[Verifier]) -> Opened:
    """Split and verify a signed note. Raises NoteError unless a known key signed it and
    every signature by a known key verifies (unknown keys' signatures are ignored)."""
    if isinstance(note, bytes):
        if len(note) > MAX_NOTE_BYTES:
            raise NoteError("note too large")
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError:
            raise NoteError("note is not UTF-8") from None
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise NoteError("malformed note: control characters")
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise NoteError("malformed note: no signature block")
    text, block = note[: split + 1], note[split + 2:]
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError("too many signatures")
    known = {(v.name, v.key_id): v for v in verifiers}
    message = text.encode("utf-8")
    verified: list[Verifier] = []
    unknown: list[tuple[str, int]] = []
    for line in lines:
        if not line.startswith(_DASH):
            raise NoteError("malformed signature line")
        name, space, data = line[len(_DASH):].partition(" ")
        if not space or not _valid_name(name) or " " in data:
            raise NoteError("malformed signature line")
        blob = _b64decode(data)
        if len(blob) < 5:
            raise NoteError("malformed signature")
        kid = struct.unpack(">I", blob[:4])[0]
        verifier = known.get((name, kid))
        if verifier is None:
            unknown.append((name, kid))
            continue
        if not verifier.verify(message, blob[4:]):
            raise NoteError(f"invalid signature by {name}+{kid:08x}")
        verified.append(verifier)
    if not verified:
        raise NoteError("the note is not signed by the given key")
    return Opened(text, verified, unknown)
