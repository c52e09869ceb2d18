import { expect, test } from "@playwright/test";
import { ChatServer, freePort } from "./server";

// The page's own Socket.IO client must come back by itself when its server goes away
// and returns, and keep the name the person chose.
test("the page reconnects after a server restart and keeps its name", async ({ browser }) => {
  const server = new ChatServer(await freePort());
  await server.start();
  try {
    const page = await (await browser.newContext()).newPage();
    await page.goto(server.url + "/");
    const status = page.locator("#status");
    await expect(status).toHaveAttribute("data-state", "online");
    await page.locator("#username").fill("phoenix");
    await page.getByRole("button", { name: "Set as Username" }).click();
    await expect(page.getByText("Your username is set to phoenix", { exact: true })).toBeVisible();

    await server.stop("SIGKILL");
    await expect(status).toHaveAttribute("data-state", "reconnecting");
    await expect(page.locator("#status-label")).toHaveText("Reconnecting…");
    await expect(page.getByRole("button", { name: "Send" })).toBeDisabled();

    await server.start();
    await expect(status).toHaveAttribute("data-state", "online", { timeout: 20_000 });
    // A restarted single node starts a new epoch of the room: what the page showed is gone,
    // and it says so instead of continuing as if nothing was missed.
    await expect(page.getByText("You may have missed messages: here is the recent history.")).toBeVisible();
    // The page named itself again on the new connection, quietly: it can chat at once.
    await expect(page.getByText("Your username is set to phoenix", { exact: true })).toHaveCount(0);
    await page.locator("#myMessage").fill("back again");
    await page.locator("#myMessage").press("Enter");
    await expect(page.getByText("phoenix: back again", { exact: true })).toBeVisible();
  } finally {
    await server.stop();
  }
});
