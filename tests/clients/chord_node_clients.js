// node-redis and ioredis against a Chord node, with the clients' defaults
// (node-redis 6 speaks RESP3 and sends CLIENT SETINFO; multi() is MULTI/EXEC,
// on Chord run in order, not atomic across keys). Usage: node
// chord_node_clients.js PORT (NODE_PATH pointing at a node_modules with
// `redis` and `ioredis`). Prints one line per check; exits non-zero on the
// first failure. Run by crates/chord-node/tests/clients.rs.
'use strict';
const { check } = require('./checks.js');
const { createClient } = require('redis');
const Redis = require('ioredis');

const port = Number(process.argv[2]);


async function nodeRedis() {
  const c = createClient({ url: `redis://127.0.0.1:${port}` });
  c.on('error', (e) => console.log(`node-redis error: ${e}`));
  await c.connect();
  const info = await c.sendCommand(['CLIENT', 'INFO']);
  await check('node-redis: defaults speak RESP3', /resp=3/.test(info), true);
  await check('node-redis: SET', c.set('js:a', '1'), 'OK');
  await check('node-redis: GET', c.get('js:a'), '1');
  await check('node-redis: MGET', c.mGet(['js:a', 'js:none']), ['1', null]);
  await check('node-redis: multi()', c.multi().set('js:b', '2').get('js:b').exec(), ['OK', '2']);
  await check('node-redis: DEL', c.del('js:b'), 1);
  await c.quit();
}

async function ioredis() {
  const c = new Redis({ port, host: '127.0.0.1', lazyConnect: true });
  await c.connect();
  await check('ioredis: SET', c.set('io:a', 'x'), 'OK');
  await check('ioredis: GET', c.get('io:a'), 'x');
  await check('ioredis: pipeline', c.pipeline().set('io:b', 'y').get('io:b').exec(), [[null, 'OK'], [null, 'y']]);
  await check('ioredis: EXISTS', c.exists('io:a', 'io:b', 'io:none'), 2);
  c.disconnect();
}

(async () => {
  await nodeRedis();
  await ioredis();
  console.log('node-redis and ioredis ok against Chord');
})();
