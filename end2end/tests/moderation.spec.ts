// The status page's moderation view, as an operator uses it: sign in with the admin
// token, delete a line (the chatting page shows "message deleted" in its place), mute
// and then ban a user who keeps posting.
import { expect, test } from "@playwright/test";
import { ChatServer, startServer } from "./server";
import { person, sendAll, setName } from "./people";

const TOKEN = "playwright-admin-token-0123456789abcdef";
let server: ChatServer;

test.beforeAll(async () => {
  server = await startServer(["--admin-token", TOKEN]);
});

test.afterAll(async () => {
  await server.stop();
});

test("an operator deletes a line, mutes and bans from the moderation view", async ({ browser }) => {
  const reader = await (await browser.newContext()).newPage();
  await reader.goto(server.url + "/");
  await expect(reader.locator("#status")).toHaveAttribute("data-state", "online");
  await setName(reader, "reader");
  const mal = await person(server, "mal");
  await sendAll(mal, "mal", ["BUY PILLS at spam.example"]);
  await expect(reader.locator("#messages .line.chat .text").getByText("BUY PILLS at spam.example")).toBeVisible();

  const operator = await (await browser.newContext()).newPage();
  await operator.goto(server.url + "/status/moderate");
  await operator.getByLabel("Admin token").fill("not the token at all, but long enough");
  await operator.getByRole("button", { name: "Sign in" }).click();
  await expect(operator.getByRole("alert")).toHaveText("Wrong token.");
  await operator.goto(server.url + "/status/moderate");
  await operator.getByLabel("Admin token").fill(TOKEN);
  await operator.getByRole("button", { name: "Sign in" }).click();
  await expect(operator.getByRole("heading", { name: "Moderation · #lobby" })).toBeVisible();

  // Delete: the line is gone for the reader too.
  const spam = operator.locator("#lines tr").filter({ hasText: "BUY PILLS" });
  await spam.getByRole("button", { name: "Delete" }).click();
  await expect(operator.locator("#done")).toContainText("1 line deleted");
  await expect(operator.locator("#lines")).not.toContainText("BUY PILLS");
  await expect(reader.locator("#messages .line.deleted .text")).toHaveText("message deleted");
  await expect(reader.getByText("BUY PILLS at spam.example")).toHaveCount(0);

  // Mute: mal's next line is refused with the time left, and nobody sees it.
  await operator.getByRole("button", { name: "mute mal" }).click();
  await expect(operator.locator("#done")).toContainText("muted for 10 minutes");
  const refused = new Promise<string>((resolve) =>
    mal.on("message", (text: string) => text.startsWith("You are muted") && resolve(text)),
  );
  await new Promise((r) => setTimeout(r, 500));
  mal.send("can you hear me?");
  expect(await refused).toBe("You are muted for 10 more minutes.");
  await expect(reader.getByText("can you hear me?")).toHaveCount(0);

  // Ban: mal is let go.
  const gone = new Promise<void>((resolve) => mal.once("disconnect", () => resolve()));
  await operator.getByRole("button", { name: "ban mal" }).click();
  await expect(operator.locator("#done")).toContainText("banned for 10 minutes");
  await gone;
  mal.close();
  await operator.context().close();
  await reader.context().close();
});
