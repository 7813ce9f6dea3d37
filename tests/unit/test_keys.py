"""Private key files: refused when group or others may access them, with a message that says what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.keys import Ed25519Signer, KeyMaterialError, load_signer, read_private_file, write_new_key


def test_a_key_written_by_the_tools_loads(tmp_path: Path) -> None:
    written = write_new_key(tmp_path / "signing.key")
    assert load_signer(file=str(tmp_path / "signing.key")).public_key == written.public_key


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o666, 0o601])
def test_a_key_file_others_can_reach_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "signing.key"
    path.write_text(Ed25519Signer.generate().seed_b64() + "\n")
    path.chmod(mode)
    with pytest.raises(KeyMaterialError, match=rf"mode {mode:04o}.*group or others.*chmod 600"):
        load_signer(file=str(path))


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_owner_only_modes_are_accepted(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "signing.key"
    path.write_text(Ed25519Signer.generate().seed_b64() + "\n")
    path.chmod(mode)
    load_signer(file=str(path))


def test_missing_and_non_regular_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(KeyMaterialError, match="does not exist"):
        load_signer(file=str(tmp_path / "absent.key"))
    with pytest.raises(KeyMaterialError, match="not a regular file"):
        read_private_file(tmp_path)


def test_a_root_owned_key_may_be_group_readable_as_kubernetes_mounts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Secret volume with fsGroup: root-owned, mode 0440. Accepted for a non-root service (PostgreSQL's rule)."""
    import os  # noqa: PLC0415

    path = tmp_path / "signing.key"
    path.write_text(Ed25519Signer.generate().seed_b64() + "\n")
    path.chmod(0o440)
    if path.stat().st_uid != 0:
        os.chown(path, 0, 0)  # the suite runs as root, as the Makefile's system-package steps need
    monkeypatch.setattr(os, "geteuid", lambda: 10001)
    load_signer(file=str(path))
    path.chmod(0o444)
    with pytest.raises(KeyMaterialError, match="group or others"):
        load_signer(file=str(path))
