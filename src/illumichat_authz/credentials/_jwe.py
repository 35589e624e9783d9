"""Compact JWE with ``alg: dir``, hand-rolled on ``cryptography`` primitives.

Only what Auth.js issues is implemented: direct encryption (RFC 7516 §4.1.1, RFC 7518 §4.5)
with ``A256CBC-HS512`` (RFC 7518 §5.2.5) or ``A256GCM`` (RFC 7518 §5.3). Sans-IO: bytes in,
bytes out. Every failure here raises :class:`JweError` with a short *internal* cause; the
caller turns all of them into one generic credential error so that nothing (padding, tag,
header) can be told apart from outside.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import os
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ._claims import strict_json

__all__ = [
    "ENC_KEY_LENGTH",
    "MAX_TOKEN_CHARS",
    "Compact",
    "ContentKey",
    "Enc",
    "JweError",
    "b64url_decode",
    "b64url_encode",
    "decrypt",
    "derive_key",
    "encrypt",
    "jwk_thumbprint",
    "parse_compact",
    "parse_header",
    "seal",
]

Enc = Literal["A256CBC-HS512", "A256GCM"]

#: Content encryption algorithm -> key length in bytes (RFC 7518 §5.2.5 and §5.3).
ENC_KEY_LENGTH: Final[dict[str, int]] = {"A256CBC-HS512": 64, "A256GCM": 32}
#: IV and tag lengths in bytes. RFC 7518 §5.2.5: "The input key K is 64 octets long ... the
#: authentication tag T is 32 octets"; §5.2.2.1: the IV is 128 bits. §5.3: "Use of an IV of
#: size 96 bits is REQUIRED" and "The requested size of the Authentication Tag output MUST
#: be 128 bits".
_IV_LENGTH: Final[dict[str, int]] = {"A256CBC-HS512": 16, "A256GCM": 12}
_TAG_LENGTH: Final[dict[str, int]] = {"A256CBC-HS512": 32, "A256GCM": 16}

#: Longest compact token looked at (bounded work before any base64 or crypto). Auth.js
#: chunks a cookie at 3936 characters; 16 chunks is far beyond any real session.
MAX_TOKEN_CHARS: Final = 16 * 3936
_MAX_HEADER_CHARS: Final = 1024
#: Decryptors kept per key between requests: about one per thread that decrypts at once.
_MAX_IDLE_DECRYPTORS: Final = 16

#: Header members we understand. Anything else (``zip``, ``crit``, ``jku``, ``jwk``, ``x5u``,
#: ``cty``, ``epk``, ``p2s``...) is refused: RFC 7516 §4.1.13 says a recipient that does not
#: understand a ``crit`` extension MUST reject, and we choose to treat every member we do not
#: implement the same way (Auth.js itself only ever writes ``alg``, ``enc`` and ``kid``).
_ALLOWED_HEADER: Final = frozenset({"alg", "enc", "kid", "typ"})

# base64url <-> base64: swapping the two alphabets means a "+" or "/" in the input becomes a
# "-" or "_" that strict base64 refuses, so one C call both translates and validates.
_B64URL_SWAP: Final = bytes.maketrans(b"-_+/", b"+/-_")


class JweError(Exception):
    """Internal: why a token failed. Never shown to callers (see module docstring)."""


def b64url_decode(data: str) -> bytes:
    """Strict unpadded base64url (RFC 7515 §2: "with all trailing '=' characters omitted")."""
    try:
        raw = data.encode("ascii")
    except UnicodeEncodeError:
        raise JweError("non-ascii base64url") from None
    rem = len(raw) % 4
    if rem == 1 or b"=" in raw:
        raise JweError("bad base64url length or padding")
    raw = raw.translate(_B64URL_SWAP) + b"=" * ((4 - rem) % 4)
    try:
        return binascii.a2b_base64(raw, strict_mode=True)
    except binascii.Error:
        raise JweError("bad base64url") from None


def b64url_encode(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).translate(_B64URL_SWAP).rstrip(b"=").decode()


def derive_key(secret: str | bytes, *, salt: str | bytes, info: str | bytes, length: int) -> bytes:
    """HKDF-SHA256 (RFC 5869), as ``@panva/hkdf`` computes it for Auth.js."""
    ikm = secret.encode() if isinstance(secret, str) else secret
    salt_b = salt.encode() if isinstance(salt, str) else salt
    info_b = info.encode() if isinstance(info, str) else info
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt_b, info=info_b).derive(ikm)


def jwk_thumbprint(key: bytes) -> str:
    """RFC 7638 thumbprint of ``{"kty": "oct", "k": ...}``.

    Auth.js hashes with ``sha${key.byteLength << 3}``: SHA-512 for the 64-byte CBC-HS512
    key, SHA-256 for the 32-byte GCM key. RFC 7638 §3.2: members in lexicographic order,
    no whitespace.
    """
    canonical = '{"k":"' + b64url_encode(key) + '","kty":"oct"}'
    digest = hashlib.new(f"sha{len(key) * 8}", canonical.encode()).digest()
    return b64url_encode(digest)


@dataclass(frozen=True, slots=True, kw_only=True)
class ContentKey:
    """A derived content encryption key, with the pieces precomputed for the hot path."""

    enc: Enc
    key: bytes = field(repr=False)
    kid: str
    #: Index of the secret it came from (0 = newest).
    secret_index: int = 0
    _mac_key: bytes = field(init=False, repr=False, compare=False)
    #: HMAC-SHA512 with the key's padded blocks already absorbed (RFC 2104: H(K XOR opad,
    #: H(K XOR ipad, text))); each request copies them instead of re-keying.
    _inner: Any = field(init=False, repr=False, compare=False)
    _outer: Any = field(init=False, repr=False, compare=False)
    _aes: algorithms.AES = field(init=False, repr=False, compare=False)
    _gcm: AESGCM | None = field(init=False, repr=False, compare=False)
    #: Idle AES block decryptors, reused across requests (see :func:`_cbc_decrypt`).
    _ecbs: deque[Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.key) != ENC_KEY_LENGTH[self.enc]:
            raise ValueError(f"{self.enc} needs a {ENC_KEY_LENGTH[self.enc]}-byte key")
        if self.enc == "A256CBC-HS512":
            # RFC 7518 §5.2.2.1: "MAC_KEY = initial MAC_KEY_LEN octets of K, ENC_KEY = final
            # ENC_KEY_LEN octets of K".
            mac_key = self.key[:32]
            block = mac_key.ljust(128, b"\0")  # SHA-512 block size; the key is shorter
            object.__setattr__(self, "_mac_key", mac_key)
            object.__setattr__(self, "_inner", hashlib.sha512(bytes(b ^ 0x36 for b in block)))
            object.__setattr__(self, "_outer", hashlib.sha512(bytes(b ^ 0x5C for b in block)))
            object.__setattr__(self, "_aes", algorithms.AES(self.key[32:]))
            object.__setattr__(self, "_gcm", None)
        else:
            object.__setattr__(self, "_mac_key", b"")
            object.__setattr__(self, "_inner", None)
            object.__setattr__(self, "_outer", None)
            object.__setattr__(self, "_aes", algorithms.AES(self.key))
            object.__setattr__(self, "_gcm", AESGCM(self.key))
        object.__setattr__(self, "_ecbs", deque())

    @classmethod
    def create(cls, key: bytes, *, enc: Enc, secret_index: int = 0) -> ContentKey:
        return cls(enc=enc, key=key, kid=jwk_thumbprint(key), secret_index=secret_index)


@dataclass(frozen=True, slots=True)
class Compact:
    """The five parts of a compact JWE, decoded, before any cryptography."""

    header_segment: str
    header: dict[str, Any]
    iv: bytes
    ciphertext: bytes
    tag: bytes

    @property
    def enc(self) -> Enc:
        enc: Enc = self.header["enc"]
        return enc

    @property
    def kid(self) -> str | None:
        kid: str | None = self.header.get("kid")
        return kid


def parse_header(segment: str) -> dict[str, Any]:
    """Decode and validate a protected header (no key material involved)."""
    if len(segment) > _MAX_HEADER_CHARS:
        raise JweError("header too long")
    try:
        header = strict_json(b64url_decode(segment))
    except ValueError:  # JSONDecodeError, UnicodeDecodeError and strict_json's refusals
        raise JweError("header is not JSON") from None
    if not isinstance(header, dict):
        raise JweError("header is not an object")
    if not header.keys() <= _ALLOWED_HEADER:
        raise JweError("unsupported header member")
    # RFC 7518 §4.5: "alg" "dir": direct use of a shared symmetric key.
    if header.get("alg") != "dir":
        raise JweError("alg is not dir")
    if header.get("enc") not in ENC_KEY_LENGTH:
        raise JweError("unsupported enc")
    if "kid" in header and not isinstance(header["kid"], str):
        raise JweError("kid is not a string")
    if "typ" in header and header["typ"] != "JWT":
        raise JweError("typ is not JWT")
    return header


def parse_compact(token: str, *, header: dict[str, Any] | None = None) -> Compact:
    """Split and decode; every length is checked here, before any cryptography.

    ``header``: the already validated header for ``token``'s first segment (a cache hit).
    """
    if len(token) > MAX_TOKEN_CHARS:
        raise JweError("token too long")
    parts = token.split(".")
    if len(parts) != 5:
        raise JweError("not five parts")
    header_segment, encrypted_key, iv_s, ct_s, tag_s = parts
    if header is None:
        header = parse_header(header_segment)
    # RFC 7516 §5.1 step 6: "When Direct Encryption is employed, let the CEK be the shared
    # symmetric key" and "the JWE Encrypted Key value [is] the empty octet sequence".
    if encrypted_key:
        raise JweError("encrypted key part is not empty")
    enc = header["enc"]
    iv = b64url_decode(iv_s)
    tag = b64url_decode(tag_s)
    if len(iv) != _IV_LENGTH[enc] or len(tag) != _TAG_LENGTH[enc]:
        raise JweError("bad iv or tag length")
    ciphertext = b64url_decode(ct_s)
    if enc == "A256CBC-HS512" and (not ciphertext or len(ciphertext) % 16):
        raise JweError("ciphertext is not whole blocks")
    return Compact(header_segment, header, iv, ciphertext, tag)


def _cbc_tag(key: ContentKey, aad: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    # RFC 7518 §5.2.2.1 step 4-5: "The octet string AL is equal to the number of bits in the
    # Additional Authenticated Data A expressed as a 64-bit unsigned big-endian integer";
    # M = MAC(MAC_KEY, A || IV || E || AL); "T = initial T_LEN octets of M".
    al = (len(aad) * 8).to_bytes(8, "big")
    inner = key._inner.copy()
    inner.update(aad + iv + ciphertext + al)
    outer = key._outer.copy()
    outer.update(inner.digest())
    tag: bytes = outer.digest()[:32]
    return tag


def _cbc_decrypt(key: ContentKey, iv: bytes, ciphertext: bytes) -> bytes:
    """AES-CBC decryption, P_i = D(C_i) XOR C_(i-1) with C_0 = IV (NIST SP 800-38A §6.2).

    Building a ``Cipher(..., CBC(iv))`` costs more than decrypting a session, so ECB
    decryptors are kept per key (ECB over whole blocks carries no state between calls) and
    the chaining XOR is one big-integer operation. A decryptor is lent to one caller at a
    time from a deque, whose pops and appends are thread-safe without a lock (as in
    ``stores._sqlite.ConnectionPool``); at most :data:`_MAX_IDLE_DECRYPTORS` are kept.
    """
    idle = key._ecbs
    try:
        ecb = idle.pop()
    except IndexError:
        ecb = Cipher(key._aes, modes.ECB()).decryptor()  # noqa: S305 -- CBC built on it
    blocks = ecb.update(ciphertext)
    if len(idle) < _MAX_IDLE_DECRYPTORS:
        idle.append(ecb)
    chained = int.from_bytes(blocks, "big") ^ int.from_bytes(iv + ciphertext[:-16], "big")
    return chained.to_bytes(len(ciphertext), "big")


def decrypt(parts: Compact, key: ContentKey) -> bytes:
    """Authenticate, then decrypt. Raises :class:`JweError` on any failure."""
    if parts.enc != key.enc:
        raise JweError("enc does not match the key")
    # RFC 7516 §5.2 step 14: "Let the Additional Authenticated Data encryption parameter be
    # ASCII(Encoded Protected Header)".
    aad = parts.header_segment.encode("ascii")
    if key._gcm is not None:
        try:
            return key._gcm.decrypt(parts.iv, parts.ciphertext + parts.tag, aad)
        except Exception:  # InvalidTag, or an OverflowError on absurd sizes
            raise JweError("decryption failed") from None
    # RFC 7518 §5.2.2.2: "The integrity and authenticity of A and E are checked by computing
    # an HMAC ... If the T value is not equal to the first T_LEN octets of M, the
    # decryption MUST fail" -- before any decryption, in constant time.
    expected = _cbc_tag(key, aad, parts.iv, parts.ciphertext)
    if not hmac.compare_digest(expected, parts.tag):
        raise JweError("decryption failed")
    padded = _cbc_decrypt(key, parts.iv, parts.ciphertext)
    # PKCS #7 padding (RFC 7518 §5.2.2.1 step 3). The tag already proved who wrote it, so a
    # bad pad means a broken peer, not an oracle; it still fails the same way.
    pad = padded[-1]
    if not 1 <= pad <= 16 or padded[-pad:] != bytes((pad,)) * pad:
        raise JweError("decryption failed")
    return padded[:-pad]


def seal(plaintext: bytes, key: ContentKey, *, aad: bytes, iv: bytes) -> tuple[bytes, bytes]:
    """Encrypt and authenticate: ``(ciphertext, tag)`` (RFC 7518 §5.2.2.1 or §5.3)."""
    if len(iv) != _IV_LENGTH[key.enc]:
        raise ValueError("bad iv length")
    if key._gcm is not None:
        sealed = key._gcm.encrypt(iv, plaintext, aad)
        return sealed[:-16], sealed[-16:]
    pad = 16 - len(plaintext) % 16
    encryptor = Cipher(key._aes, modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(plaintext + bytes((pad,)) * pad) + encryptor.finalize()
    return ciphertext, _cbc_tag(key, aad, iv, ciphertext)


def encrypt(
    plaintext: bytes, key: ContentKey, *, header: dict[str, Any], iv: bytes | None = None
) -> str:
    """Produce a compact JWE (``alg: dir``) of ``plaintext`` under ``key``."""
    header_segment = b64url_encode(json.dumps(header, separators=(",", ":")).encode())
    iv = iv if iv is not None else os.urandom(_IV_LENGTH[key.enc])
    ciphertext, tag = seal(plaintext, key, aad=header_segment.encode("ascii"), iv=iv)
    return ".".join(
        (header_segment, "", b64url_encode(iv), b64url_encode(ciphertext), b64url_encode(tag))
    )
