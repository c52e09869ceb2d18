import { Browser, Page, expect, test } from "@playwright/test";
import { ChildProcess, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { freePort } from "./server";

// The seed's own check: two people behind the load balancer, on two different nodes,
// chat both ways, and a leave crosses nodes. The cluster is scripts/cluster.sh
// (Redis, two release nodes, nginx with deploy/nginx/chatroom.conf).
const root = path.resolve(__dirname, "..", "..");
let cluster: ChildProcess;
let url: string;
let port: number;

test.beforeAll(async () => {
  port = await freePort();
  const redisPort = await freePort();
  cluster = spawn(
    "bash",
    [path.join(root, "scripts", "cluster.sh"), "--no-build", "--nodes", "2", "--port", `${port}`, "--redis-port", `${redisPort}`],
    {
      cwd: root,
      detached: true,
      stdio: ["ignore", "pipe", "inherit"],
      // A 3 s grace period (10 s by default) keeps the wait for a leave short.
      env: { ...process.env, REDIS_URL: "", CHATROOM_PRESENCE_GRACE_SECS: "3" },
    },
  );
  url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the cluster did not start within 60 s")), 60_000);
    cluster.stdout!.on("data", (chunk: Buffer) => {
      const match = /chatroom cluster: (http:\/\/\S+)/.exec(chunk.toString());
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
    cluster.once("exit", (code) => reject(new Error(`cluster.sh exited with ${code}`)));
  });
});

test.afterAll(async () => {
  if (cluster.exitCode === null) {
    const exited = new Promise((r) => cluster.once("exit", r));
    process.kill(-cluster.pid!, "SIGTERM");
    await exited;
  }
});

async function openOnNode(browser: Browser, avoid?: string): Promise<{ page: Page; node: string }> {
  // The load balancer picks the node; open again until it is not `avoid` (bounded).
  for (let attempt = 0; attempt < 8; attempt++) {
    const page = await (await browser.newContext()).newPage();
    await page.goto(url + "/");
    await expect(page.locator("#status")).toHaveAttribute("data-state", "online");
    await expect(page.locator("#node")).toContainText("connected to node-");
    const node = ((await page.locator("#node").textContent()) ?? "").replace(/.*connected to /, "").trim();
    if (node !== avoid) return { page, node };
    await page.context().close();
  }
  throw new Error(`every page landed on ${avoid}`);
}

test("two people on two nodes behind nginx chat both ways and see each other leave", async ({ browser }) => {
  const alice = await openOnNode(browser);
  const bob = await openOnNode(browser, alice.node);
  expect(bob.node).not.toBe(alice.node);

  for (const [who, name] of [[alice.page, "alice"], [bob.page, "bob"]] as const) {
    await who.locator("#username").fill(name);
    await who.getByRole("button", { name: "Set as Username" }).click();
    await expect(who.getByText(`Your username is set to ${name}`, { exact: true })).toBeVisible();
  }

  // Each sees both in the list of who is online, wherever they are.
  for (const who of [alice.page, bob.page]) {
    await expect(who.locator("#online li")).toHaveText(["alice", "bob"]);
  }

  await alice.page.locator("#myMessage").fill(`hello from ${alice.node}`);
  await alice.page.locator("#myMessage").press("Enter");
  await expect(bob.page.getByText(`alice: hello from ${alice.node}`, { exact: true })).toBeVisible();

  await bob.page.locator("#myMessage").fill(`hello from ${bob.node}`);
  await bob.page.getByRole("button", { name: "Send" }).click();
  await expect(alice.page.getByText(`bob: hello from ${bob.node}`, { exact: true })).toBeVisible();

  await bob.page.context().close();
  await expect(alice.page.getByText("bob left the chatroom.", { exact: true })).toBeVisible();
  await expect(alice.page.locator("#online li")).toHaveText(["alice"]);
  await alice.page.context().close();
});

test("a page whose node is killed comes back on the other node with what it missed, once", async ({ browser }) => {
  const watcher = await openOnNode(browser);
  const talker = await openOnNode(browser, watcher.node);
  await talker.page.locator("#username").fill("talker");
  await talker.page.getByRole("button", { name: "Set as Username" }).click();
  await expect(talker.page.getByText("Your username is set to talker", { exact: true })).toBeVisible();
  const say = async (text: string) => {
    await talker.page.locator("#myMessage").fill(text);
    await talker.page.locator("#myMessage").press("Enter");
    await expect(talker.page.getByText(`talker: ${text}`, { exact: true })).toBeVisible();
  };
  await say("before the crash");
  await expect(watcher.page.getByText("talker: before the crash", { exact: true })).toBeVisible();

  // kill -9 the watcher's node; the talker (on the other node) keeps talking.
  const nodePid = Number(readFileSync(path.join(root, "target", `cluster-${port}`, `${watcher.node}.pid`), "utf8"));
  process.kill(nodePid, "SIGKILL");
  await expect(watcher.page.locator("#status")).toHaveAttribute("data-state", "reconnecting");
  for (let i = 1; i <= 5; i++) await say(`while you were away ${i}`);

  await expect(watcher.page.locator("#status")).toHaveAttribute("data-state", "online", { timeout: 20_000 });
  await expect(watcher.page.locator("#node")).toContainText(`connected to ${talker.node}`);
  for (let i = 1; i <= 5; i++) {
    await expect(watcher.page.getByText(`talker: while you were away ${i}`, { exact: true })).toHaveCount(1);
  }
  await say("after the return");
  await expect(watcher.page.getByText("talker: after the return", { exact: true })).toHaveCount(1);
  await expect(watcher.page.getByText("talker: before the crash", { exact: true })).toHaveCount(1);
  await watcher.page.context().close();
  await talker.page.context().close();
});
