"""Quality and speed measurement of the PII engine (development only: needs Faker and Presidio)."""
