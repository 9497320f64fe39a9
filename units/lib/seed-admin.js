#!/usr/bin/env node
// Seed the first Flowise account (the owner of the one organization) from
// FLOWISE_USERNAME (an email address) and FLOWISE_PASSWORD. Flowise 3.1.2+
// no longer reads these variables itself; the account is created through
// POST /api/v1/account/register once core is ready.
//
// Idempotent: when an organization already exists (seeded before, or set up
// by hand in the UI) this is a no-op. Never prints the password.
//
// Environment: FLOWISE_USERNAME, FLOWISE_PASSWORD, FLOWISE_ADMIN_NAME
// (optional display name, default: the email), FLOWISE_API (default
// http://127.0.0.1:3001).
// Exit: 0 created / already seeded / nothing to do; 1 anything else.
'use strict';

const api = (process.env.FLOWISE_API || 'http://127.0.0.1:3001').replace(/\/+$/, '');
const email = (process.env.FLOWISE_USERNAME || '').trim();
const password = process.env.FLOWISE_PASSWORD || '';
const name = (process.env.FLOWISE_ADMIN_NAME || '').trim() || email;

function log(msg) {
  // Belt and braces: never let the password reach the output.
  const text = password ? String(msg).split(password).join('***') : String(msg);
  console.log(`seed-admin: ${text}`);
}

function fail(msg) {
  log(msg);
  process.exit(1);
}

if (!email || !password) {
  log('FLOWISE_USERNAME and/or FLOWISE_PASSWORD not set: no admin account seeded. ' +
    'Set both to create the first account, or create it in the UI (/organization-setup).');
  process.exit(0);
}

// The rules Flowise enforces (packages/server .../account.service), checked
// here first so the message says which rule failed.
if (!/^[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\.[a-zA-Z]{2,}$/.test(email)) {
  fail(`FLOWISE_USERNAME must be an email address (Flowise 3.x logs in by email); got "${email}"`);
}
const problems = [];
if (password.length < 8) problems.push('at least 8 characters');
if (password.length > 128) problems.push('at most 128 characters');
if (!/[a-z]/.test(password)) problems.push('a lower-case letter');
if (!/[A-Z]/.test(password)) problems.push('an upper-case letter');
if (!/[0-9]/.test(password)) problems.push('a digit');
if (!/[^a-zA-Z0-9]/.test(password)) problems.push('a symbol');
if (problems.length) fail(`FLOWISE_PASSWORD is too weak for Flowise: it needs ${problems.join(', ')}`);
if (name.length > 100) fail('FLOWISE_ADMIN_NAME must be at most 100 characters');

async function call(method, path, body) {
  const res = await fetch(api + path, {
    method,
    headers: body ? { 'Content-Type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(15000),
  });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    // not JSON
  }
  return { status: res.status, text, json };
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  // flowinit starts this unit once core is ready; still, tolerate a core
  // that is restarting (up to ~60 s).
  for (let i = 0; ; i++) {
    try {
      const r = await call('GET', '/api/v1/ping');
      if (r.status === 200) break;
    } catch {
      // not listening yet
    }
    if (i >= 60) fail(`Flowise at ${api} did not answer /api/v1/ping`);
    await sleep(1000);
  }

  const resolved = await call('POST', '/api/v1/auth/resolve');
  const redirect = resolved.json && resolved.json.redirectUrl;
  if (resolved.status === 200 && redirect && redirect !== '/organization-setup') {
    log(`already seeded: an organization exists (Flowise would send a browser to ${redirect}); nothing to do`);
    return;
  }

  const r = await call('POST', '/api/v1/account/register', { user: { name, email, credential: password } });
  const message = (r.json && (r.json.message || r.json.error)) || r.text.slice(0, 200);
  if (r.status === 201 || r.status === 200) {
    log(`created the admin account ${email} (owner of the default organization and workspace)`);
    return;
  }
  if (r.status === 400 && /only have one organization|already (exists|registered)/i.test(message)) {
    log(`already seeded (${message}); nothing to do`);
    return;
  }
  fail(`register failed: HTTP ${r.status}: ${message}`);
}

main().catch((err) => fail(`error: ${err && err.message ? err.message : err}`));
