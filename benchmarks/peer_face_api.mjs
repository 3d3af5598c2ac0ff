// The node side of benchmarks/peer_face_api.py: @vladmandic/face-api on the tfjs WASM backend.
//
//   node benchmarks/peer_face_api.mjs /work/peer-node/node_modules
//
// Loads face-api's SSD MobileNet v1 detector, 68-point landmark net and age/gender net from the
// package's own model/ folder (nothing is downloaded; the .wasm binaries are read from the
// installed @tensorflow/tfjs-backend-wasm), prints one "ready" JSON line, then reads frames from
// stdin until it closes. A frame is width and height as little-endian uint32, then width*height*3
// bytes of RGB (row-major, top row first). For each frame it writes one JSON line on stdout:
// {"faces": [{"face": [left, top, right, bottom], "age": years}, ...]} or {"error": "..."}.
// Everything else (tfjs's own notices included) goes to stderr, so stdout carries only the protocol.

import { createRequire } from 'node:module';
import path from 'node:path';

console.log = console.error; // tfjs prints notices with console.log; keep stdout for the protocol
console.info = console.error;

const MIN_CONFIDENCE = 0.5; // face-api's default for SsdMobilenetv1Options

function send(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

// Frames from a stream: chunks are kept in a list and joined once a whole frame is there.
async function* frames(stream) {
  let chunks = [];
  let have = 0;
  let need = 8;
  let header = null;
  for await (const chunk of stream) {
    chunks.push(chunk);
    have += chunk.length;
    while (have >= need) {
      const buf = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, have);
      if (header === null) {
        header = { w: buf.readUInt32LE(0), h: buf.readUInt32LE(4) };
        need = 8 + header.w * header.h * 3;
        chunks = [buf];
        continue;
      }
      yield { w: header.w, h: header.h, rgb: buf.subarray(8, need) };
      const rest = buf.subarray(need);
      chunks = rest.length ? [rest] : [];
      have = rest.length;
      header = null;
      need = 8;
    }
  }
  if (have) throw new Error(`stdin closed inside a frame (${have} of ${need} bytes)`);
}

// [left, top, right, bottom] in whole pixels, inclusive endpoints, from face-api's {x, y, width, height}.
function ltrb(box) {
  return [Math.round(box.x), Math.round(box.y),
    Math.round(box.x + box.width) - 1, Math.round(box.y + box.height) - 1];
}

async function main() {
  const modules = path.resolve(process.argv[2] || '/work/peer-node/node_modules');
  const require = createRequire(path.join(modules, 'noop.js'));
  const faceapi = require('@vladmandic/face-api/dist/face-api.node-wasm.js');
  const { tf } = faceapi; // face-api's node-wasm build re-exports @tensorflow/tfjs and its wasm backend
  const t0 = performance.now();
  tf.setWasmPaths(`${path.join(modules, '@tensorflow', 'tfjs-backend-wasm', 'dist')}${path.sep}`);
  if (!(await tf.setBackend('wasm'))) throw new Error('the tfjs wasm backend did not start');
  await tf.ready();
  const model = path.join(modules, '@vladmandic', 'face-api', 'model');
  await faceapi.nets.ssdMobilenetv1.loadFromDisk(model);
  await faceapi.nets.faceLandmark68Net.loadFromDisk(model);
  await faceapi.nets.ageGenderNet.loadFromDisk(model);
  const options = new faceapi.SsdMobilenetv1Options({ minConfidence: MIN_CONFIDENCE });
  const warm = tf.zeros([64, 64, 3], 'int32'); // the first call compiles the graph; not counted
  await faceapi.detectAllFaces(warm, options).withFaceLandmarks().withAgeAndGender();
  tf.dispose(warm);
  send({
    ready: true,
    face_api: faceapi.version,
    tfjs: tf.version_core,
    backend: tf.getBackend(),
    simd: await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT'),
    threads: await tf.env().getAsync('WASM_HAS_MULTITHREAD_SUPPORT'),
    load_seconds: (performance.now() - t0) / 1000,
  });

  for await (const { w, h, rgb } of frames(process.stdin)) {
    let tensor = null;
    try {
      tensor = tf.tensor3d(rgb, [h, w, 3], 'int32');
      const found = await faceapi.detectAllFaces(tensor, options).withFaceLandmarks().withAgeAndGender();
      send({ faces: found.map((f) => ({ face: ltrb(f.detection.box), age: f.age })) });
    } catch (e) {
      send({ error: `${e.name}: ${String(e.message).split(/\s+/).join(' ')}` });
    } finally {
      if (tensor) tf.dispose(tensor);
    }
  }
  console.error(`face-api: tensors still held at exit: ${tf.memory().numTensors}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
