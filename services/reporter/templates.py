# ruff: noqa: E501, RUF001 - HTML markup, with typographic characters on purpose.
"""The portal's Jinja2 templates and stylesheet, kept in Python so they ship inside the package whatever the
installer does with data files. Autoescaping is on for every template: redacted telemetry is still
untrusted text."""

from __future__ import annotations

STYLESHEET = """
:root { --ink: #1d2330; --muted: #5d6675; --line: #d9dde4; --accent: #3b6ea5; --bad: #b8514f; --good: #4f9d69; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, sans-serif; color: var(--ink); background: #f6f7f9; }
header { background: var(--ink); color: #fff; padding: 10px 24px; display: flex; gap: 24px; align-items: center; }
header a { color: #dfe7f3; text-decoration: none; } header a.active { color: #fff; font-weight: 600; }
header .who { margin-left: auto; color: #aeb7c6; font-size: 12px; }
main { padding: 20px 24px; max-width: 1280px; }
h1 { font-size: 20px; margin: 0 0 12px; } h2 { font-size: 16px; margin: 24px 0 8px; }
table { border-collapse: collapse; width: 100%; background: #fff; border: 1px solid var(--line); }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: #eef1f5; font-weight: 600; font-size: 12px; color: var(--muted); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
form.filters { display: flex; flex-wrap: wrap; gap: 8px 12px; align-items: end; margin-bottom: 14px;
  background: #fff; border: 1px solid var(--line); padding: 10px; }
form.filters label { display: flex; flex-direction: column; font-size: 12px; color: var(--muted); }
input, select { font: inherit; padding: 4px 6px; border: 1px solid var(--line); border-radius: 3px; min-width: 120px; }
button { font: inherit; padding: 5px 14px; background: var(--accent); color: #fff; border: 0; border-radius: 3px; }
.badge { display: inline-block; padding: 0 6px; border-radius: 8px; font-size: 12px; background: #e7eaef; }
.badge.accept, .badge.ok { background: #dcefe2; color: #24653a; }
.badge.reject, .badge.broken { background: #f6dcdc; color: #8a2e2c; }
.badge.pending, .badge.unverified, .badge.gaps { background: #fbecd5; color: #7a4b12; }
.content { white-space: pre-wrap; word-break: break-word; min-width: 240px; max-width: 520px;
  font-family: ui-monospace, monospace;
  font-size: 12px; }
.muted { color: var(--muted); } .pager { margin: 12px 0; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin-bottom: 8px; }
.card { background: #fff; border: 1px solid var(--line); padding: 10px 14px; min-width: 150px; }
.card .value { font-size: 20px; font-weight: 600; } .card .label { color: var(--muted); font-size: 12px; }
.chart { background: #fff; border: 1px solid var(--line); display: block; margin-bottom: 12px; }
.error { background: #fff; border: 1px solid var(--bad); padding: 14px; }
form.logout { margin: 0; } form.logout button { padding: 2px 10px; background: #4a5468; }
form.login { background: #fff; border: 1px solid var(--line); padding: 16px; max-width: 560px;
  display: flex; flex-direction: column; gap: 10px; }
.secret { font-family: ui-monospace, monospace; background: #fff8e1; border: 1px solid #e6c36a; padding: 8px;
  word-break: break-all; }
"""

BASE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{% block title %}Audit{% endblock %} · Claude audit</title>
<link rel="stylesheet" href="/static/portal.css">
</head>
<body>
<header>
  <strong>Claude audit</strong>
  {% for href, label in nav %}
  <a href="{{ href }}"{% if section == label %} class="active"{% endif %}>{{ label }}</a>
  {% endfor %}
  <span class="who" id="who">{{ me.role }} · {{ me.user_email or me.subject }} · org {{ org }} · tenant {{ tenant }}</span>
  {% if csrf %}<form class="logout" method="post" action="/portal/logout"><input type="hidden" name="csrf" value="{{ csrf }}"><button type="submit">Sign out</button></form>{% endif %}
</header>
<main>
{% block main %}{% endblock %}
</main>
</body>
</html>
"""

EVENTS = """{% extends "base.html" %}
{% block title %}Decisions{% endblock %}
{% block main %}
<h1>Decisions feed</h1>
<form class="filters" method="get" action="/portal/events" id="filters">
  <label>Plane <select name="plane">
    <option value="">any</option>
    {% for p in (["claude_code", "cowork", "access"] if me.sees_access_rows else ["claude_code", "cowork"]) %}<option{% if f.plane == p %} selected{% endif %}>{{ p }}</option>{% endfor %}
  </select></label>
  <label>Event type <select name="event_type">
    <option value="">any</option>
    {% for t in event_types %}<option{% if f.event_type == t %} selected{% endif %}>{{ t }}</option>{% endfor %}
  </select></label>
  <label>Decision <select name="decision">
    <option value="">any</option>
    {% for d in ["accept", "reject"] %}<option{% if f.decision == d %} selected{% endif %}>{{ d }}</option>{% endfor %}
  </select></label>
  <label>Tool <input name="tool" value="{{ f.tool or '' }}"></label>
  <label>User <input name="user" value="{{ f.user or '' }}"></label>
  <label>Session <input name="session" value="{{ f.session or '' }}"></label>
  <label>Since <input name="since" value="{{ since or '' }}" placeholder="2026-11-01"></label>
  <label>Until <input name="until" value="{{ until or '' }}" placeholder="2026-12-01"></label>
  <button type="submit">Apply</button>
</form>
<table id="events">
<thead><tr><th>Time (UTC)</th><th>Event</th><th>User</th><th>Session</th><th>Tool</th><th>Decision</th>
<th>Model</th><th class="num">Cost</th><th>Content (redacted)</th><th>Proof</th></tr></thead>
<tbody>
{% for e in items %}
<tr class="event" data-event-type="{{ e.event_type }}">
  <td>{{ e.event_time[:19] | replace("T", " ") }}</td>
  <td>{{ e.event_type }}<div class="muted">{{ e.plane }}</div></td>
  <td title="{{ e.user.key or '' }}">{{ (e.user.key or "") | truncate(24, True, "…", 0) }}</td>
  <td>{% if e.session_id %}<a class="session-link" href="{{ e.session_href }}">{{ e.session_id[:8] }}…</a>
      {% if e.session_completeness and e.session_completeness.missing %}<div><span class="badge gaps" title="events the client numbered that never arrived">{{ e.session_completeness.missing }} missing</span></div>{% endif %}{% endif %}</td>
  <td>{{ e.tool_name or "" }}</td>
  <td>{% if e.decision %}<span class="badge {{ e.decision }}">{{ e.decision }}</span>
      <div class="muted">{{ e.decision_source or "" }}</div>{% endif %}</td>
  <td>{{ e.model or "" }}</td>
  <td class="num">{{ e.cost or "" }}</td>
  <td><div class="content">{{ e.excerpt }}</div></td>
  <td>{% if e.proof %}<a href="{{ e.proof | replace('/api/v1/audit/', '/portal/') }}">#{{ e.chain_seq }}</a>{% else %}#{{ e.chain_seq }}{% endif %}</td>
</tr>
{% else %}
<tr><td colspan="10" class="muted">No events match.</td></tr>
{% endfor %}
</tbody>
</table>
<div class="pager">{% if next_href %}<a id="older" href="{{ next_href }}">Older →</a>{% endif %}</div>
{% endblock %}
"""

SESSIONS = """{% extends "base.html" %}
{% block title %}Sessions{% endblock %}
{% block main %}
<h1>Sessions</h1>
<form class="filters" method="get" action="/portal/sessions">
  <label>User <input name="user" value="{{ user or '' }}"></label>
  <label>Since <input name="since" value="{{ since or '' }}"></label>
  <label>Until <input name="until" value="{{ until or '' }}"></label>
  <button type="submit">Apply</button>
</form>
<table id="sessions">
<thead><tr><th>Session</th><th>User</th><th>Plane</th><th>First event</th><th>Last event</th>
<th class="num">Prompts</th><th class="num">API calls</th><th class="num">Errors</th>
<th class="num">Accepted / rejected</th><th class="num">Cost</th><th class="num">Received / expected</th></tr></thead>
<tbody>
{% for s in items %}
<tr>
  <td><a class="session-link" href="{{ s.href }}">{{ s.session_id }}</a></td>
  <td title="{{ s.user.key or '' }}">{{ (s.user.key or "") | truncate(24, True, "…", 0) }}</td><td>{{ s.plane }}</td>
  <td>{{ s.first_event_time[:19] | replace("T", " ") }}</td><td>{{ s.last_event_time[:19] | replace("T", " ") }}</td>
  <td class="num">{{ s.prompts }}</td><td class="num">{{ s.api_calls }}</td><td class="num">{{ s.errors }}</td>
  <td class="num">{{ s.tool_decisions.accepted }} / {{ s.tool_decisions.rejected }}</td>
  <td class="num">{{ s.cost }}</td>
  <td class="num completeness">{% if s.completeness %}{{ s.completeness.received }} / {{ s.completeness.expected }}
    {% if s.completeness.missing %}<span class="badge gaps">{{ s.completeness.missing }} missing</span>{% endif %}
    {% if s.completeness.duplicate_rows %}<span class="badge reject">{{ s.completeness.duplicate_rows }} duplicate</span>{% endif %}
    {% if s.completeness.sequence_conflicts %}<span class="badge reject">{{ s.completeness.sequence_conflicts }} conflict{% if s.completeness.sequence_conflicts != 1 %}s{% endif %}</span>{% endif %}
    {% else %}<span class="muted">not numbered</span>{% endif %}</td>
</tr>
{% else %}
<tr><td colspan="11" class="muted">No sessions in this window.</td></tr>
{% endfor %}
</tbody>
</table>
<div class="pager">{% if next_href %}<a href="{{ next_href }}">Older →</a>{% endif %}</div>
{% endblock %}
"""

SESSION = """{% extends "base.html" %}
{% block title %}Session {{ s.session_id }}{% endblock %}
{% block main %}
<h1>Session <span id="session-id">{{ s.session_id }}</span></h1>
<div class="cards">
  <div class="card"><div class="label">User</div><div class="value" id="session-user">{{ s.user.key or "unknown" }}</div></div>
  <div class="card"><div class="label">Plane</div><div class="value">{{ s.plane }}</div></div>
  <div class="card"><div class="label">From</div><div>{{ s.first_event_time[:19] | replace("T", " ") }}</div>
    <div class="label">to</div><div>{{ s.last_event_time[:19] | replace("T", " ") }}</div></div>
  <div class="card"><div class="label">API calls</div><div class="value">{{ s.api.calls }}</div></div>
  <div class="card"><div class="label">Cost (USD)</div><div class="value">{{ s.api.cost }}</div></div>
  <div class="card"><div class="label">Approvals</div>
    <div class="value"><span class="badge accept">{{ s.approvals.accepted }} accepted</span>
    <span class="badge reject">{{ s.approvals.rejected }} rejected</span></div></div>
  <div class="card"><div class="label">Content captured</div><div class="value">{{ "yes" if s.content_captured else "no" }}</div></div>
</div>

<h2>Completeness</h2>
{% set c = s.completeness %}
{% if c.numbered %}
<div class="cards" id="completeness">
  <div class="card"><div class="label">Expected (sequence numbers)</div><div class="value">{{ c.expected_range[0] }}–{{ c.expected_range[1] }}</div></div>
  <div class="card"><div class="label">Received</div><div class="value" id="completeness-received">{{ c.received }} / {{ c.expected }}</div></div>
  <div class="card"><div class="label">Missing</div><div class="value" id="completeness-missing">{{ c.missing }}</div>
    <div class="muted">{% for r in c.missing_ranges %}{{ r[0] }}{% if r[1] != r[0] %}–{{ r[1] }}{% endif %}{% if not loop.last %}, {% endif %}{% endfor %}{% if c.truncated.missing_ranges %} …{% endif %}</div></div>
  <div class="card"><div class="label">Sequence conflicts (different events)</div><div class="value" id="completeness-conflicts">{{ c.sequence_conflicts | length }}</div>
    <div class="muted">{% for n in c.sequence_conflicts %}#{{ n }}{% if not loop.last %}, {% endif %}{% endfor %}{% if c.truncated.sequence_conflicts %} …{% endif %}</div></div>
  <div class="card"><div class="label">Duplicate rows (unflagged)</div><div class="value" id="completeness-duplicates">{{ c.duplicates | length }}</div>
    <div class="muted">{% for d in c.duplicates %}#{{ d.sequence }} × {{ d.rows }}{% if not loop.last %}, {% endif %}{% endfor %}</div></div>
</div>
<p class="muted">Claude Code numbers a session's events from 0; a missing number is an event it sent that never
reached the signed record. Computed from the signed rows; a late arrival closes its gap.</p>
{% else %}
<p class="muted" id="completeness">This session's events carry no sequence numbers.</p>
{% endif %}

<h2>Prompts</h2>
<table id="prompts"><thead><tr><th>#</th><th>Time</th><th>Prompt (redacted)</th><th>Redactions</th></tr></thead><tbody>
{% for p in s.prompts %}
<tr><td>{{ loop.index }}</td><td>{{ p.time[:19] | replace("T", " ") }}</td>
<td><div class="content">{% if p.erasure %}<span class="muted erased">{{ p.erasure.text }}</span>{% elif p.text is not none %}{{ p.text }}{% elif not me.sees_content %}<span class="muted">{{ p.length or 0 }} characters (text not shown to your role)</span>{% else %}<span class="muted">not captured</span>{% endif %}</div></td>
<td>{% for kind, n in p.redactions.items() %}<span class="badge">{{ kind }} × {{ n }}</span> {% endfor %}</td></tr>
{% else %}<tr><td colspan="4" class="muted">No prompts.</td></tr>{% endfor %}
</tbody></table>

<h2>Tools</h2>
<table id="tools"><thead><tr><th>Tool</th><th class="num">Calls</th><th class="num">Succeeded</th><th class="num">Failed</th>
<th class="num">Accepted</th><th class="num">Rejected</th></tr></thead><tbody>
{% for t in s.tools %}
<tr><td>{{ t.tool_name }}</td><td class="num">{{ t.calls }}</td><td class="num">{{ t.succeeded }}</td>
<td class="num">{{ t.failed }}</td><td class="num">{{ t.accepted }}</td><td class="num">{{ t.rejected }}</td></tr>
{% else %}<tr><td colspan="6" class="muted">No tools used.</td></tr>{% endfor %}
</tbody></table>

<h2>Approvals</h2>
<table id="decisions"><thead><tr><th>Time</th><th>Tool</th><th>Decision</th><th>Source</th><th>Proof</th></tr></thead><tbody>
{% for d in s.approvals.decisions %}
<tr><td>{{ d.time[:19] | replace("T", " ") }}</td><td>{{ d.tool_name or "" }}</td>
<td><span class="badge {{ d.decision }}">{{ d.decision }}</span></td><td>{{ d.source or "" }}</td>
<td>{% if d.proof %}<a href="{{ d.proof | replace('/api/v1/audit/', '/portal/') }}">proof</a>{% endif %}</td></tr>
{% else %}<tr><td colspan="5" class="muted">No tool decisions.</td></tr>{% endfor %}
</tbody></table>

<h2>API calls by model</h2>
{{ model_chart }}
<table id="models"><thead><tr><th>Model</th><th class="num">Calls</th><th class="num">Input</th><th class="num">Output</th>
<th class="num">Cache read</th><th class="num">Cache creation</th><th class="num">Cost</th></tr></thead><tbody>
{% for m in s.api.models %}
<tr><td>{{ m.model or "unknown" }}</td><td class="num">{{ m.calls }}</td><td class="num">{{ m.tokens.input }}</td>
<td class="num">{{ m.tokens.output }}</td><td class="num">{{ m.tokens.cache_read }}</td>
<td class="num">{{ m.tokens.cache_creation }}</td><td class="num">{{ m.cost }}</td></tr>
{% else %}<tr><td colspan="7" class="muted">No API calls.</td></tr>{% endfor %}
</tbody></table>

<h2>Errors</h2>
<table id="errors"><thead><tr><th>Time</th><th>Kind</th><th>Model / tool</th><th>Status</th><th>Message (redacted)</th></tr></thead><tbody>
{% for e in s.errors %}
<tr><td>{{ e.time[:19] | replace("T", " ") }}</td><td>{{ e.event_type }}</td><td>{{ e.model or e.tool_name or "" }}</td>
<td>{{ e.status_code or "" }}</td><td><div class="content">{% if e.erasure %}<span class="muted erased">{{ e.erasure.text }}</span>{% else %}{{ e.message or "" }}{% endif %}</div></td></tr>
{% else %}<tr><td colspan="5" class="muted">No errors.</td></tr>{% endfor %}
</tbody></table>

{% if s.metrics %}
<h2>From metrics</h2>
<div class="cards">
  <div class="card"><div class="label">Lines added / removed</div>
    <div class="value">{{ s.metrics.lines_of_code.added }} / {{ s.metrics.lines_of_code.removed }}</div></div>
  <div class="card"><div class="label">Commits</div><div class="value">{{ s.metrics.commits }}</div></div>
  <div class="card"><div class="label">Pull requests</div><div class="value">{{ s.metrics.pull_requests }}</div></div>
  <div class="card"><div class="label">Active time (s)</div><div class="value">{{ s.metrics.active_time_seconds.total }}</div></div>
</div>
{% endif %}
<p><a href="/portal/events?session={{ s.session_id | urlencode }}">All events of this session →</a></p>
{% endblock %}
"""

USAGE = """{% extends "base.html" %}
{% block title %}Usage{% endblock %}
{% block main %}
<h1>Usage</h1>
<form class="filters" method="get" action="/portal/usage">
  <label>Since <input name="since" value="{{ since }}"></label>
  <label>Until <input name="until" value="{{ until }}"></label>
  <button type="submit">Apply</button>
  <span class="muted">Whole UTC days; {{ window_since[:10] }} to {{ window_until[:10] }} (exclusive).</span>
</form>
<div class="cards">
  <div class="card"><div class="label">Cost (USD)</div><div class="value" id="total-cost">{{ totals.cost }}</div></div>
  <div class="card"><div class="label">Sessions</div><div class="value">{{ totals.sessions }}</div></div>
  <div class="card"><div class="label">Prompts</div><div class="value">{{ totals.prompts }}</div></div>
  <div class="card"><div class="label">API calls</div><div class="value">{{ totals.api_calls }}</div></div>
  <div class="card"><div class="label">Tokens</div><div class="value">{{ totals.tokens.total }}</div></div>
  <div class="card"><div class="label">Tool acceptance</div>
    <div class="value">{% if totals.tool_acceptance_rate is not none %}{{ (totals.tool_acceptance_rate * 100) | round(1) }}%{% else %}–{% endif %}</div></div>
  {% if totals.metrics %}
  <div class="card"><div class="label">Lines added / removed</div>
    <div class="value">{{ totals.metrics.lines_of_code.added }} / {{ totals.metrics.lines_of_code.removed }}</div></div>
  <div class="card"><div class="label">Commits / PRs</div>
    <div class="value">{{ totals.metrics.commits }} / {{ totals.metrics.pull_requests }}</div></div>
  <div class="card"><div class="label">Active time (h)</div>
    <div class="value">{{ (totals.metrics.active_time_seconds.total / 3600) | round(2) }}</div></div>
  {% endif %}
</div>
<h2>Cost per user</h2>
{{ cost_per_user }}
<h2>Tokens by model</h2>
{{ tokens_by_model }}
<h2>Cost over time</h2>
{{ cost_over_time }}
<h2>Per user</h2>
<p class="muted">{{ users | length }} of {{ total_users }} users, by cost; all of them through
<code>/api/v1/usage?group_by=user</code>.</p>
<table id="usage-users"><thead><tr><th>User</th><th class="num">Sessions</th><th class="num">Prompts</th>
<th class="num">API calls</th><th class="num">Errors</th><th class="num">Tokens</th><th class="num">Acceptance</th>
<th class="num">Lines +/−</th><th class="num">Commits</th><th class="num">PRs</th><th class="num">Active (s)</th>
<th class="num">Cost</th></tr></thead><tbody>
{% for g in users %}
<tr><td>{{ g.key or "unknown" }}</td><td class="num">{{ g.sessions }}</td><td class="num">{{ g.prompts }}</td>
<td class="num">{{ g.api_calls }}</td><td class="num">{{ g.errors }}</td><td class="num">{{ g.tokens.total }}</td>
<td class="num">{% if g.tool_acceptance_rate is not none %}{{ (g.tool_acceptance_rate * 100) | round(1) }}%{% else %}–{% endif %}</td>
{% if g.metrics %}<td class="num">{{ g.metrics.lines_of_code.added }}/{{ g.metrics.lines_of_code.removed }}</td>
<td class="num">{{ g.metrics.commits }}</td><td class="num">{{ g.metrics.pull_requests }}</td>
<td class="num">{{ g.metrics.active_time_seconds.total }}</td>{% else %}<td></td><td></td><td></td><td></td>{% endif %}
<td class="num">{{ g.cost }}</td></tr>
{% else %}<tr><td colspan="12" class="muted">No usage in this window.</td></tr>{% endfor %}
</tbody></table>
{% endblock %}
"""

COMPLETENESS = """{% extends "base.html" %}
{% block title %}Completeness{% endblock %}
{% block main %}
<h1>Completeness</h1>
<form class="filters" method="get" action="/portal/completeness">
  <label>Since <input name="since" value="{{ since }}"></label>
  <label>Until <input name="until" value="{{ until }}"></label>
  <button type="submit">Apply</button>
  <span class="muted">Sessions with an event in {{ r.since[:10] }} to {{ r.until[:10] }} (exclusive), whole UTC days.</span>
</form>
<div class="cards">
  <div class="card"><div class="label">Completeness</div><div class="value" id="tenant-completeness">{% if r.tenant.completeness is not none %}{{ (r.tenant.completeness * 100) | round(2) }}%{% else %}–{% endif %}</div></div>
  <div class="card"><div class="label">Received / expected events</div><div class="value">{{ r.tenant.received }} / {{ r.tenant.expected }}</div></div>
  <div class="card"><div class="label">Missing</div><div class="value" id="tenant-missing">{{ r.tenant.missing }}</div></div>
  <div class="card"><div class="label">Sessions with gaps</div><div class="value">{{ r.tenant.sessions_with_gaps }} / {{ r.tenant.sessions }}</div></div>
  <div class="card"><div class="label">Sequence conflicts</div><div class="value" id="tenant-conflicts">{{ r.tenant.sequence_conflicts }}</div>
    <div class="muted">{{ r.tenant.sequence_conflict_rows }} flagged rows</div></div>
  <div class="card"><div class="label">Duplicate rows</div><div class="value" id="tenant-duplicates">{{ r.tenant.duplicate_rows }}</div></div>
</div>
<h2>Per user</h2>
<p class="muted">{{ r.users | length }} of {{ r.total_users }} users, most missing events first; all of them through
<code>/api/v1/completeness</code>.</p>
<table id="completeness-users"><thead><tr><th>User</th><th class="num">Sessions</th><th class="num">With gaps</th>
<th class="num">Expected</th><th class="num">Received</th><th class="num">Missing</th><th class="num">Conflicts</th>
<th class="num">Duplicates</th>
<th class="num">Completeness</th></tr></thead><tbody>
{% for u in r.users %}
<tr><td>{{ u.user or "unknown" }}</td><td class="num">{{ u.sessions }}</td><td class="num">{{ u.sessions_with_gaps }}</td>
<td class="num">{{ u.expected }}</td><td class="num">{{ u.received }}</td><td class="num">{{ u.missing }}</td>
<td class="num">{{ u.sequence_conflicts }}</td><td class="num">{{ u.duplicate_rows }}</td>
<td class="num">{% if u.completeness is not none %}{{ (u.completeness * 100) | round(2) }}%{% else %}–{% endif %}</td></tr>
{% else %}<tr><td colspan="9" class="muted">No numbered events in this window.</td></tr>{% endfor %}
</tbody></table>
<p class="muted">Definition: docs/auditing.md, "Completeness". Sessions whose events carry no sequence numbers are not counted.</p>
{% endblock %}
"""

CHAIN = """{% extends "base.html" %}
{% block title %}Chain{% endblock %}
{% block main %}
<h1>Chain status</h1>
<table id="chain"><thead><tr><th>Tenant</th><th class="num">Head</th><th class="num">Verified through</th><th>Status</th>
<th>Checked</th><th>Last full rescan</th><th>Break</th></tr></thead><tbody>
{% for t in tenants %}
<tr><td>{{ t.tenant_id }}</td><td class="num">{{ t.head_seq }}</td><td class="num">{{ t.last_verified_seq }}</td>
<td><span class="badge {{ t.status }}" id="chain-status">{{ t.status }}</span></td>
<td>{{ (t.checked_at or "")[:19] | replace("T", " ") }}</td>
<td>{{ (t.rescan.last_full_pass_at or "")[:19] | replace("T", " ") }}</td>
<td>{% if t.break %}#{{ t.break.seq }} {{ t.break.kind }}: {{ t.break.detail }}{% endif %}</td></tr>
{% endfor %}
</tbody></table>
<h2>Signing keys</h2>
<table id="keys"><thead><tr><th>Key id</th><th>Algorithm</th><th>Public key (base64)</th><th>Valid from</th><th>Valid until</th></tr></thead><tbody>
{% for k in keys %}
<tr><td><code>{{ k.key_id }}</code></td><td>{{ k.algorithm }}</td><td><code>{{ k.public_key }}</code></td>
<td>{{ k.valid_from[:19] | replace("T", " ") }}</td><td>{{ (k.valid_until or "open")[:19] | replace("T", " ") }}</td></tr>
{% else %}<tr><td colspan="5" class="muted">No keys published yet.</td></tr>{% endfor %}
</tbody></table>
<p class="muted">Every row's proof (canonical bytes, hashes, signature and key) is at
<code>/api/v1/audit/records/&lt;id&gt;/proof</code>; check one offline with <code>python -m services.reporter.proofcheck</code>.</p>
{% endblock %}
"""

PROOF = """{% extends "base.html" %}
{% block title %}Proof of #{{ proof.chain_seq }}{% endblock %}
{% block main %}
<h1>Proof of record {{ proof.record_id }} (chain sequence {{ proof.chain_seq }})</h1>
<p>Verdict: {% if pending %}<span class="badge pending" id="proof-verdict">pending</span> no signed tree head covers this row yet
{% else %}<span class="badge {{ 'ok' if verified else 'broken' }}" id="proof-verdict">{{ 'verified' if verified else 'NOT verified' }}</span>{% endif %}
<a id="proof-download" href="{{ download }}" download="proof-{{ proof.record_id }}.json">Download the proof (JSON)</a></p>
<table id="proof-checks"><tbody>
{% for c in checks %}<tr><td>{{ 'ok' if c.ok else 'FAIL' }}</td><td>{{ c.name }}</td><td class="muted">{{ c.detail }}</td></tr>{% endfor %}
</tbody></table>
<h2>Inclusion proof (RFC 9162)</h2>
{% if proof.inclusion %}
<p>Leaf {{ proof.inclusion.leaf_index }} of a tree of {{ proof.inclusion.tree_size }} leaves; leaf hash = SHA-256(0x00 || row hash <code>{{ proof.row_hash }}</code>).</p>
<ol id="proof-path">{% for h in proof.inclusion.path %}<li><code>{{ h }}</code></li>{% endfor %}</ol>
<p>Root <code id="proof-root">{{ proof.inclusion.root_hash }}</code></p>
{% else %}<p class="muted">No signed tree head covers this row yet; it will after the next checkpoint.</p>{% endif %}
{% if proof.tree_head %}
<h2>Signed tree head</h2>
<table id="tree-head"><tbody>
<tr><td>Tree size</td><td>{{ proof.tree_head.tree_size }}</td></tr>
<tr><td>Root hash</td><td><code>{{ proof.tree_head.root_hash }}</code></td></tr>
<tr><td>Time</td><td>{{ proof.tree_head.timestamp }}</td></tr>
<tr><td>Key id</td><td><code>{{ proof.tree_head.key_id }}</code></td></tr>
<tr><td>Signature</td><td><code>{{ proof.tree_head.signature }}</code></td></tr>
</tbody></table>{% endif %}
<p class="muted">Checked here against the keys this server publishes. For a check that trusts nothing of this
server, download the proof and run <code>auditctl proof check FILE --keys YOUR-PINNED-KEYS</code>.</p>
{% endblock %}
"""

ERROR = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ status }} · Claude audit</title>
<link rel="stylesheet" href="/static/portal.css"></head>
<body><main><div class="error"><h1>{{ status }}</h1><p>{{ message }}</p>
<p><a href="/portal/events">Back to the decisions feed</a></p></div></main></body></html>
"""

LOGIN = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in · Claude audit</title>
<link rel="stylesheet" href="/static/portal.css"></head>
<body><header><strong>Claude audit</strong></header><main>
<h1>Sign in</h1>
{% if message %}<div class="error" id="login-error">{{ message }}</div>{% endif %}
<form class="login" method="post" action="/portal/login">
  <input type="hidden" name="csrf" value="{{ csrf }}">
  <input type="hidden" name="next" value="{{ next }}">
  <label>Reporting token <input type="password" name="token" id="token" autocomplete="off" required></label>
  <button type="submit" id="sign-in">Sign in with a token</button>
  <p class="muted">Tokens are issued by an admin (<code>auditctl token issue</code> or the Tokens page). An ingest
  licence cannot sign in.</p>
</form>
{% if oidc %}<p><a href="/portal/oidc/start?next={{ next | urlencode }}" id="oidc-sign-in">Sign in with your organisation's identity provider</a></p>{% endif %}
</main></body></html>
"""

SIGNED_IN = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Signed in · Claude audit</title>
<meta http-equiv="refresh" content="0;url={{ next }}">
<link rel="stylesheet" href="/static/portal.css"></head>
<body><main><p>Signed in. <a href="{{ next }}">Continue</a>.</p></main></body></html>
"""

TOKENS = """{% extends "base.html" %}
{% block title %}Tokens{% endblock %}
{% block main %}
<h1>Reporting tokens</h1>
{% if issued %}<p>New token <code>{{ issued.token_id }}</code> ({{ issued.role }}). It is shown only now:</p>
<div class="secret" id="new-token">{{ issued_token }}</div>{% endif %}
{% if message %}<div class="error">{{ message }}</div>{% endif %}
<h2>Issue a token</h2>
<form class="filters" method="post" action="/portal/tokens">
  <input type="hidden" name="csrf" value="{{ csrf }}">
  <label>Role <select name="role">{% for r in roles %}<option>{{ r }}</option>{% endfor %}</select></label>
  <label>E-mail (required for developer) <input name="user_email"></label>
  <label>Expires in days (empty: never) <input name="expires_days"></label>
  <label>Description <input name="description"></label>
  <button type="submit">Issue</button>
</form>
<table id="tokens"><thead><tr><th>id</th><th>role</th><th>e-mail</th><th>description</th><th>created</th><th>expires</th><th>status</th><th></th></tr></thead><tbody>
{% for t in tokens %}<tr><td><code>{{ t.token_id }}</code></td><td>{{ t.role }}</td><td>{{ t.user_email or "" }}</td>
<td>{{ t.description }}</td><td>{{ t.created_at }}</td><td>{{ t.expires_at or "never" }}</td><td>{{ t.status }}</td>
<td>{% if t.status == "active" %}<form method="post" action="/portal/tokens/{{ t.token_id }}/revoke"><input type="hidden" name="csrf" value="{{ csrf }}"><button type="submit">Revoke</button></form>{% endif %}</td></tr>
{% endfor %}</tbody></table>
{% endblock %}
"""

TEMPLATES = {
    "login.html": LOGIN,
    "signed_in.html": SIGNED_IN,
    "tokens.html": TOKENS,
    "base.html": BASE,
    "events.html": EVENTS,
    "sessions.html": SESSIONS,
    "session.html": SESSION,
    "usage.html": USAGE,
    "completeness.html": COMPLETENESS,
    "chain.html": CHAIN,
    "error.html": ERROR,
    "proof.html": PROOF,
}
