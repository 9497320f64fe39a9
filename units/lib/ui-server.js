#!/usr/bin/env node
// Static file server for the Flowise UI build (flowise-ui/build), with an
// index.html fallback so that deep links (/chatflows, /canvas/<id>) load the
// single-page app. Dependency-free: node's http, fs and path only.
//
// Environment: UI_ROOT (the build dir), UI_HOST (default 127.0.0.1),
// UI_PORT (default 8080).
'use strict';

const http = require('http');
const fs = require('fs');
const path = require('path');

const root = path.resolve(process.env.UI_ROOT || 'build');
const host = process.env.UI_HOST || '127.0.0.1';
const port = Number(process.env.UI_PORT || 8080);
const indexFile = path.join(root, 'index.html');

if (!fs.existsSync(indexFile)) {
  console.error(`ui-server: ${indexFile} not found (is UI_ROOT the flowise-ui build dir?)`);
  process.exit(1);
}

const types = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.webmanifest': 'application/manifest+json',
  '.txt': 'text/plain; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.gif': 'image/gif',
  '.webp': 'image/webp',
  '.ico': 'image/x-icon',
  '.woff': 'font/woff',
  '.woff2': 'font/woff2',
  '.ttf': 'font/ttf',
  '.otf': 'font/otf',
  '.eot': 'application/vnd.ms-fontobject',
  '.wasm': 'application/wasm',
  '.mp3': 'audio/mpeg',
  '.mp4': 'video/mp4',
};

// Resolve a URL path to a regular file inside root, or null.
function lookup(urlPath) {
  let decoded;
  try {
    decoded = decodeURIComponent(urlPath);
  } catch {
    return null;
  }
  if (decoded.includes('\0')) return null;
  const file = path.resolve(root, '.' + path.posix.normalize('/' + decoded));
  if (file !== root && !file.startsWith(root + path.sep)) return null;
  try {
    const st = fs.statSync(file);
    if (st.isFile()) return { file, st };
    if (st.isDirectory()) {
      const idx = path.join(file, 'index.html');
      const ist = fs.statSync(idx);
      if (ist.isFile()) return { file: idx, st: ist };
    }
  } catch {
    // not found
  }
  return null;
}

function send(req, res, status, found, cache) {
  const type = types[path.extname(found.file).toLowerCase()] || 'application/octet-stream';
  const etag = `"${found.st.size.toString(16)}-${Math.floor(found.st.mtimeMs).toString(16)}"`;
  const headers = {
    'Content-Type': type,
    'Cache-Control': cache,
    'ETag': etag,
    'Last-Modified': found.st.mtime.toUTCString(),
    'X-Content-Type-Options': 'nosniff',
  };
  if (status === 200 && req.headers['if-none-match'] === etag) {
    res.writeHead(304, headers);
    res.end();
    return;
  }
  headers['Content-Length'] = found.st.size;
  res.writeHead(status, headers);
  if (req.method === 'HEAD') {
    res.end();
    return;
  }
  const stream = fs.createReadStream(found.file);
  stream.on('error', () => res.destroy());
  stream.pipe(res);
}

const server = http.createServer((req, res) => {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { 'Allow': 'GET, HEAD', 'Content-Type': 'text/plain' });
    res.end('method not allowed\n');
    return;
  }
  const urlPath = (req.url || '/').split('?')[0].split('#')[0];
  const found = lookup(urlPath);
  if (found && found.file !== indexFile) {
    // Vite puts content-hashed files under /assets/: cache them for good.
    const immutable = urlPath.startsWith('/assets/');
    send(req, res, 200, found, immutable ? 'public, max-age=31536000, immutable' : 'public, max-age=3600');
    return;
  }
  // A missing file that looks like a static asset is a real 404; anything
  // else is a client-side route of the SPA and gets index.html.
  if (!found && (urlPath.startsWith('/assets/') || /\.[a-z0-9]{1,8}$/i.test(urlPath))) {
    res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' });
    res.end('not found\n');
    return;
  }
  let index;
  try {
    index = { file: indexFile, st: fs.statSync(indexFile) };
  } catch {
    res.writeHead(500, { 'Content-Type': 'text/plain' });
    res.end('index.html missing\n');
    return;
  }
  send(req, res, 200, index, 'no-cache');
});

server.keepAliveTimeout = 65000;
server.on('error', (err) => {
  console.error(`ui-server: ${err.message}`);
  process.exit(1);
});
server.listen(port, host, () => {
  console.log(`ui-server: serving ${root} on http://${host}:${port}`);
});

function stop(sig) {
  console.log(`ui-server: ${sig}, closing`);
  server.close(() => process.exit(0));
  server.closeIdleConnections && server.closeIdleConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => stop('SIGTERM'));
process.on('SIGINT', () => stop('SIGINT'));
