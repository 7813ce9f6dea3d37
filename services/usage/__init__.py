"""Usage from metrics: raw OTLP metric batches -> per-user, per-session usage rows in PostgreSQL."""
