#!/usr/bin/env node
// Run Flowise's database migrations once, under a PostgreSQL advisory lock.
//
// Flowise's main process (`start`) and its workers (`worker`) both run the
// migrations at boot, with no lock: two replicas starting together against a
// new schema race (duplicate tables, a half-applied migration). The
// db-migrate unit runs this before either starts, in every container: the
// first to take the lock applies what is pending, the others wait on the
// lock and then find nothing to do. By the time Flowise itself calls
// runMigrations the schema is current, so that call is a no-op.
//
// Uses Flowise's own DataSource (the same migrations, entities and
// DATABASE_* variables as Flowise). Environment: FLOWSTACK_MODULES (the
// node_modules dir holding flowise), DATABASE_* as for Flowise.
// Exit 0 when the schema is current; 1 otherwise (flowinit retries).
'use strict';

const path = require('path');

const modules = process.env.FLOWSTACK_MODULES || '/opt/flowstack/node_modules';
// A fixed key: every FlowStack container that shares the database shares it.
const LOCK_KEY = 726514239; // "flowstack migrations"

function say(msg) {
  console.log(`db-migrate: ${msg}`);
}

async function main() {
  if ((process.env.DATABASE_TYPE || 'postgres') !== 'postgres') {
    say(`DATABASE_TYPE=${process.env.DATABASE_TYPE}: only PostgreSQL is migrated under a lock; Flowise migrates at start`);
    return;
  }
  const { init, getDataSource } = require(path.join(modules, 'flowise', 'dist', 'DataSource'));
  await init();
  const ds = getDataSource();
  const t0 = Date.now();
  await ds.initialize();
  const lock = ds.createQueryRunner();
  await lock.connect();
  try {
    const w0 = Date.now();
    await lock.query('SELECT pg_advisory_lock($1)', [LOCK_KEY]);
    const waited = (Date.now() - w0) / 1000;
    const applied = await ds.runMigrations({ transaction: 'each' });
    const secs = ((Date.now() - t0) / 1000).toFixed(1);
    const lockNote = waited >= 0.1 ? `, after waiting ${waited.toFixed(1)} s for another container's migrations` : '';
    if (applied.length) say(`applied ${applied.length} migration(s) in ${secs} s${lockNote}`);
    else say(`schema up to date (${ds.migrations.length} migrations, none pending${lockNote})`);
    await lock.query('SELECT pg_advisory_unlock($1)', [LOCK_KEY]);
  } finally {
    await lock.release();
    await ds.destroy();
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    // One line, no stack: the cause is what the operator needs.
    const where = `${process.env.DATABASE_HOST || '?'}:${process.env.DATABASE_PORT || 5432}`;
    say(`cannot migrate the database at ${where}: ${e.code ? e.code + ' ' : ''}${e.message}`);
    process.exit(1);
  }
);
