import { Browser, Page, expect, test } from "@playwright/test";
import { ChatServer, startServer } from "./server";

let server: ChatServer;

test.beforeAll(async () => {
  server = await startServer();
});

test.afterAll(async () => {
  await server.stop();
});

/** Opens the chat in a fresh browser context (its own cookies, like another person). */
async function openChat(browser: Browser): Promise<Page> {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(server.url + "/");
  await expect(page.locator("#status")).toHaveAttribute("data-state", "online");
  return page;
}

async function setName(page: Page, name: string) {
  await page.locator("#username").fill(name);
  await page.getByRole("button", { name: "Set as Username" }).click();
  await expect(page.getByText(`Your username is set to ${name}`, { exact: true })).toBeVisible();
}

/** A line seen live (not in the history a page is shown on joining). */
function live(page: Page, text: string) {
  return page.locator("#messages .line:not(.history) .body").getByText(text, { exact: true });
}

function online(page: Page) {
  return page.locator("#online li");
}

async function say(page: Page, text: string) {
  await page.locator("#myMessage").fill(text);
  await page.locator("#myMessage").press("Enter");
}

function lines(page: Page) {
  return page.locator("#messages .line .body");
}

test("the page connects and shows the state as online", async ({ browser }) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  // The page runs under a strict Content-Security-Policy: nothing of it may be blocked.
  const blocked: string[] = [];
  page.on("console", (msg) => {
    if (/Content Security Policy|Refused to/i.test(msg.text())) blocked.push(msg.text());
  });
  const response = await page.goto(server.url + "/");
  expect(response?.headers()["content-security-policy"]).toContain("'wasm-unsafe-eval'");
  await expect(page).toHaveTitle("Online Chatroom");
  await expect(page.getByRole("heading", { name: "Online Chatroom" })).toBeVisible();
  await expect(page.locator("#status-label")).toHaveText("Online");
  await expect(page.locator("#status")).toHaveAttribute("data-state", "online");
  await expect(lines(page).first()).toHaveText("Welcome to the chatroom!");
  expect(blocked).toEqual([]);
  await context.close();
});

test("two pages chat with each other", async ({ browser }) => {
  const alice = await openChat(browser);
  const bob = await openChat(browser);
  await setName(alice, "alice");
  await setName(bob, "bob");

  // Enter sends.
  await alice.locator("#myMessage").fill("hello bob");
  await alice.locator("#myMessage").press("Enter");
  await expect(bob.getByText("alice: hello bob", { exact: true })).toBeVisible();
  await expect(alice.getByText("alice: hello bob", { exact: true })).toBeVisible();
  await expect(alice.locator("#myMessage")).toHaveValue("");

  // The Send button sends.
  await bob.locator("#myMessage").fill("hi alice");
  await bob.getByRole("button", { name: "Send" }).click();
  await expect(alice.getByText("bob: hi alice", { exact: true })).toBeVisible();
  await expect(bob.getByText("bob: hi alice", { exact: true })).toBeVisible();

  await alice.context().close();
  await bob.context().close();
});

test("sending without a username is refused inline and reaches nobody", async ({ browser }) => {
  const anon = await openChat(browser);
  const watcher = await openChat(browser);
  await anon.locator("#myMessage").fill("who am I");
  await anon.getByRole("button", { name: "Send" }).click();
  await expect(anon.locator("#message-hint")).toHaveText("Failed to send the message. Specify a username first.");
  // The message stays in the field, and nobody received it.
  await expect(anon.locator("#myMessage")).toHaveValue("who am I");
  await anon.waitForTimeout(500);
  await expect(watcher.getByText("who am I")).toHaveCount(0);

  // Bad names are explained inline too, without any alert().
  anon.on("dialog", () => {
    throw new Error("the page opened a dialog");
  });
  await anon.locator("#username").fill("   ");
  await anon.getByRole("button", { name: "Set as Username" }).click();
  await expect(anon.locator("#username-hint")).toHaveText("Username cannot be empty.");
  // The field takes no more than the server's limit, and says so.
  await anon.locator("#username").fill("");
  await anon.locator("#username").pressSequentially("x".repeat(33));
  await expect(anon.locator("#username")).toHaveValue("x".repeat(32));
  await expect(anon.locator("#username-count")).toHaveText("32/32");

  // Once named, the same page can send, and the hints clear.
  await setName(anon, "carol");
  await expect(anon.locator("#username-hint")).toHaveText("");
  await anon.locator("#myMessage").fill("   ");
  await anon.locator("#myMessage").press("Enter");
  await expect(anon.locator("#message-hint")).toHaveText("Message cannot be empty.");
  await anon.locator("#myMessage").fill("now I can");
  await anon.locator("#myMessage").press("Enter");
  await expect(watcher.getByText("carol: now I can", { exact: true })).toBeVisible();
  await expect(anon.locator("#message-hint")).toHaveText("");

  await anon.context().close();
  await watcher.context().close();
});

test("closing a page announces that its user left", async ({ browser }) => {
  const stays = await openChat(browser);
  const leaves = await openChat(browser);
  await setName(stays, "stays");
  await setName(leaves, "leaves");
  await leaves.context().close();
  await expect(stays.getByText("leaves left the chatroom.", { exact: true })).toBeVisible();
  await stays.context().close();
});

test("markup in a message is shown as text, never run", async ({ browser }) => {
  const sender = await openChat(browser);
  const viewer = await openChat(browser);
  await setName(sender, "mallory");
  const evil = `<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"><b>bold</b>`;
  await sender.locator("#myMessage").fill(evil);
  await sender.locator("#myMessage").press("Enter");
  for (const page of [sender, viewer]) {
    await expect(lines(page).last()).toHaveText(`mallory: ${evil}`);
    await expect(page.locator("#messages script, #messages img, #messages b")).toHaveCount(0);
    expect(await page.evaluate(() => (window as any).__pwned)).toBeUndefined();
  }
  await sender.context().close();
  await viewer.context().close();
});

test("a line shows its time, its author apart in a stable colour, and http(s) links only", async ({ browser }) => {
  const sender = await openChat(browser);
  const viewer = await openChat(browser);
  await setName(sender, "linker");
  await say(sender, "docs at https://example.com/guide?x=1, not javascript:alert(1) nor data:text/html,hi");
  for (const page of [sender, viewer]) {
    const line = page.locator("#messages .line.chat").last();
    await expect(line.locator(".author")).toHaveText("linker");
    await expect(line.locator("time")).toHaveAttribute("datetime", /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    const link = line.locator(".text a");
    await expect(link).toHaveCount(1);
    await expect(link).toHaveAttribute("href", "https://example.com/guide?x=1");
    await expect(link).toHaveAttribute("target", "_blank");
    await expect(link).toHaveAttribute("rel", "noopener noreferrer nofollow");
    await expect(page.locator('#messages a[href^="javascript"], #messages a[href^="data"]')).toHaveCount(0);
  }
  // The author's colour is the same on every page; the sender's own lines are marked.
  const colour = async (page: Page) =>
    (await page.locator("#messages .line.chat .author").last().getAttribute("class"))?.match(/author-c\d+/)?.[0];
  expect(await colour(sender)).toMatch(/^author-c\d+$/);
  expect(await colour(viewer)).toBe(await colour(sender));
  await expect(sender.locator("#messages .line.chat").last()).toHaveClass(/\bmine\b/);
  await expect(viewer.locator("#messages .line.chat").last()).not.toHaveClass(/\bmine\b/);

  // A name that reads like a notice is still an author: never styled as a room notice.
  await setName(sender, "bob left the chatroom. x");
  await say(sender, "gotcha");
  const fake = viewer.locator("#messages .line").last();
  await expect(fake).toHaveClass(/\bchat\b/);
  await expect(fake.locator(".author")).toHaveText("bob left the chatroom. x");
  await expect(viewer.locator("#messages .line.room").getByText("bob left the chatroom. x: gotcha")).toHaveCount(0);
  await sender.context().close();
  await viewer.context().close();
});

test("the message box follows the newest line", async ({ browser }) => {
  const page = await openChat(browser);
  await setName(page, "scroller");
  for (let i = 0; i < 40; i++) {
    await page.locator("#myMessage").fill(`line ${i}`);
    await page.locator("#myMessage").press("Enter");
  }
  await expect(lines(page).last()).toHaveText("scroller: line 39");
  const gap = await page.locator("#messages").evaluate((el) => el.scrollHeight - el.scrollTop - el.clientHeight);
  expect(gap).toBeLessThanOrEqual(2);
  await page.context().close();
});

test("a reloaded page shows the recent history, with times, marked as history", async ({ browser }) => {
  const page = await openChat(browser);
  await setName(page, "historian");
  for (const text of ["first words", "second words"]) {
    await page.locator("#myMessage").fill(text);
    await page.locator("#myMessage").press("Enter");
    await expect(page.getByText(`historian: ${text}`, { exact: true })).toBeVisible();
  }
  await page.reload();
  await expect(page.locator("#status")).toHaveAttribute("data-state", "online");
  for (const text of ["first words", "second words"]) {
    const line = page.locator("#messages .line.history", { hasText: `historian: ${text}` });
    await expect(line).toHaveCount(1);
    // In the reader's locale: en-US, a 12 h clock.
    await expect(line.locator("time")).toHaveText(/^\d{1,2}:\d\d\s?[AP]M$/);
  }
  await expect(page.getByText("Welcome to the chatroom!", { exact: true })).toHaveCount(1);
  await page.context().close();
});

test("who is online is listed, and the list follows joins, renames and leaves", async ({ browser }) => {
  const alice = await openChat(browser);
  const bob = await openChat(browser);
  await setName(alice, "alice");
  await setName(bob, "bob");
  for (const page of [alice, bob]) {
    await expect(online(page)).toHaveText(["alice", "bob"]);
  }
  await expect(alice.locator("#online li.me")).toHaveText("alice");
  await expect(live(alice, "bob joined the chatroom.")).toBeVisible();

  await setName(bob, "robert");
  await expect(alice.getByText("bob is now known as robert.", { exact: true })).toBeVisible();
  await expect(online(alice)).toHaveText(["alice", "robert"]);
  await expect(alice.locator("#online-count")).toHaveText("2");

  // A newcomer sees the list as it is now.
  const carol = await openChat(browser);
  await expect(online(carol)).toHaveText(["alice", "robert"]);

  await bob.context().close();
  await expect(live(alice, "robert left the chatroom.")).toBeVisible();
  await expect(online(alice)).toHaveText(["alice"]);
  await expect(online(carol)).toHaveText(["alice"]);
  await alice.context().close();
  await carol.context().close();
});

test("a reload is silent for the others and keeps the name", async ({ browser }) => {
  const watcher = await openChat(browser);
  const page = await openChat(browser);
  await setName(page, "reloader");
  await expect(online(watcher)).toHaveText(["reloader"]);
  await page.reload();
  await expect(page.locator("#status")).toHaveAttribute("data-state", "online");
  // Still named (the list marks it as this page's user), so it can chat, listed once.
  await expect(page.locator("#online li.me")).toHaveText("reloader");
  await say(page, "still me");
  await expect(watcher.getByText("reloader: still me", { exact: true })).toBeVisible();
  await expect(online(page)).toHaveText(["reloader"]);
  // Longer than the grace period (3 s here): no leave and no second join were announced.
  await watcher.waitForTimeout(4_000);
  await expect(watcher.getByText("reloader left the chatroom.", { exact: true })).toHaveCount(0);
  await expect(watcher.getByText("reloader joined the chatroom.", { exact: true })).toHaveCount(1);
  await expect(online(watcher)).toHaveText(["reloader"]);
  await watcher.context().close();
  await page.context().close();
});

test("two tabs of one browser are one user, with one name and one entry", async ({ browser }) => {
  const watcher = await openChat(browser);
  const context = await browser.newContext();
  const tab1 = await context.newPage();
  await tab1.goto(server.url + "/");
  await setName(tab1, "twin");
  const tab2 = await context.newPage();
  await tab2.goto(server.url + "/");
  await expect(tab2.locator("#status")).toHaveAttribute("data-state", "online");
  await expect(online(watcher)).toHaveText(["twin"]);
  await expect(online(tab2)).toHaveText(["twin"]);
  await expect(tab2.locator("#online li.me")).toHaveText("twin");

  // The second tab never set a name, yet it is twin; a rename there renames both.
  await say(tab2, "from tab two");
  await expect(watcher.getByText("twin: from tab two", { exact: true })).toBeVisible();
  await setName(tab2, "twins");
  await expect(tab1.locator("#online li.me")).toHaveText("twins");
  await say(tab1, "from tab one");
  await expect(watcher.getByText("twins: from tab one", { exact: true })).toBeVisible();

  // Closing one tab is not leaving.
  await tab1.close();
  await watcher.waitForTimeout(4_000);
  await expect(watcher.getByText("twins left the chatroom.", { exact: true })).toHaveCount(0);
  await expect(online(watcher)).toHaveText(["twins"]);
  await context.close();
  await expect(watcher.getByText("twins left the chatroom.", { exact: true })).toBeVisible();
  await watcher.context().close();
});

test("a name someone else has is refused inline", async ({ browser }) => {
  const first = await openChat(browser);
  const second = await openChat(browser);
  await setName(first, "Unique");
  await second.locator("#username").fill(" UNIQUE ");
  await second.getByRole("button", { name: "Set as Username" }).click();
  await expect(second.locator("#username-hint")).toHaveText('Username "UNIQUE" is already taken. Choose another one.');
  await say(second, "may I?");
  await expect(second.locator("#message-hint")).toHaveText("Failed to send the message. Specify a username first.");
  await first.context().close();
  await second.context().close();
});
