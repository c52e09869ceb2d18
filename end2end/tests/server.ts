// Starts the release build of the chatroom node on a free loopback port, as a user would
// run it: `target/release/server --addr 127.0.0.1:PORT` from the repository root.
import { ChildProcess, spawn } from "node:child_process";
import * as net from "node:net";
import * as path from "node:path";

const root = path.resolve(__dirname, "..", "..");
const binary = process.env.CHATROOM_SERVER_BIN ?? path.join(root, "target", "release", "server");

export class ChatServer {
  private child?: ChildProcess;
  constructor(
    readonly port: number,
    private readonly extraArgs: string[] = [],
  ) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Starts the node and waits until it serves the page. */
  async start(): Promise<void> {
    // A 3 s grace period (10 s by default) keeps the tests that wait for a leave short.
    const args = [
      "--addr",
      `127.0.0.1:${this.port}`,
      "--shutdown-timeout-secs",
      "2",
      "--presence-grace-secs",
      "3",
      ...this.extraArgs,
    ];
    const child = spawn(binary, args, {
      cwd: root,
      stdio: ["ignore", "inherit", "inherit"],
    });
    this.child = child;
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      if (child.exitCode !== null) throw new Error(`${binary} exited with ${child.exitCode}`);
      try {
        const res = await fetch(this.url + "/");
        if (res.ok) return;
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`${binary} did not serve ${this.url} within 15 s`);
  }

  /** Stops the node: SIGTERM (graceful) or SIGKILL (a crash). */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill(signal);
    await exited;
  }
}

/** A port that was free a moment ago. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/** Starts a node on a free port, with these flags besides the usual ones. */
export async function startServer(extraArgs: string[] = []): Promise<ChatServer> {
  const server = new ChatServer(await freePort(), extraArgs);
  await server.start();
  return server;
}
