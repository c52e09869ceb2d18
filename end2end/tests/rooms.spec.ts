import { Page, expect, test } from "@playwright/test";
import { Cluster, say, setName, startCluster } from "./cluster";

// Rooms in the page, on two nodes behind nginx: `/r/{room}` opens a room, the room list
// counts who is in each and badges what is unread, and switching rooms keeps the page
// (no reload) and each room's scroll position.
let cluster: Cluster;

test.beforeAll(async () => {
  cluster = await startCluster();
});

test.afterAll(async () => {
  await cluster.stop();
});

function room(page: Page, name: string) {
  return page.locator(`#rooms li.room[data-room="${name}"]`);
}

function log(page: Page) {
  return page.locator("#messages .line .body");
}

test("people in rooms on two nodes: addresses, room list, unread badges and scroll positions", async ({ browser }) => {
  const alice = await cluster.open(browser, "/r/ops");
  const bob = await cluster.open(browser, "/", alice.node);
  expect(bob.node).not.toBe(alice.node);
  await expect(alice.page.locator("#room-title")).toHaveText("#ops");
  await expect(bob.page.locator("#room-title")).toHaveText("#lobby");
  await setName(alice.page, "alice");
  await setName(bob.page, "bob");

  // bob opens ops by name: the address changes, the page does not reload.
  await bob.page.evaluate(() => ((window as any).__samePage = true));
  await bob.page.locator("#room-name").fill("ops");
  await bob.page.getByRole("button", { name: "Open", exact: true }).click();
  await expect(bob.page.locator("#room-title")).toHaveText("#ops");
  expect(new URL(bob.page.url()).pathname).toBe("/r/ops");
  expect(await bob.page.evaluate(() => (window as any).__samePage)).toBe(true);
  for (const page of [alice.page, bob.page]) {
    await expect(page.locator("#online li")).toHaveText(["alice", "bob"]);
  }
  await say(alice.page, "deploy at 5");
  await expect(bob.page.getByText("alice: deploy at 5", { exact: true })).toBeVisible();

  // The room list counts who is in each room, across nodes (reported every few seconds).
  await expect(room(alice.page, "ops").locator(".room-online")).toHaveText("2", { timeout: 30_000 });
  await expect(room(alice.page, "lobby").locator(".room-online")).toHaveText("1", { timeout: 30_000 });

  // bob fills the lobby's log, scrolls it to the top, and looks at ops meanwhile.
  await room(bob.page, "lobby").getByRole("link").click();
  await expect(bob.page.locator("#room-title")).toHaveText("#lobby");
  expect(new URL(bob.page.url()).pathname).toBe("/");
  for (let i = 0; i < 30; i++) await say(bob.page, `lobby line ${i}`);
  await expect(log(bob.page).last()).toHaveText("bob: lobby line 29");
  await bob.page.locator("#messages").evaluate((el) => (el.scrollTop = 0));

  // Lines of ops while bob reads the lobby: an unread badge, nothing in the lobby's log.
  await say(alice.page, "while you read the lobby");
  await say(alice.page, "and another");
  await expect(room(bob.page, "ops").locator(".unread")).toHaveText("2");
  await expect(bob.page.getByText("alice: while you read the lobby", { exact: true })).toHaveCount(0);

  // To ops and back: ops shows its lines and clears its badge; the lobby is where it was.
  await room(bob.page, "ops").getByRole("link").click();
  await expect(bob.page.getByText("alice: and another", { exact: true })).toBeVisible();
  await expect(room(bob.page, "ops").locator(".unread")).toHaveCount(0);
  await expect(bob.page.getByText("bob: lobby line 29", { exact: true })).toHaveCount(0);
  await bob.page.goBack();
  await expect(bob.page.locator("#room-title")).toHaveText("#lobby");
  await expect(log(bob.page).last()).toHaveText("bob: lobby line 29");
  expect(await bob.page.locator("#messages").evaluate((el) => el.scrollTop)).toBe(0);
  expect(await bob.page.evaluate(() => (window as any).__samePage)).toBe(true);

  // A room name that is not one is explained, and nothing is opened.
  await bob.page.locator("#room-name").fill("Not A Room");
  await bob.page.getByRole("button", { name: "Open", exact: true }).click();
  await expect(bob.page.locator("#message-hint")).toHaveText("Room name can only hold lower-case letters, digits, - and _.");

  // Leaving ops: alice sees it there; bob no longer lists it as his.
  await room(bob.page, "ops").getByRole("button", { name: "Leave ops" }).click();
  await expect(alice.page.getByText("bob left the chatroom.", { exact: true })).toBeVisible();
  await expect(alice.page.locator("#online li")).toHaveText(["alice"]);
  await expect(room(bob.page, "ops").getByRole("button", { name: "Leave ops" })).toHaveCount(0);

  // A reload of a room's address opens that room again.
  await alice.page.reload();
  await expect(alice.page.locator("#status")).toHaveAttribute("data-state", "online");
  await expect(alice.page.locator("#room-title")).toHaveText("#ops");
  await expect(alice.page.getByText("alice: deploy at 5", { exact: true })).toBeVisible();
  await alice.page.context().close();
  await bob.page.context().close();
});
