// A comparison peer for chatroom's benchmark: the replaced service's legacy chat contract
// (docs/legacy-protocol.md) on Socket.IO 4 with @socket.io/redis-adapter, run as several nodes
// on one Redis. The username lives in socket.data, Socket.IO's own per-socket state: the
// idiomatic (and fastest) way on Node, so the peer is not slowed by a Redis read a line.
//
//   PORT=3001 REDIS_URL=redis://127.0.0.1:6379 node server.js

const { createServer } = require("node:http");
const { Server } = require("socket.io");
const { createClient } = require("redis");
const { createAdapter } = require("@socket.io/redis-adapter");

const port = Number(process.env.PORT || 3001);
const redisUrl = process.env.REDIS_URL || "redis://127.0.0.1:6379";

async function main() {
  const pub = createClient({ url: redisUrl });
  const sub = pub.duplicate();
  for (const client of [pub, sub]) client.on("error", (error) => console.error("redis:", error.message));
  await Promise.all([pub.connect(), sub.connect()]);

  const http = createServer((request, response) => {
    response.writeHead(200, { "content-type": "text/plain" });
    response.end("chat peer (Socket.IO on Node)\n");
  });
  const io = new Server(http, { adapter: createAdapter(pub, sub), cors: { origin: "*" } });

  io.on("connection", (socket) => {
    socket.data.username = "";
    socket.emit("message", "Welcome to the chatroom!");
    socket.on("set_username", (name) => {
      socket.data.username = String(name);
      socket.emit("message", `Your username is set to ${name}`);
    });
    socket.on("message", (msg) => {
      if (socket.data.username) {
        io.emit("message", `${socket.data.username}: ${msg}`);
      } else {
        socket.emit("message", "Failed to send the message. Specify a username first.");
      }
    });
    socket.on("disconnect", () => {
      if (socket.data.username) io.emit("message", `${socket.data.username} left the chatroom.`);
    });
  });

  http.listen(port, "127.0.0.1", () => console.log(`listening on 127.0.0.1:${port}`));
  process.on("SIGTERM", () => io.close(() => process.exit(0)));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
