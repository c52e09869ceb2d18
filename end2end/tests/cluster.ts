// Starts scripts/cluster.sh (Redis, two release nodes, nginx with deploy/nginx/chatroom.conf)
// on free loopback ports, and opens pages on the node a test wants.
import { Browser, Page, expect } from "@playwright/test";
import { ChildProcess, spawn } from "node:child_process";
import * as path from "node:path";
import { freePort } from "./server";

export const root = path.resolve(__dirname, "..", "..");

export class Cluster {
  constructor(
    private readonly child: ChildProcess,
    /** nginx's address. */
    readonly url: string,
    /** nginx's port; the nodes listen on the next ones. */
    readonly port: number,
  ) {}

  /** Stops everything the script started. */
  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((r) => this.child.once("exit", r));
    process.kill(-this.child.pid!, "SIGTERM");
    await exited;
  }

  /** Opens `pathname` in a fresh browser context on some node; again until it is not `avoid` (bounded). */
  async open(browser: Browser, pathname = "/", avoid?: string): Promise<{ page: Page; node: string }> {
    for (let attempt = 0; attempt < 8; attempt++) {
      const page = await (await browser.newContext()).newPage();
      await page.goto(this.url + pathname);
      await expect(page.locator("#status")).toHaveAttribute("data-state", "online");
      await expect(page.locator("#node")).toContainText("connected to node-");
      const node = ((await page.locator("#node").textContent()) ?? "").replace(/.*connected to /, "").trim();
      if (node !== avoid) return { page, node };
      await page.context().close();
    }
    throw new Error(`every page landed on ${avoid}`);
  }
}

/** Starts a cluster of two nodes behind nginx, with a 3 s grace period (10 s by default). */
export async function startCluster(): Promise<Cluster> {
  const port = await freePort();
  const redisPort = await freePort();
  const child = spawn(
    "bash",
    [path.join(root, "scripts", "cluster.sh"), "--no-build", "--nodes", "2", "--port", `${port}`, "--redis-port", `${redisPort}`],
    {
      cwd: root,
      detached: true,
      stdio: ["ignore", "pipe", "inherit"],
      env: { ...process.env, REDIS_URL: "", CHATROOM_PRESENCE_GRACE_SECS: "3" },
    },
  );
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the cluster did not start within 60 s")), 60_000);
    child.stdout!.on("data", (chunk: Buffer) => {
      const match = /chatroom cluster: (http:\/\/\S+)/.exec(chunk.toString());
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
    child.once("exit", (code) => reject(new Error(`cluster.sh exited with ${code}`)));
  });
  return new Cluster(child, url, port);
}

/** Sets the page's username and waits for the confirmation. */
export async function setName(page: Page, name: string) {
  await page.locator("#username").fill(name);
  await page.getByRole("button", { name: "Set as Username" }).click();
  await expect(page.getByText(`Your username is set to ${name}`, { exact: true })).toBeVisible();
}

/** Sends a line from the message field. */
export async function say(page: Page, text: string) {
  await page.locator("#myMessage").fill(text);
  await page.locator("#myMessage").press("Enter");
}
