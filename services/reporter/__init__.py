"""The reporting service: a JSON API and a server-rendered portal over audit_logs and metric usage."""
