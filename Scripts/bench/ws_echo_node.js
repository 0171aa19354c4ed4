#!/usr/bin/env node
// WebSocket echo server on Node's ws (Debian node-ws), the peer of ws_echo.sh and idle.py:
//   node ws_echo_node.js PORT     (0: any free port; permessage-deflate off)
// Prints "ws_echo_node listening on ws://127.0.0.1:PORT (...)", echoes every message as it
// came (text or binary) on any path; SIGTERM closes everything (1001) and exits.
'use strict';
let ws;
try { ws = require('/usr/share/nodejs/ws'); } catch (e) { ws = require('ws'); }
const server = new ws.WebSocketServer({ host: '127.0.0.1', port: parseInt(process.argv[2] || '0', 10),
    perMessageDeflate: false, backlog: 4096 });
server.on('connection', (sock) => {
    sock.on('message', (data, isBinary) => sock.send(data, { binary: isBinary }));
    sock.on('error', (err) => console.error(`ws_echo_node: connection error: ${err.message}`));
});
server.on('error', (err) => { console.error(`ws_echo_node: ${err.message}`); process.exit(1); });
server.on('listening', () => {
    let v = '?';
    try { v = require('/usr/share/nodejs/ws/package.json').version; } catch (e) { /* NODE_PATH */ }
    console.log(`ws_echo_node listening on ws://127.0.0.1:${server.address().port} (ws ${v}, node ${process.version})`);
});
const stop = () => {
    for (const c of server.clients) c.close(1001, 'server shutting down');
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 1000).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
