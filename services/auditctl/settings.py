from __future__ import annotations

from pydantic import Field

from shared.settings import CommonSettings, raw_auth_key_file_field


class CliSettings(CommonSettings):
    license_issuer_key_file: str = Field(
        default="var/keys/license-issuer.key", description="Private key that signs licences (auditctl only)."
    )
    license_public_keys_file: str = Field(
        default="var/keys/license-issuer.pub", description="Public licence keys the receiver accepts."
    )
    signing_key_file: str | None = Field(
        default="var/keys/signing.key", description="Private key the signer uses for chain rows."
    )
    raw_auth_key_file: str = raw_auth_key_file_field()
    canonical_auth_key_file: str = Field(
        default="var/keys/canonical-redactor.key", description="The redactors' canonical-event key (init-keys)."
    )
    reporter_access_auth_key_file: str = Field(
        default="var/keys/canonical-reporter.key", description="The reporter's access-event key (init-keys)."
    )
    auditctl_events_auth_key_file: str = Field(
        default="var/keys/canonical-auditctl.key",
        description="auditctl's own key for the events it puts on the canonical topic (content erasures); the "
        "signers' CANONICAL_AUTH_KEYRING_FILE must hold it (init-keys adds it).",
    )
    canonical_auth_keyring_file: str = Field(
        default="var/keys/canonical.keyring", description="The signers' accepted canonical-event keys (init-keys)."
    )
    topic_dead_letter_requeued: str = Field(
        default="audit.deadletter.requeued",
        description="Compacted topic of requeue markers (one per dead letter), so a dead letter is requeued once.",
    )
    partitions_raw: int = Field(default=6, ge=1, description="Partitions of the raw topics.")
    partitions_canonical: int = Field(default=6, ge=1, description="Partitions of the canonical topic.")
    partitions_dead_letter: int = Field(default=1, ge=1, description="Partitions of the dead-letter topic.")
    topic_replication_factor: int = Field(default=1, ge=1, description="Replication factor for new topics.")
    db_role_passwords_dir: str | None = Field(
        default=None,
        description="Folder with one file per component role (audit_receiver, audit_signer, ...) holding its "
        "password; auditctl migrate sets them.",
    )
