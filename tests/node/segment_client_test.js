#!/usr/bin/env node
// Calls the gateway from Node.js with @grpc/grpc-js, with stubs that @grpc/proto-loader builds
// from our protos at run time: deeplab.v1.Segmentation and the Open Inference Protocol
// (inference.GRPCInferenceService, docs/api.md). It starts a real worker serving the shipped
// `demo` weight set and a gateway on loopback ports they pick, segments the demo's sample
// images through both APIs, and checks sizes, class ids, class stats, that both APIs give the
// same labels, the metadata calls and error codes.
//
// Usage: node segment_client_test.js --worker BIN --gateway BIN --source DIR
// Needs tests/node/node_modules (scripts/install_deps.sh runs `npm ci` here).
'use strict';

const { spawn } = require('child_process');
const fs = require('fs');
const path = require('path');
const readline = require('readline');

let grpc;
let protoLoader;
try {
  grpc = require('@grpc/grpc-js');
  protoLoader = require('@grpc/proto-loader');
} catch (e) {
  console.log(`FAIL @grpc/grpc-js and @grpc/proto-loader are not installed in ${__dirname}/node_modules ` +
              `(${e.code || e.message}): run scripts/install_deps.sh, or npm ci in tests/node`);
  process.exit(1);
}

const MODEL = 'demo';
const CALL_SECONDS = 30;           // deadline of each call
const START_SECONDS = 120;         // for each server to print its address (and `ready`)
const READY_SECONDS = 60;          // for ListModels to show the model ready
const WATCHDOG_SECONDS = 240;      // the whole test; ctest's TIMEOUT is the backstop

function parseArgs(argv) {
  const args = {};
  for (let i = 0; i < argv.length; i++) {
    const m = /^--(worker|gateway|source)(?:=(.*))?$/.exec(argv[i]);
    if (!m) usage(`unknown argument ${argv[i]}`);
    args[m[1]] = m[2] !== undefined ? m[2] : argv[++i];
    if (args[m[1]] === undefined) usage(`--${m[1]} needs a value`);
  }
  for (const name of ['worker', 'gateway', 'source']) {
    if (!args[name]) usage(`--${name} is required`);
  }
  return args;
}

function usage(why) {
  console.error(`segment_client_test.js: ${why}\n` +
                'Usage: node segment_client_test.js --worker BIN --gateway BIN --source DIR');
  process.exit(2);
}

// ---- checks -------------------------------------------------------------------------------

const counts = { passed: 0, failed: 0 };

function check(condition, what) {
  counts[condition ? 'passed' : 'failed']++;
  console.log(`${condition ? 'ok  ' : 'FAIL'} ${what}`);
  return condition;
}

// ---- server processes ---------------------------------------------------------------------

const servers = [];
const logTail = [];  // the servers' last output lines, printed when something fails

function remember(name, line) {
  logTail.push(`  [${name}] ${line}`);
  if (logTail.length > 200) logTail.shift();
}

// Starts a server and resolves once it has printed `NAME: grpc HOST:PORT`, every other
// `NAME: KEY ...` line listed in `wantKeys` (e.g. `http`), and the line `NAME: ready` when
// `ready` is true. Resolves to { proc, addresses: { grpc, http, ... } }.
function startServer(argv, name, wantKeys, ready) {
  const proc = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  const server = { name, proc, addresses: {}, exited: false };
  servers.push(server);
  return new Promise((resolve, reject) => {
    let sawReady = !ready;
    let done = false;
    const finish = (error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (error) reject(error); else resolve(server);
    };
    const timer = setTimeout(
      () => finish(new Error(`${name} did not start within ${START_SECONDS} s`)), START_SECONDS * 1000);
    const onLine = (line) => {
      remember(name, line);
      const m = new RegExp(`^${name}: (\\w+) (\\S+)`).exec(line);
      if (m) server.addresses[m[1]] = m[2];
      if (line.startsWith(`${name}: ready`)) sawReady = true;
      if (sawReady && ['grpc', ...wantKeys].every((k) => server.addresses[k])) finish();
    };
    // Both streams are read to the end, so a chatty server never blocks on a full pipe.
    readline.createInterface({ input: proc.stdout }).on('line', onLine);
    readline.createInterface({ input: proc.stderr }).on('line', (line) => remember(name, line));
    proc.on('error', (e) => finish(new Error(`${name} could not be started: ${e.message}`)));
    proc.on('exit', (code, signal) => {
      server.exited = true;
      finish(new Error(`${name} exited (${signal || `code ${code}`}) before it was ready`));
    });
  });
}

// SIGTERM, then SIGKILL for whatever has not exited after 15 s.
async function stopServers() {
  const live = servers.filter((s) => !s.exited && s.proc.exitCode === null && s.proc.signalCode === null);
  await Promise.all(live.reverse().map((s) => new Promise((resolve) => {
    const timer = setTimeout(() => { s.proc.kill('SIGKILL'); }, 15000);
    s.proc.once('exit', () => { clearTimeout(timer); s.exited = true; resolve(); });
    s.proc.kill('SIGTERM');
  })));
}

// Last resort on any way out (an exception, a signal, process.exit): never leave servers behind.
function killServersNow() {
  for (const s of servers) {
    if (!s.exited && s.proc.exitCode === null && s.proc.signalCode === null) {
      try { s.proc.kill('SIGKILL'); } catch (e) { /* already gone */ }
    }
  }
}
process.on('exit', killServersNow);
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    console.log(`FAIL interrupted by ${signal}`);
    killServersNow();
    process.exit(1);
  });
}

// ---- gRPC helpers -------------------------------------------------------------------------

function loadStubs(source) {
  const definition = protoLoader.loadSync(
    ['deeplab/v1/segmentation.proto', 'inference/grpc_predict_v2.proto'],
    { includeDirs: [path.join(source, 'protos')], keepCase: true, longs: Number, enums: String,
      defaults: true, oneofs: true });
  return grpc.loadPackageDefinition(definition);
}

// A unary call as a promise, with a deadline.
function call(client, method, request) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + CALL_SECONDS * 1000);
    client[method](request, { deadline }, (error, response) => {
      if (error) reject(error); else resolve(response);
    });
  });
}

// The error of a call that should fail (null when it succeeded), and just its status code.
async function callError(client, method, request) {
  try {
    await call(client, method, request);
    return null;
  } catch (e) {
    return e;
  }
}

async function callCode(client, method, request) {
  const error = await callError(client, method, request);
  return error && error.code;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// An InferParameter's value, whichever of its oneof fields is set.
function paramValue(parameter) {
  if (!parameter) return undefined;
  const which = parameter.parameter_choice;
  return which ? parameter[which] : undefined;
}

// ---- images -------------------------------------------------------------------------------

// Width and height from a PNG's IHDR chunk (bytes 16..24, big-endian).
function pngSize(bytes) {
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  if (bytes.length < 24 || !bytes.subarray(0, 8).equals(signature) ||
      bytes.toString('latin1', 12, 16) !== 'IHDR') {
    throw new Error('not a PNG with an IHDR chunk first');
  }
  return { width: bytes.readUInt32BE(16), height: bytes.readUInt32BE(20) };
}

// Pixels per class id in a raw label map.
function histogram(labels, numClasses) {
  const pixels = new Array(numClasses).fill(0);
  let outOfRange = 0;
  for (const v of labels) {
    if (v < numClasses) pixels[v]++; else outOfRange++;
  }
  return { pixels, outOfRange };
}

// A BYTES tensor's raw form: per element, a 4-byte little-endian length and the bytes.
function bytesTensor(elements) {
  const parts = [];
  for (const e of elements) {
    const length = Buffer.alloc(4);
    length.writeUInt32LE(e.length);
    parts.push(length, e);
  }
  return Buffer.concat(parts);
}

// ---- the test -----------------------------------------------------------------------------

async function run(args) {
  const stubs = loadStubs(args.source);
  const imageDir = path.join(args.source, 'models', MODEL, 'samples', 'images');
  const images = fs.readdirSync(imageDir).filter((f) => f.endsWith('.png')).sort().slice(0, 6)
    .map((f) => {
      const bytes = fs.readFileSync(path.join(imageDir, f));
      return { file: f, bytes, ...pngSize(bytes) };
    });
  if (!check(images.length >= 2, `${images.length} sample images in ${imageDir}`)) return;

  const common = ['--host', '127.0.0.1', '--port', '0', '--metrics-port', '0'];
  const worker = await startServer(
    [args.worker, '--models', path.join(args.source, 'models'), '--load', MODEL, '--threads', '1',
     ...common], 'deeplab-worker', [], true);
  const gateway = await startServer(
    [args.gateway, '--workers', worker.addresses.grpc, '--status-interval', '200ms',
     '--http-port', '0', ...common], 'deeplab-gateway', ['http'], false);
  check(/^127\.0\.0\.1:[1-9]\d*$/.test(gateway.addresses.http),
        `gateway printed its REST port: deeplab-gateway: http ${gateway.addresses.http}`);

  const options = { 'grpc.max_receive_message_length': 64 << 20,
                    'grpc.max_send_message_length': 64 << 20 };
  const credentials = grpc.credentials.createInsecure();
  const segmentation = new stubs.deeplab.v1.Segmentation(gateway.addresses.grpc, credentials, options);
  const inference = new stubs.inference.GRPCInferenceService(gateway.addresses.grpc, credentials, options);
  try {
    await runChecks(segmentation, inference, images);
  } finally {
    segmentation.close();
    inference.close();
  }
}

async function runChecks(segmentation, inference, images) {
  // -- ListModels, until the gateway has heard from the worker.
  const readyBy = Date.now() + READY_SECONDS * 1000;
  let info;
  let lastError = 'no answer';
  while (Date.now() < readyBy) {
    try {
      const models = await call(segmentation, 'ListModels', {});
      info = models.models.find((m) => m.name === MODEL);
      if (info && info.ready) break;
      lastError = info ? 'listed, not ready' : `not listed (${models.models.map((m) => m.name)})`;
    } catch (e) {
      lastError = e.message;
    }
    await sleep(100);
  }
  if (!check(info && info.ready, `ListModels shows ${MODEL} ready (${info && info.ready ? 'yes' : lastError})`)) {
    return;
  }
  const numClasses = info.num_classes;
  check(numClasses > 1 && info.class_names.length === numClasses,
        `ListModels: ${numClasses} classes, ${info.class_names.length} class names`);

  // -- deeplab.v1.Segmentation/Segment, one call per image.
  const segmented = [];
  for (const image of images) {
    const response = await call(segmentation, 'Segment', {
      model: MODEL, image: { encoded: image.bytes }, request_id: `node-${image.file}`,
      outputs: { label_raw: true, class_stats: true },
    });
    const r = response.result;
    const what = `Segment ${image.file}`;
    check(response.request_id === `node-${image.file}`, `${what}: request id echoed`);
    check(r.width === image.width && r.height === image.height,
          `${what}: size ${r.width}x${r.height}, the PNG's is ${image.width}x${image.height}`);
    check(r.label_raw.length === image.width * image.height,
          `${what}: label_raw has ${r.label_raw.length} bytes, one per pixel`);
    const { pixels, outOfRange } = histogram(r.label_raw, numClasses);
    check(outOfRange === 0, `${what}: every label < ${numClasses} (${outOfRange} are not)`);
    const sum = r.class_stats.reduce((s, c) => s + c.fraction, 0);
    check(Math.abs(sum - 1) < 1e-6, `${what}: class fractions sum to 1 (${sum})`);
    const statsMatch = r.class_stats.every((c) => c.class_id >= 0 && c.class_id < numClasses &&
      c.name === info.class_names[c.class_id] && Number(c.pixels) === pixels[c.class_id] &&
      Math.abs(c.fraction - pixels[c.class_id] / r.label_raw.length) < 1e-9) &&
      r.class_stats.length === pixels.filter((p) => p > 0).length;
    check(statsMatch, `${what}: class stats (${r.class_stats.map((c) => `${c.name} ${c.pixels}`).join(', ')}) ` +
          'match the label map');
    segmented.push({ labels: r.label_raw, pixels });
  }

  await runInferenceChecks(inference, info, images, segmented);
}

async function runInferenceChecks(inference, info, images, segmented) {
  const numClasses = info.num_classes;

  // -- health and metadata.
  const live = await call(inference, 'ServerLive', {});
  check(live.live === true, 'ServerLive: live');
  const ready = await call(inference, 'ServerReady', {});
  check(ready.ready === true, 'ServerReady: ready');
  const modelReady = await call(inference, 'ModelReady', { name: MODEL, version: '' });
  check(modelReady.ready === true, `ModelReady ${MODEL}: ready`);
  const server = await call(inference, 'ServerMetadata', {});
  check(server.name === 'deeplab-serve' && server.version !== '',
        `ServerMetadata: name "${server.name}", version "${server.version}", ` +
        `extensions [${server.extensions}]`);

  const meta = await call(inference, 'ModelMetadata', { name: MODEL, version: '' });
  check(meta.name === MODEL && meta.versions.includes('1') && meta.platform === 'deeplab-serve_libtorch',
        `ModelMetadata: name "${meta.name}", versions [${meta.versions}], platform "${meta.platform}"`);
  check(meta.inputs.length === 1 && meta.inputs[0].name === 'image',
        `ModelMetadata: one input, "image" (${meta.inputs.map((t) => `${t.name} ${t.datatype} [${t.shape}]`)})`);
  const wantOutputs = { labels: 'UINT8', probabilities: 'UINT8', class_stats: 'FP32',
                        label_png: 'BYTES', overlay_png: 'BYTES' };
  const gotOutputs = Object.fromEntries(meta.outputs.map((t) => [t.name, t.datatype]));
  check(JSON.stringify(Object.keys(gotOutputs).sort()) === JSON.stringify(Object.keys(wantOutputs).sort()) &&
        Object.entries(wantOutputs).every(([name, type]) => gotOutputs[name] === type),
        `ModelMetadata: outputs ${meta.outputs.map((t) => `${t.name} ${t.datatype} [${t.shape}]`).join(', ')}`);
  const metaClasses = Number(paramValue(meta.parameters.num_classes));
  check(metaClasses === numClasses,
        `ModelMetadata: parameters.num_classes ${metaClasses}, ListModels says ${numClasses}`);
  const metaNames = String(paramValue(meta.parameters.class_names));
  check(metaNames === info.class_names.join(','),
        `ModelMetadata: parameters.class_names "${metaNames}"`);
  for (const key of ['description', 'backbone', 'input_height', 'input_width', 'tile_stride', 'max_batch_size']) {
    check(paramValue(meta.parameters[key]) !== undefined, `ModelMetadata: parameters.${key} = ${paramValue(meta.parameters[key])}`);
  }

  // -- ModelInfer: every image in one BYTES tensor [N], in raw_input_contents.
  const n = images.length;
  const { width, height } = images[0];
  const response = await call(inference, 'ModelInfer', {
    model_name: MODEL, id: 'node-batch',
    inputs: [{ name: 'image', datatype: 'BYTES', shape: [n] }],
    outputs: [{ name: 'labels' }, { name: 'class_stats' }],
    raw_input_contents: [bytesTensor(images.map((i) => i.bytes))],
  });
  check(response.model_name === MODEL && response.id === 'node-batch',
        `ModelInfer: model "${response.model_name}", id "${response.id}" echoed`);
  const outputs = parseOutputs(response);
  const labels = outputs.labels;
  const stats = outputs.class_stats;
  check(labels && labels.datatype === 'UINT8' && sameShape(labels.shape, [n, height, width]),
        `ModelInfer: labels ${labels && labels.datatype} [${labels && labels.shape}], want UINT8 [${n},${height},${width}]`);
  check(stats && stats.datatype === 'FP32' && sameShape(stats.shape, [n, numClasses]),
        `ModelInfer: class_stats ${stats && stats.datatype} [${stats && stats.shape}], want FP32 [${n},${numClasses}]`);
  check(response.outputs.length === 2 && response.raw_output_contents.length === 2,
        `ModelInfer: ${response.outputs.length} outputs, ${response.raw_output_contents.length} raw_output_contents`);
  if (!labels || !stats ||
      !check(labels.raw && labels.raw.length === n * height * width &&
             stats.raw && stats.raw.length === n * numClasses * 4,
             `ModelInfer: raw_output_contents sizes ${labels.raw && labels.raw.length}, ` +
             `${stats.raw && stats.raw.length} bytes, want ${n * height * width}, ${n * numClasses * 4}`)) {
    return;
  }

  for (let i = 0; i < n; i++) {
    const what = `ModelInfer ${images[i].file}`;
    const plane = labels.raw.subarray(i * height * width, (i + 1) * height * width);
    check(images[i].width === width && images[i].height === height,
          `${what}: labels are ${width}x${height}, the PNG is ${images[i].width}x${images[i].height}`);
    const { pixels, outOfRange } = histogram(plane, numClasses);
    check(outOfRange === 0, `${what}: every label < ${numClasses} (${outOfRange} are not)`);
    let differ = 0;
    for (let p = 0; p < plane.length; p++) if (plane[p] !== segmented[i].labels[p]) differ++;
    check(differ === 0, `${what}: the same labels as Segment (${differ} of ${plane.length} pixels differ)`);
    const row = [];
    for (let c = 0; c < numClasses; c++) row.push(stats.raw.readFloatLE((i * numClasses + c) * 4));
    const sum = row.reduce((s, v) => s + v, 0);
    check(Math.abs(sum - 1) < 1e-5, `${what}: class_stats sum to 1 (${sum})`);
    check(row.every((v, c) => Math.abs(v - pixels[c] / plane.length) < 1e-6),
          `${what}: class_stats [${row.map((v) => v.toFixed(4))}] match the label map`);
  }

  // -- ModelInfer: one image in contents.bytes_contents, no outputs listed (labels and
  //    class_stats by default).
  const single = await call(inference, 'ModelInfer', {
    model_name: MODEL, model_version: '1',
    inputs: [{ name: 'any_name', datatype: 'BYTES', shape: [1],
               contents: { bytes_contents: [images[0].bytes] } }],
  });
  const singleOut = parseOutputs(single);
  check(Object.keys(singleOut).sort().join(',') === 'class_stats,labels',
        `ModelInfer without outputs: answers [${Object.keys(singleOut)}], want labels and class_stats`);
  check(singleOut.labels && singleOut.labels.raw && singleOut.labels.raw.equals(segmented[0].labels),
        `ModelInfer with bytes_contents: ${images[0].file} labelled as by Segment`);

  // -- errors.
  const request = { model_name: 'no_such_model', inputs: [{ name: 'image', datatype: 'BYTES', shape: [1] }],
                    raw_input_contents: [bytesTensor([images[0].bytes])] };
  let code = await callCode(inference, 'ModelInfer', request);
  check(code === grpc.status.NOT_FOUND, `ModelInfer for an unknown model: code ${code}, want NOT_FOUND (5)`);
  code = await callCode(inference, 'ModelMetadata', { name: 'no_such_model' });
  check(code === grpc.status.NOT_FOUND, `ModelMetadata for an unknown model: code ${code}, want NOT_FOUND (5)`);
  code = await callCode(inference, 'ModelInfer', { ...request, model_name: MODEL, model_version: '2' });
  check(code === grpc.status.NOT_FOUND, `ModelInfer for version 2: code ${code}, want NOT_FOUND (5)`);
  // One bad image fails the call with its code, and the message names it.
  const error = await callError(inference, 'ModelInfer', {
    model_name: MODEL, inputs: [{ name: 'image', datatype: 'BYTES', shape: [2] }],
    raw_input_contents: [bytesTensor([images[0].bytes, Buffer.from('not an image')])] });
  check(error && error.code === grpc.status.INVALID_ARGUMENT && error.details.startsWith('image 1: '),
        `ModelInfer with a garbage second image: ${error ? `code ${error.code}, "${error.details}"` : 'succeeded'}, ` +
        'want INVALID_ARGUMENT (3), "image 1: ..."');
}

// A ModelInferResponse's outputs by name, each with its raw_output_contents entry.
function parseOutputs(response) {
  const out = {};
  response.outputs.forEach((t, i) => {
    out[t.name] = { datatype: t.datatype, shape: t.shape.map(Number), raw: response.raw_output_contents[i] };
  });
  return out;
}

function sameShape(a, b) {
  return a.length === b.length && a.every((v, i) => Number(v) === b[i]);
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const started = Date.now();
  const watchdog = setTimeout(() => {
    console.log(`FAIL the test did not finish within ${WATCHDOG_SECONDS} s`);
    killServersNow();
    process.exit(1);
  }, WATCHDOG_SECONDS * 1000);
  try {
    await run(args);
  } catch (e) {
    check(false, `unexpected error: ${e.code !== undefined ? `code ${e.code}: ` : ''}${e.message}`);
  } finally {
    await stopServers();
    clearTimeout(watchdog);
  }
  if (counts.failed > 0 && logTail.length > 0) {
    console.log('the servers\' last output lines:');
    for (const line of logTail) console.log(line);
  }
  console.log(`${counts.passed} passed, ${counts.failed} failed (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  process.exit(counts.failed === 0 ? 0 : 1);
}

main();
