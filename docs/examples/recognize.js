#!/usr/bin/env node
// Call LinkNER's Recognize from Node.js and print each entity as one JSON line.
//
//   npm install @grpc/grpc-js @grpc/proto-loader
//   node docs/examples/recognize.js TARGET [--ca CA.pem] [--cert CLIENT.pem --key CLIENT-KEY.pem]
//                                   [--deadline-ms 10000] [TEXT ...]
//
//   TARGET      host:port of the service, e.g. 127.0.0.1:9000
//   --ca        PEM CA that signed the server's certificate: the channel uses TLS
//   --cert/--key  the client certificate for mutual TLS (with --ca)
//   TEXT        the text to recognize (the words are joined by spaces); a sample without it
//
// Environment: LINKNER_AUTH_TOKEN, the bearer token when the server has one; LINKNER_PROTO, the
// path of linkner.proto (default: protos/linkner/v1/linkner.proto of this repository).
// Inside this repository, NODE_PATH=tests/interop/node_modules uses the pinned packages.
// Exit status: 0 answered, 1 the call failed (its gRPC status on stderr), 2 bad arguments.
'use strict';

const fs = require('fs');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');

const SAMPLE = 'Angela Merkel visited Paris.';
const USAGE = 'usage: node recognize.js TARGET [--ca CA.pem] [--cert CERT.pem --key KEY.pem] ' +
  '[--deadline-ms MS] [TEXT ...]';

function parseArguments(argv) {
  const options = {target: null, ca: null, cert: null, key: null, deadlineMs: 10000, words: []};
  for (let i = 0; i < argv.length; i += 1) {
    const flag = argv[i];
    if (['--ca', '--cert', '--key', '--deadline-ms'].includes(flag)) {
      if (i + 1 >= argv.length) throw new Error(`${flag} needs a value`);
      const value = argv[(i += 1)];
      if (flag === '--deadline-ms') options.deadlineMs = Number(value);
      else options[flag.slice(2)] = value;
    } else if (flag === '-h' || flag === '--help') {
      console.log(USAGE);
      process.exit(0);
    } else if (options.target === null) {
      options.target = flag;
    } else {
      options.words.push(flag);
    }
  }
  if (!options.target) throw new Error('TARGET is required');
  if (!(options.deadlineMs > 0)) throw new Error('--deadline-ms must be a positive number');
  if (Boolean(options.cert) !== Boolean(options.key)) throw new Error('--cert and --key go together');
  if (options.cert && !options.ca) throw new Error('mutual TLS (--cert, --key) needs --ca too');
  return options;
}

function credentials({ca, cert, key}) {
  if (!ca) return grpc.credentials.createInsecure();
  return grpc.credentials.createSsl(fs.readFileSync(ca), key ? fs.readFileSync(key) : null,
                                    cert ? fs.readFileSync(cert) : null);
}

function main() {
  let options;
  try {
    options = parseArguments(process.argv.slice(2));
  } catch (error) {
    console.error(`${error.message}\n${USAGE}`);
    process.exit(2);
  }
  const proto = process.env.LINKNER_PROTO ||
    path.join(__dirname, '..', '..', 'protos', 'linkner', 'v1', 'linkner.proto');
  const definition = loader.loadSync(proto, {keepCase: true, longs: String, defaults: true, oneofs: true});
  const {LinkNER} = grpc.loadPackageDefinition(definition).linkner.v1;
  const client = new LinkNER(options.target, credentials(options));

  const metadata = new grpc.Metadata();
  const token = (process.env.LINKNER_AUTH_TOKEN || '').trim();
  if (token) metadata.set('authorization', `Bearer ${token}`);

  const text = options.words.length ? options.words.join(' ') : SAMPLE;
  client.Recognize({text}, metadata, {deadline: Date.now() + options.deadlineMs}, (error, response) => {
    client.close();
    if (error) {
      console.error(JSON.stringify({code: grpc.status[error.code], details: error.details}));
      process.exitCode = 1;
      return;
    }
    for (const entity of response.entities) {
      console.log(JSON.stringify({
        text: entity.text, label: entity.label, char_start: entity.char_start, char_end: entity.char_end,
        word_start: entity.word_start, word_end: entity.word_end, sentence: entity.sentence,
        source: entity.source, uncertainty: entity.uncertainty, local_label: entity.local_label,
        local_probability: entity.local_probability,
        llm_score: entity.llm_score === undefined ? null : entity.llm_score, degraded: entity.degraded,
      }));
    }
    if (response.degraded) {
      console.error(`degraded (${response.degraded_kind}): ${response.degraded_reason}`);
    }
  });
}

main();
