-- Each tenant's PII detection posture: which categories are on and the action policy elsewhere takes for
-- each. This collector masks every detected entity whatever the action ("forced redaction").
CREATE TABLE detection_postures (
    tenant_id          text PRIMARY KEY,
    detection_enabled  boolean NOT NULL DEFAULT true,
    -- {"EMAIL": "redact", "PHONE": "warn", ...}; a category absent from the map is off.
    categories         jsonb NOT NULL,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (jsonb_typeof(categories) = 'object')
);
