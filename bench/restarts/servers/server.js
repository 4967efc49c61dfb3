// SPDX-License-Identifier: BSD-3-Clause
// The benchmark's Node server: socket-activated (fd 3) or binding PORT; drains on SIGTERM.
const http = require('http');
const server = http.createServer((req, res) => {
    res.writeHead(200, {'Content-Type': 'text/plain', 'Content-Length': 3});
    res.end('ok\n');
});
if (process.env.LISTEN_FDS)
    server.listen({fd: 3});
else
    server.listen({port: Number(process.env.PORT), host: '127.0.0.1'});
// server.close() stops accepting and, since Node 19, closes idle keep-alive connections.
process.on('SIGTERM', () => server.close(() => process.exit(0)));
