import { expect, test } from "@playwright/test";
import { readFileSync } from "node:fs";
import * as path from "node:path";
import { Cluster, root, startCluster } from "./cluster";

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
