"""age encryption: interop with the real `age` CLI both ways, tampering, truncation, bech32, key files."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, cast

import pytest
import zstandard

from dr.crypto import bech32
from dr.crypto.age import (
    AUTH_FAILED,
    CHUNK_SIZE,
    ENC_CHUNK_SIZE,
    NO_IDENTITY,
    NONCE_SIZE,
    AgeReader,
    AgeWriter,
    Identity,
    Recipient,
    _chunk_nonce,
    _header,
    _hkdf,
    decrypt_bytes,
    encrypt_bytes,
    generate_identity,
    open_decrypting,
)
from dr.crypto.keys import load_identity, write_key_file
from dr.errors import ConfigError, IntegrityError

AGE = shutil.which("age")
AGE_KEYGEN = shutil.which("age-keygen")
needs_age = pytest.mark.skipif(
    AGE is None or AGE_KEYGEN is None,
    reason="the age CLI is not installed (apt-get install -y age); .ci/run installs it",
)

SIZES = [0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * 1024 * 1024]
ODD_WRITES = [1, 7, 65535, 3, 65537, 100_003, 13]


@pytest.fixture(scope="module")
def identity() -> Identity:
    return generate_identity()


@pytest.fixture
def key_file(tmp_path: Path, identity: Identity) -> Path:
    path = tmp_path / "key.txt"
    write_key_file(path, identity)
    return path


def payload(n: int) -> bytes:
    return os.urandom(n)


def odd_pieces(data: bytes) -> Iterator[bytes]:
    pos, i = 0, 0
    while pos < len(data):
        step = ODD_WRITES[i % len(ODD_WRITES)]
        yield data[pos : pos + step]
        pos += step
        i += 1


def encrypt_odd(data: bytes, recipients: list[Recipient]) -> bytes:
    sink = io.BytesIO()
    writer = AgeWriter(sink, recipients)
    for piece in odd_pieces(data):
        assert writer.write(piece) == len(piece)
    writer.close()
    return sink.getvalue()


def header_len(ct: bytes) -> int:
    """Bytes up to and including the MAC line's newline."""
    return ct.index(b"\n", ct.index(b"\n---") + 1) + 1


def run_age(*args: str, stdin: bytes) -> bytes:
    assert AGE is not None
    done = subprocess.run([AGE, *args], input=stdin, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


# --- interop with the age CLI -----------------------------------------------------------------------------


@needs_age
@pytest.mark.parametrize("size", SIZES)
def test_jdr_encrypts_age_cli_decrypts(size: int, identity: Identity, key_file: Path) -> None:
    data = payload(size)
    ct = encrypt_odd(data, [identity.recipient])
    assert run_age("-d", "-i", str(key_file), stdin=ct) == data


@needs_age
@pytest.mark.parametrize("size", SIZES)
def test_age_cli_encrypts_to_jdr_recipient_jdr_decrypts(size: int, identity: Identity) -> None:
    data = payload(size)
    ct = run_age("-r", identity.recipient.text(), stdin=data)
    assert decrypt_bytes(ct, [identity]) == data
    # and streamed, in odd read sizes through a BufferedReader
    reader = io.BufferedReader(AgeReader(io.BytesIO(ct), [identity]), buffer_size=5000)
    got = bytearray()
    i = 0
    while chunk := reader.read(ODD_WRITES[i % len(ODD_WRITES)]):
        got += chunk
        i += 1
    assert bytes(got) == data


@needs_age
def test_age_keygen_key_parsed_by_jdr(tmp_path: Path) -> None:
    assert AGE_KEYGEN is not None
    key = tmp_path / "keygen.txt"
    subprocess.run([AGE_KEYGEN, "-o", str(key)], check=True, capture_output=True)
    ident = load_identity(key)
    public = subprocess.run([AGE_KEYGEN, "-y", str(key)], check=True, capture_output=True, text=True)
    assert ident.recipient.text() == public.stdout.strip()
    data = payload(CHUNK_SIZE * 2 + 5)
    ct = run_age("-e", "-i", str(key), stdin=data)  # encrypt to the key file's own recipient
    assert decrypt_bytes(ct, [ident]) == data
    assert run_age("-d", "-i", str(key), stdin=encrypt_bytes(data, [ident.recipient])) == data


@needs_age
def test_multiple_recipients(tmp_path: Path, identity: Identity) -> None:
    other = generate_identity()
    other_key = tmp_path / "other.txt"
    write_key_file(other_key, other)
    data = payload(CHUNK_SIZE + 17)
    ct = encrypt_bytes(data, [identity.recipient, other.recipient])
    assert run_age("-d", "-i", str(other_key), stdin=ct) == data
    assert decrypt_bytes(ct, [identity]) == data
    assert decrypt_bytes(ct, [generate_identity(), other]) == data
    ct2 = run_age("-r", identity.recipient.text(), "-r", other.recipient.text(), stdin=data)
    assert decrypt_bytes(ct2, [other]) == data


@pytest.mark.parametrize("size", SIZES)
def test_round_trip_without_cli(size: int, identity: Identity) -> None:
    data = payload(size)
    assert decrypt_bytes(encrypt_odd(data, [identity.recipient]), [identity]) == data
    assert decrypt_bytes(encrypt_bytes(data, [identity.recipient]), [identity]) == data


# --- streaming with zstd ----------------------------------------------------------------------------------


def test_zstd_compress_encrypt_then_stream_reader(identity: Identity) -> None:
    data = payload(1024 * 1024) + b"compressible " * 200_000
    sink = io.BytesIO()
    writer = AgeWriter(sink, [identity.recipient])
    with zstandard.ZstdCompressor().stream_writer(cast(IO[bytes], writer), closefd=False) as zw:
        for piece in odd_pieces(data):
            zw.write(piece)
    writer.close()
    ct = sink.getvalue()

    with zstandard.ZstdDecompressor().stream_reader(
        cast(IO[bytes], AgeReader(io.BytesIO(ct), [identity]))
    ) as zr:
        got = bytearray()
        while chunk := zr.read(77_777):
            got += chunk
    assert bytes(got) == data

    buffered = open_decrypting(io.BytesIO(ct), [identity])
    assert zstandard.ZstdDecompressor().stream_reader(buffered).read() == data


@needs_age
def test_zstd_encrypted_by_age_cli_read_by_jdr(identity: Identity) -> None:
    data = b"row,value\n" * 300_000
    ct = run_age("-r", identity.recipient.text(), stdin=zstandard.ZstdCompressor().compress(data))
    with zstandard.ZstdDecompressor().stream_reader(
        cast(IO[bytes], AgeReader(io.BytesIO(ct), [identity]))
    ) as zr:
        assert zr.read() == data


def test_writer_memory_bounded(identity: Identity) -> None:
    writes: list[int] = []

    class Sink:
        def write(self, b: bytes) -> int:
            writes.append(len(b))
            return len(b)

    writer = AgeWriter(Sink(), [identity.recipient])
    writer.write(bytes(3 * 1024 * 1024 + 5))
    writer.close()
    assert max(writes[1:]) == ENC_CHUNK_SIZE  # after the header, one sealed chunk per write
    assert len(writes) == 1 + 49


# --- tampering, truncation, wrong keys ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def sealed(identity: Identity) -> tuple[bytes, bytes]:
    data = payload(3 * 1024 * 1024 + 1000)  # 48 full chunks and a short last one
    return data, encrypt_bytes(data, [identity.recipient])


def flip(ct: bytes, pos: int) -> bytes:
    b = bytearray(ct)
    b[pos] ^= 0x01
    return bytes(b)


def read_all_checking_prefix(ct: bytes, identity: Identity, data: bytes) -> None:
    """Decrypt until it fails; whatever came out before the failure is genuine plaintext."""
    got = bytearray()
    try:
        with AgeReader(io.BytesIO(ct), [identity]) as reader:
            while chunk := reader.read(10_000):
                got += chunk
    finally:
        assert data.startswith(got)


@pytest.mark.parametrize(
    "where",
    ["version", "stanza-share", "stanza-body", "mac", "nonce", "first-chunk", "middle-chunk", "last-chunk"],
)
def test_flipped_byte_raises(where: str, sealed: tuple[bytes, bytes], identity: Identity) -> None:
    data, ct = sealed
    h = header_len(ct)
    lines = ct[:h].split(b"\n")
    stanza_body = len(lines[0]) + 1 + len(lines[1]) + 1
    pos = {
        "version": 3,
        "stanza-share": len(lines[0]) + 1 + 15,
        "stanza-body": stanza_body + 5,
        "mac": h - 5,
        "nonce": h + 3,
        "first-chunk": h + NONCE_SIZE + 100,
        "middle-chunk": h + NONCE_SIZE + 20 * ENC_CHUNK_SIZE + 1234,
        "last-chunk": len(ct) - 20,
    }[where]
    with pytest.raises(IntegrityError) as e:
        read_all_checking_prefix(flip(ct, pos), identity, data)
    assert identity.secret_text() not in str(e.value)


def test_middle_chunk_tamper_returns_only_earlier_chunks(
    sealed: tuple[bytes, bytes], identity: Identity
) -> None:
    data, ct = sealed
    h = header_len(ct)
    bad = flip(ct, h + NONCE_SIZE + 5 * ENC_CHUNK_SIZE + 10)
    reader = AgeReader(io.BytesIO(bad), [identity])
    got = bytearray()
    while len(got) < 5 * CHUNK_SIZE:
        got += reader.read(5 * CHUNK_SIZE - len(got))
    assert bytes(got) == data[: 5 * CHUNK_SIZE]
    with pytest.raises(IntegrityError, match="authentication failed"):
        reader.read(1)
    with pytest.raises(IntegrityError, match="authentication failed"):
        reader.read(1)  # later chunks are intact, but the stream stays failed


def test_header_mac_failure_message(identity: Identity) -> None:
    ct = encrypt_bytes(b"hello", [identity.recipient])
    h = header_len(ct)
    mac_line = ct[ct.index(b"\n---") + 1 : h]
    # replace the MAC with a well-formed but wrong one
    bad = ct[: h - len(mac_line)] + b"--- " + b"A" * 43 + b"\n" + ct[h:]
    with pytest.raises(IntegrityError, match=AUTH_FAILED):
        decrypt_bytes(bad, [identity])


def test_wrong_identity(sealed: tuple[bytes, bytes]) -> None:
    _, ct = sealed
    with pytest.raises(IntegrityError, match=NO_IDENTITY):
        decrypt_bytes(ct, [generate_identity(), generate_identity()])


@pytest.mark.parametrize("size", [CHUNK_SIZE * 3, CHUNK_SIZE * 3 + 50])
def test_truncated_drop_last_chunk(size: int, identity: Identity) -> None:
    data = payload(size)
    ct = encrypt_bytes(data, [identity.recipient])
    last = ENC_CHUNK_SIZE if size % CHUNK_SIZE == 0 else size % CHUNK_SIZE + 16
    with pytest.raises(IntegrityError, match=r"truncated|authentication failed"):
        read_all_checking_prefix(ct[:-last], identity, data)


@pytest.mark.parametrize("cut", [1, 16, 17, 1000])
def test_truncated_anywhere(cut: int, sealed: tuple[bytes, bytes], identity: Identity) -> None:
    data, ct = sealed
    with pytest.raises(IntegrityError):
        read_all_checking_prefix(ct[:-cut], identity, data)


def test_truncated_inside_header_or_nonce(identity: Identity) -> None:
    ct = encrypt_bytes(b"x", [identity.recipient])
    h = header_len(ct)
    for cut in (0, 10, h - 1, h, h + NONCE_SIZE - 1, h + NONCE_SIZE):
        with pytest.raises(IntegrityError):
            decrypt_bytes(ct[:cut], [identity])


@pytest.mark.parametrize("size", [0, 10, CHUNK_SIZE, 3 * CHUNK_SIZE])
def test_trailing_data(size: int, identity: Identity) -> None:
    ct = encrypt_bytes(payload(size), [identity.recipient])
    with pytest.raises(IntegrityError):
        decrypt_bytes(ct + b"\x00", [identity])


def test_empty_last_chunk_after_full_chunk_rejected(identity: Identity) -> None:
    """The spec allows an empty last chunk only for an empty payload; age itself rejects this file too."""
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    file_key, nonce = os.urandom(16), os.urandom(NONCE_SIZE)
    aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
    ct = (
        _header(file_key, [identity.recipient])
        + nonce
        + aead.encrypt(_chunk_nonce(0, False), bytes(CHUNK_SIZE), None)
        + aead.encrypt(_chunk_nonce(1, True), b"", None)
    )
    with pytest.raises(IntegrityError, match="truncated"):
        decrypt_bytes(ct, [identity])


def test_aborted_writer_is_not_a_valid_file(identity: Identity) -> None:
    sink = io.BytesIO()
    with pytest.raises(RuntimeError), AgeWriter(sink, [identity.recipient]) as writer:
        writer.write(bytes(CHUNK_SIZE * 2 + 3))
        raise RuntimeError("backup failed")
    with pytest.raises(IntegrityError, match="truncated"):
        decrypt_bytes(sink.getvalue(), [identity])


def test_not_an_age_file(identity: Identity) -> None:
    with pytest.raises(IntegrityError, match="malformed age header"):
        decrypt_bytes(b"\x28\xb5\x2f\xfd" + bytes(100), [identity])
    with pytest.raises(IntegrityError, match="malformed age header"):
        decrypt_bytes(b"age-encryption.org/v1\n" + b"A" * (2 << 20), [identity])


# --- bech32 -------------------------------------------------------------------------------------------------

BIP173_VALID = [
    "A12UEL5L",
    "a12uel5l",
    "an83characterlonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1tt5tgs",
    "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw",
    "11" + "q" * 82 + "c8247j",
    "split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w",
    "?1ezyfcl",
]

BIP173_INVALID = [
    "\x201nwldj5",
    "\x7f1axkwrx",
    "\x801eym55h",
    "pzry9x0s0muk",
    "1pzry9x0s0muk",
    "x1b4n0q5v",
    "li1dgmt3",
    "de1lg7wt\xff",
    "A1G7SGD8",
    "10a06t8",
    "1qzzfhee",
]


@pytest.mark.parametrize("text", BIP173_VALID)
def test_bech32_valid_vectors(text: str) -> None:
    hrp, values = bech32.decode_5bit(text)
    assert hrp == text[: text.rfind("1")].lower()
    # re-encoding the same 5-bit values gives back the same checksum
    body = values + bech32._create_checksum(hrp, values)
    assert hrp + "1" + "".join(bech32.CHARSET[v] for v in body) == text.lower()


@pytest.mark.parametrize("text", BIP173_INVALID)
def test_bech32_invalid_vectors(text: str) -> None:
    with pytest.raises(bech32.Bech32Error):
        bech32.decode_5bit(text)


def test_bech32_round_trip() -> None:
    for n in (0, 1, 20, 32, 33):
        data = os.urandom(n)
        assert bech32.decode(bech32.encode("age", data)) == ("age", data)


def test_key_text_round_trip() -> None:
    ident = generate_identity()
    secret = ident.secret_text()
    assert secret.startswith("AGE-SECRET-KEY-1") and secret == secret.upper()
    assert ident.recipient.text().startswith("age1")
    again = Identity.parse(secret)
    assert again.secret_text() == secret and again.recipient == ident.recipient
    assert Recipient.parse(ident.recipient.text()) == ident.recipient
    assert Identity.parse(secret.lower()).recipient == ident.recipient


def test_parse_key_file_contents() -> None:
    ident = generate_identity()
    text = f"# created: x\n\n# public key: {ident.recipient.text()}\n{ident.secret_text()}\n"
    assert Identity.parse(text).recipient == ident.recipient


@pytest.mark.parametrize("bad", ["", "age1", "age1qqqq", "AGE1QPZRY", "bc1qw508d6qejxtdg4y23c3ghsh7k3j5v9e"])
def test_bad_recipient(bad: str) -> None:
    with pytest.raises(ConfigError):
        Recipient.parse(bad)


# --- secrecy and key files ---------------------------------------------------------------------------------


def test_repr_never_shows_secret() -> None:
    ident = generate_identity()
    secret = ident.secret_text()
    for shown in (repr(ident), str(ident), f"{ident}", repr([ident])):
        assert secret not in shown and secret.lower() not in shown
        assert ident.recipient.text() in shown


def secret_fragments(secret: str) -> list[str]:
    body = secret[len("AGE-SECRET-KEY-1") :]
    return [body[i : i + 12] for i in range(0, len(body) - 12, 6)]


@pytest.mark.parametrize("mangle", ["checksum", "extra-line", "truncate", "garbage-before"])
def test_error_messages_never_contain_the_key(mangle: str, tmp_path: Path) -> None:
    secret = generate_identity().secret_text()
    text = {
        "checksum": secret[:-1] + ("Q" if secret[-1] != "Q" else "P"),
        "extra-line": f"{secret.lower()}x\n",
        "truncate": secret[:40],
        "garbage-before": f"key = {secret}\n",
    }[mangle]
    path = tmp_path / "bad.txt"
    path.write_text(text)
    calls: list[Callable[[], Identity]] = [
        lambda: load_identity(text=text),
        lambda: load_identity(path),
        lambda: Identity.parse(text),
    ]
    for call in calls:
        with pytest.raises(ConfigError) as e:
            call()
        shown = f"{e.value} {e.value.hint} {e.value!r}".upper()
        assert not any(f in shown for f in secret_fragments(secret)), shown
        # no chained exception (e.g. from bech32) whose traceback could show the input
        assert e.value.__cause__ is None
        assert e.value.__context__ is None or e.value.__suppress_context__


def test_load_identity_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_identity(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("# nothing here\n\n")
    with pytest.raises(ConfigError, match="no age identity"):
        load_identity(tmp_path / "empty.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_identity(tmp_path / "bin.txt")
    with pytest.raises(ConfigError, match="exactly one"):
        load_identity()


def test_key_file_mode_format_and_no_overwrite(tmp_path: Path) -> None:
    ident = generate_identity()
    path = tmp_path / "jdr.key"
    old = os.umask(0)
    try:
        write_key_file(path, ident)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# created: ")
    assert lines[1] == f"# public key: {ident.recipient.text()}"
    assert lines[2] == ident.secret_text()
    assert load_identity(path).recipient == ident.recipient
    with pytest.raises(ConfigError, match="already exists"):
        write_key_file(path, generate_identity())
    assert load_identity(path).recipient == ident.recipient  # untouched
