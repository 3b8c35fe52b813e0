// A gRPC client we did not write: grpc-js with only what any caller sends (a standard gRPC deadline,
// optionally a W3C traceparent). Prints one JSON line per call.
//   node client.js TARGET PROTO CALLS_JSON
// CALLS_JSON: [{"name", "method", "request", "deadline_ms", "metadata": {...}}, ...]
// method "Health" calls grpc.health.v1.Health/Check: request {"service": ""}, response {"status": "SERVING"}.
// Optional, from the environment: LINKNER_AUTH_TOKEN (sent as `authorization: Bearer <token>`) and
// LINKNER_TLS_CA (a PEM file: the channel speaks TLS and verifies the server with it).
const fs = require('fs');
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');

const [target, proto, callsJson] = process.argv.slice(2);
const definition = loader.loadSync(proto, {keepCase: true, longs: String, defaults: true, oneofs: true});
const service = grpc.loadPackageDefinition(definition).linkner.v1.LinkNER;
const credentials = process.env.LINKNER_TLS_CA
  ? grpc.credentials.createSsl(fs.readFileSync(process.env.LINKNER_TLS_CA))
  : grpc.credentials.createInsecure();
const client = new service(target, credentials);

// grpc.health.v1 by hand (no .proto needed): HealthCheckRequest {string service = 1},
// HealthCheckResponse {ServingStatus status = 1}
const HEALTH_STATUS = ['UNKNOWN', 'SERVING', 'NOT_SERVING', 'SERVICE_UNKNOWN'];
function encodeHealthRequest({service = ''}) {
  const name = Buffer.from(service, 'utf8');
  if (name.length > 127) throw new Error('health service name too long');
  return name.length ? Buffer.concat([Buffer.from([0x0a, name.length]), name]) : Buffer.alloc(0);
}
function decodeHealthResponse(bytes) {
  let status = 0;
  for (let i = 0; i + 1 < bytes.length; i += 2) if (bytes[i] === 0x08) status = bytes[i + 1];
  return {status: HEALTH_STATUS[status] || String(status)};
}

function call({name, method, request, deadline_ms, metadata}) {
  return new Promise((resolve) => {
    const meta = new grpc.Metadata();
    if (process.env.LINKNER_AUTH_TOKEN) meta.set('authorization', `Bearer ${process.env.LINKNER_AUTH_TOKEN}`);
    for (const [key, value] of Object.entries(metadata || {})) meta.set(key, value);
    const started = Date.now();
    const done = (error, response) => {
      resolve({name, ms: Date.now() - started, code: error ? grpc.status[error.code] : 'OK',
               details: error ? error.details : '', response: response || null});
    };
    const options = {deadline: Date.now() + deadline_ms};
    if (method === 'Health') {
      client.makeUnaryRequest('/grpc.health.v1.Health/Check', encodeHealthRequest, decodeHealthResponse,
                              request || {}, meta, options, done);
    } else {
      client[method](request, meta, options, done);
    }
  });
}

(async () => {
  for (const spec of JSON.parse(callsJson)) console.log(JSON.stringify(await call(spec)));
  client.close();
})();
