"""``jdr key …``: encryption keys and the repository's recipients (docs/FORMAT.md, "Keys").

Every command prints one JSON document with ``--json``; they are meant to be scripted.
"""

from __future__ import annotations

from pathlib import Path

import click

from dr import wiring
from dr.cli.main import Context, cli, pass_ctx


@cli.group()
def key() -> None:
    """Encryption keys (age format) and the repository's recipients."""


@key.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@pass_ctx
def generate(ctx: Context, path: Path) -> None:
    """Create a new installation key file (mode 0600). Keep a copy somewhere safe."""
    from dr.crypto.age import generate_identity
    from dr.crypto.keys import write_key_file

    identity = generate_identity()
    write_key_file(path, identity)
    rec = identity.recipient
    ctx.emit({"path": str(path), "recipient": rec.text(), "fingerprint": rec.fingerprint},
             f"wrote {path}\npublic key: {rec.text()}\nfingerprint: {rec.fingerprint}\n"
             "without this key the encrypted backups cannot be restored: store a copy off-site")


@key.command(name="mac-generate")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--keep", "keep", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="An existing MAC key file whose keys are copied after the new one, so that runs they "
                   "signed still verify (key rotation).")
@pass_ctx
def mac_generate(ctx: Context, path: Path, keep: Path | None) -> None:
    """Create a manifest MAC key file (mode 0600) for encryption.mac_key_file / mac_key_env.

    Its first key signs every new manifest; restore, drill and verify then refuse runs that no key of
    the file authenticates (docs/SECURITY.md). Backup jobs need it too: ship it with their credentials."""
    from dr.crypto.keys import write_private_file
    from dr.crypto.mac import MacKey, parse_keys
    from dr.errors import ConfigError
    from dr.util.timefmt import iso, utcnow

    new = MacKey.generate()
    kept = []
    if keep is not None:
        try:
            kept = parse_keys(keep.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise ConfigError(f"--keep {keep}: {e}") from None
    lines = [f"# jdr manifest MAC keys; created {iso(utcnow())}; the first signs, every one verifies",
             f"# key id {new.id}", new.text()]
    for k in kept:
        lines += [f"# key id {k.id} (kept from {keep})", k.text()]
    write_private_file(path, "\n".join(lines) + "\n")
    ids = [new.id] + [k.id for k in kept if k.id != new.id]
    ctx.emit({"path": str(path), "key": new.id, "keys": ids},
             f"wrote {path}\nsigning key id: {new.id}" + (f"\nalso verifies: {', '.join(ids[1:])}" if kept else "")
             + "\nconfigure it as encryption.mac_key_file (or its text in the variable named by "
               "encryption.mac_key_env) for every jdr that backs up, restores, drills or verifies")


@key.command(name="list")
@pass_ctx
def list_(ctx: Context) -> None:
    """The repository's recipients (current and retired), the configured keys, and which runs each key
    restores. Needs no key."""
    from dr.operations.keys import list_keys

    report = list_keys(wiring.open_repository(ctx.settings))
    ctx.emit(report.to_dict(), lambda: "\n".join(report.lines()))


@key.command(name="add-recipient")
@click.argument("recipient")
@click.option("--name", default="", help="What this key is, e.g. 'recovery (safe 2)'. Default: recovery.")
@pass_ctx
def add_recipient(ctx: Context, recipient: str, name: str) -> None:
    """Encrypt every new artifact to RECIPIENT (age1…) too, e.g. a recovery key kept offline.

    The next backup re-uploads what it would otherwise reuse without this recipient, so the new key alone
    restores every run made from then on."""
    from dr.operations.keys import add_recipient as add

    change = add(wiring.open_repository(ctx.settings), recipient, name)
    ctx.emit(change.to_dict(), lambda: "\n".join(change.lines()))


@key.command(name="remove-recipient")
@click.argument("recipient")
@pass_ctx
def remove_recipient(ctx: Context, recipient: str) -> None:
    """Stop encrypting new artifacts to RECIPIENT (a fingerprint or age1…); it stays listed as retired,
    and artifacts already encrypted to it still open with its key."""
    from dr.operations.keys import remove_recipient as remove

    change = remove(wiring.open_repository(ctx.settings), recipient)
    ctx.emit(change.to_dict(), lambda: "\n".join(change.lines()))


@key.command()
@click.option("--new-key", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="The new installation key file (e.g. from `jdr key generate`).")
@click.option("--new-recipient", default=None, help="Or only its public key (age1…).")
@click.option("--old", default=None, help="Fingerprint (or age1…) of the recipient to replace. "
                                          "Default: the configured installation key.")
@click.option("--name", default="", help="Name of the new key. Default: the old key's name.")
@pass_ctx
def rotate(ctx: Context, new_key: Path | None, new_recipient: str | None, old: str | None, name: str) -> None:
    """Replace the installation key: new runs are encrypted to the new key (and the other recipients).

    Older runs keep needing the old key: keep it in encryption.identities. The next backup re-uploads what
    it would otherwise reuse while encrypted to the old key, so every run opens with the keys it lists."""
    from dr.operations.keys import new_recipient as parse_new
    from dr.operations.keys import rotate as do_rotate

    new = parse_new(new_key, new_recipient)
    change = do_rotate(wiring.open_repository(ctx.settings), new, old, name)
    ctx.emit(change.to_dict(), lambda: "\n".join(change.lines()))
