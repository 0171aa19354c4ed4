#!/usr/bin/env node
// WebSocket echo server on Node's `ws` (Debian's node-ws), the reference for
// Scripts/bench/ws_echo.sh and ws_idle.py.
//
//   node Scripts/bench/ws_echo_node.js PORT [--deflate] [--max-message BYTES]
//
// Listens on 127.0.0.1:PORT (0: any free port) and prints one line when it listens:
//   ws_echo_node listening on ws://127.0.0.1:PORT (ws VERSION, node VERSION, deflate on|off)
// Every text message comes back as text and every binary message as binary, on any path.
// permessage-deflate is off unless --deflate (then ws's defaults: threshold 1024 B).
// SIGTERM / SIGINT close the server and every connection (1001) and exit.
'use strict';

let ws;
try {
    ws = require('/usr/share/nodejs/ws');
} catch (e) {
    ws = require('ws'); // NODE_PATH or a local install
}
const wsVersion = (() => {
    try { return require('/usr/share/nodejs/ws/package.json').version; } catch (e) { return '?'; }
})();

const args = process.argv.slice(2);
let port = null;
let deflate = false;
let maxPayload = 100 * 1024 * 1024; // ws's default
for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--deflate') deflate = true;
    else if (a === '--max-message') maxPayload = parseInt(args[++i], 10);
    else if (/^\d+$/.test(a) && port === null) port = parseInt(a, 10);
    else {
        console.error(`ws_echo_node: unknown argument '${a}'`);
        console.error('usage: node ws_echo_node.js PORT [--deflate] [--max-message BYTES]');
        process.exit(2);
    }
}
if (port === null) port = 0;

const server = new ws.WebSocketServer({
    host: '127.0.0.1',
    port,
    perMessageDeflate: deflate,
    maxPayload,
    clientTracking: true,
    backlog: 4096,
});

server.on('connection', (sock) => {
    sock.on('message', (data, isBinary) => {
        sock.send(data, { binary: isBinary });
    });
    sock.on('error', (err) => {
        console.error(`ws_echo_node: connection error: ${err.message}`);
    });
});

server.on('error', (err) => {
    console.error(`ws_echo_node: ${err.message}`);
    process.exit(1);
});

server.on('listening', () => {
    const addr = server.address();
    console.log(`ws_echo_node listening on ws://127.0.0.1:${addr.port} ` +
        `(ws ${wsVersion}, node ${process.version}, deflate ${deflate ? 'on' : 'off'})`);
});

function stop() {
    for (const c of server.clients) c.close(1001, 'server shutting down');
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
