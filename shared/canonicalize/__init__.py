"""Raw OTLP log batches -> canonical events: the mapping of each Claude Code event (``mapping``) and the batch
transform that applies the PII engine it is given (``transform``). The redactor runs it on the raw topic;
``auditctl replay`` runs it without detection to learn which event ids a raw message yields. Both must agree,
so it lives here, once."""
