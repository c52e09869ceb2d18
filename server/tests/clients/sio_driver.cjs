// A Socket.IO client driven over stdin/stdout, so that Rust tests can script the
// official JavaScript client (socket.io-client) exactly like python-socketio.
//
//   node sio_driver.cjs URL TRANSPORT [AUTH]   (TRANSPORT: websocket | polling | upgrade;
//                                              AUTH: JSON for the CONNECT auth payload)
//
// stdin, one JSON object per line:
//   {"op":"emit","event":NAME,"args":[...]}   socket.emit(NAME, ...args)
//   {"op":"send","args":[...]}                socket.send(...args)
//   {"op":"close"}                            socket.disconnect(), then exit
// stdout, one JSON object per line:
//   {"type":"connected","sid":ID,"transport":NAME}
//   {"type":"event","event":NAME,"args":[...]}
//   {"type":"disconnected","reason":TEXT}
//   {"type":"error","message":TEXT}
const { io } = require("socket.io-client");
const readline = require("readline");

const [url, mode, auth] = process.argv.slice(2);
const transports = { websocket: ["websocket"], polling: ["polling"], upgrade: ["polling", "websocket"] }[mode];
if (!url || !transports) {
  console.error("usage: sio_driver.cjs URL websocket|polling|upgrade");
  process.exit(2);
}

const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const options = { transports, reconnection: false, upgrade: mode === "upgrade", timeout: 10000 };
if (auth) options.auth = JSON.parse(auth);
const socket = io(url, options);

socket.on("connect", () => out({ type: "connected", sid: socket.id, transport: socket.io.engine.transport.name }));
socket.on("connect_error", (err) => out({ type: "error", message: String(err && err.message) }));
socket.on("disconnect", (reason) => out({ type: "disconnected", reason }));
socket.onAny((event, ...args) => out({ type: "event", event, args }));

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  if (!line.trim()) return;
  const cmd = JSON.parse(line);
  if (cmd.op === "emit") socket.emit(cmd.event, ...cmd.args);
  else if (cmd.op === "send") socket.send(...cmd.args);
  else if (cmd.op === "close") {
    socket.disconnect();
    setTimeout(() => process.exit(0), 50);
  } else out({ type: "error", message: "unknown op " + cmd.op });
});
rl.on("close", () => {
  socket.disconnect();
  setTimeout(() => process.exit(0), 50);
});
