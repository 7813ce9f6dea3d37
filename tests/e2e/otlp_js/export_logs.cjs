// Sends log records through the OpenTelemetry JS logs SDK and its OTLP/HTTP exporter, which speaks
// OTLP/JSON. Driven by tests/e2e/test_receiver_exporters.py; exits non-zero if the SDK reports an error.
'use strict';
const { diag, DiagLogLevel } = require('@opentelemetry/api');
const { LoggerProvider, BatchLogRecordProcessor } = require('@opentelemetry/sdk-logs');
const { OTLPLogExporter } = require('@opentelemetry/exporter-logs-otlp-http');
const { resourceFromAttributes } = require('@opentelemetry/resources');

const problems = [];
const report = (...args) => { problems.push(args.join(' ')); console.error(...args); };
diag.setLogger({ error: report, warn: report, info() {}, debug() {}, verbose() {} }, DiagLogLevel.WARN);

const exporter = new OTLPLogExporter({
  url: process.env.OTLP_LOGS_URL,
  headers: { Authorization: process.env.OTLP_AUTHORIZATION },
  compression: process.env.OTLP_COMPRESSION || 'none',
});
const provider = new LoggerProvider({
  resource: resourceFromAttributes({ 'service.name': 'claude-code', 'service.version': 'js-sdk-test' }),
  processors: [new BatchLogRecordProcessor({ exporter, maxExportBatchSize: 20, scheduledDelayMillis: 50 })],
});
const logger = provider.getLogger('com.anthropic.claude_code.events', '2.1.332');
const count = Number(process.env.RECORD_COUNT || '50');
for (let i = 0; i < count; i += 1) {
  logger.emit({
    severityNumber: 9,
    severityText: 'INFO',
    body: `claude_code.user_prompt ${i}`,
    attributes: {
      'event.name': 'user_prompt',
      'event.sequence': i,
      'cost_usd': 0.25,
      'prompt_length': '12',
      // A telemetry attribute naming another org must never decide tenancy.
      'organization.id': 'globex',
    },
  });
}
provider.forceFlush()
  .then(() => provider.shutdown())
  .then(() => {
    if (problems.length) process.exit(1);
    console.log(`exported ${count}`);
  })
  .catch((error) => { console.error(error); process.exit(1); });
