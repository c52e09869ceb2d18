// How the page looks: axe-core finds no serious or critical problem in either theme, on a
// desktop and on a phone; and screenshots of a short conversation, written to
// target/screenshots/ for people to look at (never compared pixel by pixel).
import AxeBuilder from "@axe-core/playwright";
import { expect, test } from "@playwright/test";
import * as fs from "node:fs";
import * as path from "node:path";
import { ChatServer, startServer } from "./server";
import { DESKTOP, PHONE, person, sendAll, setName } from "./people";

const screenshots = path.resolve(__dirname, "..", "..", "target", "screenshots");

let server: ChatServer;

test.beforeAll(async () => {
  server = await startServer();
});

test.afterAll(async () => {
  await server.stop();
});

test("axe finds no serious problem in either theme; screenshots for people to look at", async ({ browser }) => {
  fs.mkdirSync(screenshots, { recursive: true });
  const bob = await person(server, "bob");
  const maya = await person(server, "maya");
  await sendAll(bob, "bob", ["Morning! Release notes are up: https://example.com/notes"]);
  await sendAll(maya, "maya", ["Thanks bob. Did the migration run overnight?"]);
  await sendAll(bob, "bob", ["It did, 14 minutes. @ann can you check the dashboards?"]);
  const page = await (await browser.newContext({ viewport: DESKTOP, locale: "en-GB" })).newPage();
  await page.goto(server.url + "/");
  await expect(page.locator("#status")).toHaveAttribute("data-state", "online");
  await setName(page, "ann");
  await page.locator("#myMessage").fill("On it, everything is green.");
  await page.locator("#myMessage").press("Enter");
  await expect(page.locator("#messages .line.mine")).toHaveCount(1);
  for (const colorScheme of ["light", "dark"] as const) {
    for (const [size, viewport] of [
      ["desktop", DESKTOP],
      ["phone", PHONE],
    ] as const) {
      await page.emulateMedia({ colorScheme });
      await page.setViewportSize(viewport);
      const results = await new AxeBuilder({ page }).analyze();
      const serious = results.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
      expect(serious.map((v) => `${v.id}: ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`)).toEqual([]);
      await page.screenshot({ path: path.join(screenshots, `chat-${size}-${colorScheme}.png`) });
    }
  }
  await page.context().close();
  bob.close();
  maya.close();
});
