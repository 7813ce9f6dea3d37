"""``auditctl``: the operator and auditor tool (licences, keys, topics, migrations, verification, proofs,
replay, dead letters, posture). A component of its own: no service imports it, and it imports no service."""
