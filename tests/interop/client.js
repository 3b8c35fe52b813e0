// A gRPC client we did not write: grpc-js with only what any caller sends (Ray's `application`, unless ''
// metadata, a standard gRPC deadline, optionally a W3C traceparent). Prints one JSON line per call.
//   node client.js TARGET APPLICATION PROTO CALLS_JSON
// CALLS_JSON: [{"name", "method", "request", "deadline_ms", "metadata": {...}}, ...]
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');

const [target, application, proto, callsJson] = process.argv.slice(2);
const definition = loader.loadSync(proto, {keepCase: true, longs: String, defaults: true, oneofs: true});
const service = grpc.loadPackageDefinition(definition).linkner.v1.LinkNER;
const client = new service(target, grpc.credentials.createInsecure());

function call({name, method, request, deadline_ms, metadata}) {
  return new Promise((resolve) => {
    const meta = new grpc.Metadata();
    if (application) meta.set('application', application);  // direct ingress needs none
    for (const [key, value] of Object.entries(metadata || {})) meta.set(key, value);
    const started = Date.now();
    client[method](request, meta, {deadline: Date.now() + deadline_ms}, (error, response) => {
      resolve({name, ms: Date.now() - started, code: error ? grpc.status[error.code] : 'OK',
               details: error ? error.details : '', response: response || null});
    });
  });
}

(async () => {
  for (const spec of JSON.parse(callsJson)) console.log(JSON.stringify(await call(spec)));
  client.close();
})();
