"""Bech32 (BIP-173) encoding, as age uses it for ``age1…`` recipients and ``AGE-SECRET-KEY-1…`` identities.

age drops BIP-173's 90-character limit (its identities are longer), so this module has none. Error
messages never echo the input: the input may be a secret key.
"""

from __future__ import annotations

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_CHARSET_REV = {c: i for i, c in enumerate(CHARSET)}
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


class Bech32Error(ValueError):
    """The text is not valid bech32 (the message never contains the text)."""


def _polymod(values: list[int]) -> int:
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i in range(5):
            if (top >> i) & 1:
                chk ^= _GENERATOR[i]
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _create_checksum(hrp: str, data: list[int]) -> list[int]:
    polymod = _polymod(_hrp_expand(hrp) + data + [0] * 6) ^ 1
    return [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]


def convert_bits(data: bytes | list[int], from_bits: int, to_bits: int, *, pad: bool) -> list[int]:
    """Regroup ``data`` from ``from_bits``-bit to ``to_bits``-bit values (BIP-173 reference algorithm).

    Without ``pad``, leftover bits must be fewer than ``from_bits`` and all zero, else Bech32Error.
    """
    acc = 0
    bits = 0
    out: list[int] = []
    maxv = (1 << to_bits) - 1
    for value in data:
        if value < 0 or value >> from_bits:
            raise Bech32Error("bech32: value out of range")
        acc = (acc << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (to_bits - bits)) & maxv)
    elif bits >= from_bits or ((acc << (to_bits - bits)) & maxv):
        raise Bech32Error("bech32: invalid padding")
    return out


def encode(hrp: str, data: bytes) -> str:
    """Encode ``data`` (8-bit bytes) under human-readable part ``hrp``; the result is lowercase."""
    if not hrp or any(ord(c) < 33 or ord(c) > 126 for c in hrp):
        raise Bech32Error("bech32: invalid human-readable part")
    hrp = hrp.lower()
    values = convert_bits(data, 8, 5, pad=True)
    return hrp + "1" + "".join(CHARSET[v] for v in values + _create_checksum(hrp, values))


def decode_5bit(text: str) -> tuple[str, list[int]]:
    """Decode ``text`` into (lowercase hrp, 5-bit values without checksum). Raises Bech32Error."""
    if any(ord(c) < 33 or ord(c) > 126 for c in text):
        raise Bech32Error("bech32: invalid character")
    if text.lower() != text and text.upper() != text:
        raise Bech32Error("bech32: mixed case")
    text = text.lower()
    pos = text.rfind("1")
    if pos < 1 or pos + 7 > len(text):
        raise Bech32Error("bech32: missing separator, human-readable part or checksum")
    hrp = text[:pos]
    try:
        values = [_CHARSET_REV[c] for c in text[pos + 1 :]]
    except KeyError:
        raise Bech32Error("bech32: invalid data character") from None
    if _polymod(_hrp_expand(hrp) + values) != 1:
        raise Bech32Error("bech32: invalid checksum")
    return hrp, values[:-6]


def decode(text: str) -> tuple[str, bytes]:
    """Decode ``text`` into (lowercase hrp, 8-bit data). Raises Bech32Error."""
    hrp, values = decode_5bit(text)
    return hrp, bytes(convert_bits(values, 5, 8, pad=False))
