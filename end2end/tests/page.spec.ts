// The page as people use it: reading back and new lines, the unread title, the composer,
// times, themes and the phone layout. Accessibility and screenshots: look.spec.ts.
import { Browser, BrowserContextOptions, Page, expect, test } from "@playwright/test";
import { ChatServer, startServer } from "./server";
import { DESKTOP, PHONE, person, sendAll, setName } from "./people";

let server: ChatServer;

test.beforeAll(async () => {
  // A short history, so that a page has older lines to load.
  server = await startServer(["--history-len", "30"]);
});

test.afterAll(async () => {
  await server.stop();
});

async function openChat(browser: Browser, options: BrowserContextOptions = {}): Promise<Page> {
  const context = await browser.newContext(options);
  const page = await context.newPage();
  await page.goto(server.url + "/");
  await expect(page.locator("#status")).toHaveAttribute("data-state", "online");
  return page;
}


async function say(page: Page, text: string) {
  await page.locator("#myMessage").fill(text);
  await page.locator("#myMessage").press("Enter");
}



/** Makes the page hidden or visible, as switching tabs does. */
async function setHidden(page: Page, hidden: boolean) {
  await page.evaluate((hidden) => {
    Object.defineProperty(document, "visibilityState", { value: hidden ? "hidden" : "visible", configurable: true });
    document.dispatchEvent(new Event("visibilitychange"));
  }, hidden);
}

function line(page: Page, text: string) {
  return page.locator("#messages .line .text").getByText(text, { exact: true });
}

async function atEnd(page: Page): Promise<boolean> {
  return page.locator("#messages").evaluate((log) => log.scrollHeight - log.scrollTop - log.clientHeight <= 24);
}

test("reading back keeps the place, new lines wait behind a button, older lines load to the beginning", async ({
  browser,
}) => {
  // 80 lines before the page opens: it is shown the newest 30.
  const writer = await person(server, "writer");
  await sendAll(
    writer,
    "writer",
    Array.from({ length: 40 }, (_, n) => `early ${n}`),
  );
  const second = await person(server, "second");
  await sendAll(
    second,
    "second",
    Array.from({ length: 40 }, (_, n) => `later ${n}`),
  );
  const page = await openChat(browser, { viewport: DESKTOP });
  await setName(page, "reader");
  await expect(line(page, "later 39")).toBeVisible();
  await expect(line(page, "later 9")).toHaveCount(0);
  expect(await atEnd(page)).toBe(true);

  // Reading back: new lines do not move the view; a button counts them.
  // Away from the end, and from the top (which would load older lines).
  await page.locator("#messages").evaluate((log) => (log.scrollTop = 150));
  await page.waitForTimeout(200);
  expect(await atEnd(page)).toBe(false);
  const top = await page.locator("#messages").evaluate((log) => log.scrollTop);
  await sendAll(second, "second", ["new one", "new two", "new three"]);
  await expect(page.locator("#new-lines")).toHaveText("3 new messages ↓");
  expect(await page.locator("#messages").evaluate((log) => log.scrollTop)).toBe(top);
  await page.locator("#new-lines").click();
  await expect(page.locator("#new-lines")).toBeHidden();
  await expect.poll(() => atEnd(page)).toBe(true);
  // At the end, new lines keep the view there.
  await sendAll(second, "second", ["followed"]);
  await expect(line(page, "followed")).toBeInViewport();
  await expect(page.locator("#new-lines")).toBeHidden();

  // Scrolling to the top loads older lines above, again and again until the beginning.
  for (let i = 0; i < 8; i++) {
    if ((await page.locator("#earlier").textContent())?.includes("beginning")) break;
    await page.locator("#messages").evaluate((log) => (log.scrollTop = 0));
    await page.waitForTimeout(600);
  }
  await expect(page.locator("#earlier")).toHaveText("This is the beginning of #lobby.");
  await expect(line(page, "early 0")).toHaveCount(1);
  await expect(page.locator("#messages .line.room").first()).toHaveText(/writer joined the chatroom\./);
  // Nothing twice: each early line once.
  await expect(line(page, "early 29")).toHaveCount(1);
  await expect(page.locator("#messages .day").first()).toHaveText("Today");
  writer.close();
  second.close();
  await page.context().close();
});

test("older lines come in above without moving the line being read", async ({ browser }) => {
  const seeder = await person(server, "seeder");
  await sendAll(
    seeder,
    "seeder",
    Array.from({ length: 45 }, (_, n) => `seed ${n}`),
  );
  const page = await openChat(browser, { viewport: DESKTOP });
  await setName(page, "steady");
  const log = page.locator("#messages");
  // The first line shown, and where it is, before the older lines come.
  const first = page.locator("#messages .line.chat").first();
  const firstText = await first.locator(".text").textContent();
  await log.evaluate((log) => (log.scrollTop = 100));
  await page.waitForTimeout(200); // the page sees where it is scrolled
  const y = (await first.boundingBox())!.y;
  // Clicked where it is: a click that scrolled to it would move the view itself.
  await page.locator("#load-older").dispatchEvent("click");
  await expect(page.locator("#earlier")).not.toHaveText("Loading older messages…");
  const again = page.locator("#messages .line.chat .text").getByText(firstText!, { exact: true }).first();
  const moved = Math.abs((await again.boundingBox())!.y - y);
  expect(moved).toBeLessThan(4);
  seeder.close();
  await page.context().close();
});

test("the title counts lines that come while the tab is hidden, and mentions are marked", async ({ browser }) => {
  const page = await openChat(browser);
  await setName(page, "ann");
  await expect(page).toHaveTitle("Online Chatroom");
  await setHidden(page, true);
  const bob = await person(server, "bob");
  await sendAll(bob, "bob", ["are you there?", "@ann look at this"]);
  await expect(page).toHaveTitle("(2) Online Chatroom");
  await expect(page.locator("#messages .line.mention")).toHaveCount(1);
  await expect(page.locator("#messages .line.mention .text")).toHaveText("@ann look at this");
  await setHidden(page, false);
  await expect(page).toHaveTitle("Online Chatroom");
  // Notifications only after the person asks for them.
  await expect(page.locator("#ask-notifications")).toBeVisible();
  bob.close();
  await page.context().close();
});

test("a mention while hidden raises a desktop notification once they are allowed", async ({ browser }) => {
  const context = await browser.newContext();
  // Headless Chromium shows no notifications: the page's calls are recorded instead.
  await context.addInitScript(() => {
    const shown: string[] = [];
    (window as unknown as { shown: string[] }).shown = shown;
    class Recorded {
      static permission = "granted";
      static requestPermission() {
        return Promise.resolve("granted");
      }
      constructor(title: string, options?: { body?: string }) {
        shown.push(`${title} | ${options?.body ?? ""}`);
      }
    }
    Object.defineProperty(window, "Notification", { value: Recorded, configurable: true });
  });
  const page = await context.newPage();
  await page.goto(server.url + "/");
  await expect(page.locator("#status")).toHaveAttribute("data-state", "online");
  await setName(page, "nora");
  // Allowed already: no button to ask.
  await expect(page.locator("#ask-notifications")).toHaveCount(0);
  await setHidden(page, true);
  const bob = await person(server, "bob");
  await sendAll(bob, "bob", ["no mention here", "nora, are you around?"]);
  await expect(page).toHaveTitle("(2) Online Chatroom");
  await expect.poll(() => page.evaluate(() => (window as unknown as { shown: string[] }).shown)).toEqual([
    "bob mentioned you | nora, are you around?",
  ]);
  bob.close();
  await context.close();
});

test("reduced motion turns the page's transitions off", async ({ browser }) => {
  const page = await openChat(browser, { reducedMotion: "reduce" });
  await expect(page.locator("#new-lines")).toHaveCSS("transition-duration", "0s");
  await page.context().close();
  const moving = await openChat(browser);
  await expect(moving.locator("#new-lines")).toHaveCSS("transition-duration", "0.2s");
  await moving.context().close();
});

test("the composer: focus after the name, the server's limits, counters, the name remembered", async ({ browser }) => {
  const page = await openChat(browser);
  await expect(page.locator("#username")).toHaveAttribute("maxlength", "32");
  await expect(page.locator("#myMessage")).toHaveAttribute("maxlength", "2000");
  await expect(page.getByLabel("Your name")).toBeVisible();
  await expect(page.getByLabel("Message", { exact: true })).toBeVisible();
  await setName(page, "zoe");
  await expect(page.locator("#myMessage")).toBeFocused();
  await expect(page.locator("#message-count")).toHaveCount(0);
  await page.locator("#myMessage").fill("x".repeat(1700));
  await expect(page.locator("#message-count")).toHaveText("1700/2000");
  await page.locator("#myMessage").fill("x".repeat(2000));
  await expect(page.locator("#message-count")).toHaveClass(/full/);
  await page.keyboard.type("more");
  await expect(page.locator("#myMessage")).toHaveValue("x".repeat(2000));
  await say(page, "x".repeat(2000));
  await expect(page.locator("#myMessage")).toHaveValue("");
  // A new visit offers the name chosen last.
  const again = await page.context().newPage();
  await again.goto(server.url + "/");
  await expect(again.locator("#status")).toHaveAttribute("data-state", "online");
  await expect(again.locator("#username")).toHaveValue("zoe");
  await page.context().close();
});

test("times follow the reader's locale and clock", async ({ browser }) => {
  for (const [locale, pattern] of [
    ["en-US", /^\d{1,2}:\d{2}\s?[AP]M$/],
    ["en-GB", /^\d{2}:\d{2}$/],
  ] as const) {
    const page = await openChat(browser, { locale });
    await setName(page, `clock${locale.replace("-", "")}`);
    await expect(page.locator("#messages .line.room .time").last()).toHaveText(pattern);
    await page.context().close();
  }
});

test("dark and light themes follow the system", async ({ browser }) => {
  for (const [colorScheme, background] of [
    ["light", "rgb(255, 255, 255)"],
    ["dark", "rgb(13, 17, 23)"],
  ] as const) {
    const page = await openChat(browser, { colorScheme });
    await setName(page, `theme${colorScheme}`);
    await expect(page.locator("#chat")).toHaveCSS("background-color", background);
    await page.context().close();
  }
});

test("on a phone the log fills the screen and the lists open from the header", async ({ browser }) => {
  const page = await openChat(browser, { viewport: PHONE, isMobile: true, hasTouch: true });
  await setName(page, "phone");
  const log = (await page.locator("#messages").boundingBox())!;
  expect(log.height).toBeGreaterThan(PHONE.height / 2);
  const composer = (await page.locator(".composer").boundingBox())!;
  expect(composer.y + composer.height).toBeLessThanOrEqual(PHONE.height);
  await expect(page.locator("#myMessage")).toHaveCSS("font-size", "16px");
  await expect(page.locator("#presence")).toBeHidden();
  await expect(page.locator("#rooms")).toBeHidden();
  await page.locator("#toggle-people").click();
  await expect(page.locator("#presence")).toBeVisible();
  await expect(page.locator("#online li").filter({ hasText: "phone" })).toBeVisible();
  await page.locator("#toggle-rooms").click();
  await expect(page.locator("#rooms")).toBeVisible();
  await page.context().close();
});
