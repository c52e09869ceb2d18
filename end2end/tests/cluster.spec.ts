import { expect, test } from "@playwright/test";
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { Cluster, root, say, setName, startCluster } from "./cluster";

// The seed's own check: two people behind the load balancer, on two different nodes,
// chat both ways, and a leave crosses nodes.
let cluster: Cluster;

test.beforeAll(async () => {
  cluster = await startCluster();
});

test.afterAll(async () => {
  await cluster.stop();
});

test("two people on two nodes behind nginx chat both ways and see each other leave", async ({ browser }) => {
  const alice = await cluster.open(browser);
  const bob = await cluster.open(browser, "/", alice.node);
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

test("each node's status page shows both nodes; nginx does not serve it", async ({ browser }) => {
  const { page, node } = await cluster.open(browser);
  await page.locator("#username").fill("watched");
  await page.locator("#username").press("Enter");
  await expect(page.getByText("Your username is set to watched", { exact: true })).toBeVisible();
  for (const i of [1, 2]) {
    const status = await page.context().newPage();
    // The nodes listen on the ports after nginx's and serve the status on their own address.
    await status.goto(`http://127.0.0.1:${cluster.port + i}/status`);
    await expect(status.locator("#this-node")).toHaveText(`node-${i}`);
    await expect(status.locator("#node-count")).toHaveText("2");
    await expect(status.locator("#nodes tbody th")).toHaveText(["node-1", "node-2"]);
    await expect(status.locator("#nodes tbody tr").filter({ hasText: node })).toContainText("serving");
    await expect(status.locator("#users-online")).not.toHaveText("0");
    await expect(status.locator("#streams tbody th").first()).toHaveText("#lobby");
    const json = await (await status.request.get(`http://127.0.0.1:${cluster.port + i}/status.json`)).json();
    expect(json.nodes.map((n: { node: string }) => n.node)).toEqual(["node-1", "node-2"]);
    await status.close();
  }
  for (const hidden of ["/status", "/status.json", "/metrics"]) {
    expect((await page.request.get(cluster.url + hidden)).status()).toBe(404);
  }
  await page.context().close();
});

test("through nginx a page reads back to the room's beginning and counts lines while hidden", async ({ browser }) => {
  const reader = await cluster.open(browser);
  const writer = await cluster.open(browser, "/", reader.node);
  await setName(reader.page, "reader");
  await setName(writer.page, "writer");
  await reader.page.locator("#load-older").click();
  await expect(reader.page.locator("#earlier")).toHaveText("This is the beginning of #lobby.");
  await reader.page.evaluate(() => {
    Object.defineProperty(document, "visibilityState", { value: "hidden", configurable: true });
    document.dispatchEvent(new Event("visibilitychange"));
  });
  await say(writer.page, "@reader across nodes");
  await expect(reader.page).toHaveTitle("(1) Online Chatroom");
  await expect(reader.page.locator("#messages .line.mention .text")).toHaveText("@reader across nodes");
  await reader.page.context().close();
  await writer.page.context().close();
});

test("a page whose node is killed comes back on the other node with what it missed, once", async ({ browser }) => {
  const watcher = await cluster.open(browser);
  const talker = await cluster.open(browser, "/", watcher.node);
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
  const nodePid = Number(readFileSync(path.join(root, "target", `cluster-${cluster.port}`, `${watcher.node}.pid`), "utf8"));
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
