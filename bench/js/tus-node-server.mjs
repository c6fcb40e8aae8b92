// The official Node tus server with its file store, as the benchmarks' reference.
// usage: node tus-node-server.mjs PORT DIRECTORY
import http from 'node:http';
import { Server } from '@tus/server';
import { FileStore } from '@tus/file-store';

const [port, directory] = process.argv.slice(2);
const tus = new Server({ path: '/files', datastore: new FileStore({ directory }) });
const server = http.createServer((req, res) => tus.handle(req, res));
server.requestTimeout = 0;
server.listen(Number(port), '127.0.0.1', () => console.log(`listening on ${port}`));
