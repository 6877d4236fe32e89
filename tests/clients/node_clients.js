// node-redis and ioredis against a Bayou server, with the clients' defaults
// (node-redis 6 speaks RESP3 and sends CLIENT SETINFO; multi() is
// MULTI/EXEC). Usage: node node_clients.js PORT (NODE_PATH pointing at a
// node_modules with `redis` and `ioredis`). Prints one line per check;
// exits non-zero on the first failure. Run by
// crates/bayou-node/tests/clients.rs.
'use strict';
const { check, failsNaming } = require('./checks.js');
const { createClient } = require('redis');
const Redis = require('ioredis');

const port = Number(process.argv[2]);



async function nodeRedis() {
  const c = createClient({ url: `redis://127.0.0.1:${port}` });
  c.on('error', (e) => console.log(`node-redis error: ${e}`));
  await c.connect();
  const info = await c.sendCommand(['CLIENT', 'INFO']);
  await check('node-redis: defaults speak RESP3', /resp=3/.test(info), true);
  await check('node-redis: CLIENT SETINFO on connect', /lib-name=node-redis/.test(info), true);
  await check('node-redis: PING', c.ping(), 'PONG');
  await check('node-redis: HELLO is a map', (await c.hello()).proto, 3);
  await check('node-redis: CLIENT SETNAME', c.clientSetName('node'), 'OK');
  await check('node-redis: CLIENT GETNAME', c.clientGetName(), 'node');
  await check('node-redis: SET', c.set('nr:a', '1'), 'OK');
  await check('node-redis: multi() with MULTI/EXEC',
    c.multi().set('nr:b', '2').incr('nr:n').incrBy('nr:n', 2).get('nr:b').exec(),
    ['OK', 1, 3, '2']);
  await check('node-redis: INCR', c.incr('nr:n'), 4);
  await check('node-redis: SET NX', c.set('nr:a', 'x', { condition: 'NX' }), null);
  await check('node-redis: MGET', c.mGet(['nr:a', 'nr:b', 'nr:none']), ['1', '2', null]);
  await check('node-redis: EXISTS', c.exists(['nr:a', 'nr:none']), 1);
  await check('node-redis: KEYS', c.keys('nr:*').then((k) => k.sort()), ['nr:a', 'nr:b', 'nr:n']);
  const seen = [];
  for await (const keys of c.scanIterator({ MATCH: 'nr:*', COUNT: 1 })) seen.push(...keys);
  await check('node-redis: SCAN MATCH COUNT', seen.sort(), ['nr:a', 'nr:b', 'nr:n']);
  await failsNaming('node-redis: SET EX says it is unsupported',
    c.set('nr:e', '1', { expiration: { type: 'EX', value: 10 } }), "'SET ... EX' is not supported");
  await c.quit();
}

async function ioredis() {
  const r = new Redis({ port, host: '127.0.0.1', lazyConnect: true });
  await r.connect();
  await check('ioredis: PING', r.ping(), 'PONG');
  await check('ioredis: SET', r.set('io:a', '1'), 'OK');
  await check('ioredis: INCRBY', r.incrby('io:n', 5), 5);
  await check('ioredis: multi() with MULTI/EXEC',
    r.multi().set('io:b', '2').incr('io:n').exec(), [[null, 'OK'], [null, 6]]);
  await check('ioredis: pipeline()',
    r.pipeline().get('io:a').decr('io:n').exec(), [[null, '1'], [null, 5]]);
  await check('ioredis: CLIENT SETNAME', r.client('SETNAME', 'io'), 'OK');
  await check('ioredis: CLIENT GETNAME', r.client('GETNAME'), 'io');
  await check('ioredis: APPEND', r.append('io:a', '23'), 3);
  await check('ioredis: TYPE', r.type('io:a'), 'string');
  await failsNaming('ioredis: EXPIRE says it is unsupported', r.expire('io:a', 10), "'EXPIRE' is not supported");
  r.disconnect();
}

(async () => {
  await nodeRedis();
  await ioredis();
  console.log('all node client checks passed');
})().catch((e) => {
  console.log(`FAIL ${e.stack}`);
  process.exit(1);
});
