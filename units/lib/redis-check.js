#!/usr/bin/env node
// Is Redis reachable, and does it take our credentials? One attempt:
// connect to REDIS_URL (redis:// or rediss:// for TLS), AUTH when the URL
// carries a user or password, PING, expect PONG. Used by the redis-check
// unit (flowinit retries it with backoff) before Flowise runs in queue mode,
// so that a Redis that is down gives one clear line instead of ioredis's
// endless stack traces. Dependency-free (node's net and tls).
//
// Environment: REDIS_URL (required), REDIS_CHECK_TIMEOUT_MS (default 3000),
// REDIS_CHECK_QUIET=1 (print nothing on success: the liveness probe).
// Exit: 0 PONG; 1 not reachable, refused, or not Redis. The password is
// never printed.
'use strict';

const net = require('net');
const tls = require('tls');

const raw = process.env.REDIS_URL || '';
const timeoutMs = Number(process.env.REDIS_CHECK_TIMEOUT_MS || 3000);
const quiet = process.env.REDIS_CHECK_QUIET === '1';

function say(msg) {
  console.log(`redis-check: ${msg}`);
}
function fail(msg) {
  say(msg);
  process.exit(1);
}

if (!raw) fail('REDIS_URL is not set: queue mode needs it (redis://[user:password@]host:6379, rediss:// for TLS)');
let url;
try {
  url = new URL(raw);
} catch {
  fail('REDIS_URL is not a URL; write redis://[user:password@]host:6379 (rediss:// for TLS)');
}
if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') {
  fail(`REDIS_URL must start with redis:// or rediss://, not ${url.protocol}//`);
}
const host = url.hostname.replace(/^\[(.*)\]$/, '$1') || '127.0.0.1';
const port = Number(url.port || 6379);
const user = decodeURIComponent(url.username || '');
const pass = decodeURIComponent(url.password || '');
// What we may print: the URL without its credentials.
const where = `${url.protocol}//${url.hostname}:${port}`;

function command(...args) {
  return `*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('');
}

const opts = { host, port };
const sock = url.protocol === 'rediss:' ? tls.connect({ ...opts, servername: url.hostname }) : net.connect(opts);
const timer = setTimeout(() => {
  sock.destroy();
  fail(`Redis at ${where} did not answer within ${timeoutMs} ms`);
}, timeoutMs);

let buf = '';
const wanted = [];
if (pass) wanted.push(user ? command('AUTH', user, pass) : command('AUTH', pass));
wanted.push(command('PING'));
const replies = [];

sock.on(url.protocol === 'rediss:' ? 'secureConnect' : 'connect', () => sock.write(wanted.join('')));
sock.on('data', (d) => {
  buf += d.toString('utf8');
  let i;
  while ((i = buf.indexOf('\r\n')) >= 0) {
    replies.push(buf.slice(0, i));
    buf = buf.slice(i + 2);
  }
  if (replies.length < wanted.length) return;
  clearTimeout(timer);
  sock.destroy();
  const bad = replies.find((r) => r.startsWith('-'));
  if (bad) {
    const msg = bad.slice(1).split(pass || '\u0000').join('***');
    if (/^(WRONGPASS|NOAUTH|ERR AUTH|ERR invalid password|ERR Client sent AUTH)/.test(msg)) {
      fail(`Redis at ${where} refused the credentials in REDIS_URL: ${msg}`);
    }
    fail(`Redis at ${where} answered an error: ${msg}`);
  }
  if (replies[replies.length - 1] !== '+PONG') fail(`${where} answered, but not like Redis (no PONG)`);
  if (!quiet) say(`Redis at ${where} answered PONG`);
  process.exit(0);
});
sock.on('error', (e) => {
  clearTimeout(timer);
  fail(`Redis at ${where} is not reachable: ${e.code || e.message}`);
});
