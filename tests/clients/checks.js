// What every Node client script of the compatibility matrix checks with:
// one line per check, and exit non-zero on the first failure.
'use strict';
const assert = require('node:assert/strict');

async function check(name, got, want) {
  try {
    assert.deepStrictEqual(await got, want);
  } catch (e) {
    console.log(`FAIL ${name}: got ${JSON.stringify(await got)}, want ${JSON.stringify(want)}`);
    process.exit(1);
  }
  console.log(`ok ${name}`);
}

async function failsNaming(name, promise, text) {
  try {
    await promise;
  } catch (e) {
    if (!String(e.message).includes(text)) console.log(`error was: ${e.message}`);
    return check(name, String(e.message).includes(text), true);
  }
  console.log(`FAIL ${name}: no error`);
  process.exit(1);
}

module.exports = { check, failsNaming };
