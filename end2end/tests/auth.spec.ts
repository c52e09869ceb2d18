// Signing in through the application's own login: a node with `--auth token` and a
// `--token-url` served by a small backend of the kind an application runs (it reads its
// session cookie and mints a short-lived HS256 token). The page fetches the token with
// the browser's cookies, shows who it is signed in as, and refreshes the token before it
// expires without dropping the connection.
import { Browser, Page, expect, test } from "@playwright/test";
import { createHmac } from "node:crypto";
import http from "node:http";
import { AddressInfo } from "node:net";
import { ChatServer, startServer } from "./server";

const SECRET = "the-application-secret-0123456789-abcdef";
/** A short life, so that the page must refresh within the test. */
const TOKEN_SECONDS = 6;

let server: ChatServer;
let backend: http.Server;
let backendUrl: string;
let tokensMinted = 0;

function base64url(data: string | Buffer): string {
  return Buffer.from(data).toString("base64url");
}

/** An HS256 JWT, as the application's backend signs it. */
function mint(claims: object): string {
  const head = base64url(JSON.stringify({ alg: "HS256", typ: "JWT" })) + "." + base64url(JSON.stringify(claims));
  return head + "." + base64url(createHmac("sha256", SECRET).update(head).digest());
}

/** The application's backend: `GET /token` answers a signed-in person (cookie `session`) with a token. */
async function startBackend(): Promise<void> {
  backend = http.createServer((req, res) => {
    // The page is on another origin (the chat node's port): CORS with credentials.
    if (req.headers.origin) {
      res.setHeader("Access-Control-Allow-Origin", req.headers.origin);
      res.setHeader("Access-Control-Allow-Credentials", "true");
    }
    const session = /(?:^|;\s*)session=([a-z]+)/.exec(req.headers.cookie ?? "")?.[1];
    if (req.url !== "/token" || !session) {
      res.writeHead(401, { "Content-Type": "application/json" }).end('{"error":"not signed in"}');
      return;
    }
    tokensMinted += 1;
    const name = session.charAt(0).toUpperCase() + session.slice(1);
    const exp = Math.floor(Date.now() / 1000) + TOKEN_SECONDS;
    res.writeHead(200, { "Content-Type": "application/json" }).end(JSON.stringify({ token: mint({ sub: `u-${session}`, name, exp }) }));
  });
  await new Promise<void>((resolve) => backend.listen(0, "127.0.0.1", resolve));
  backendUrl = `http://127.0.0.1:${(backend.address() as AddressInfo).port}`;
}

test.beforeAll(async () => {
  await startBackend();
  server = await startServer(["--auth", "token", "--token-hmac-secret", SECRET, "--token-url", `${backendUrl}/token`]);
});

test.afterAll(async () => {
  await server.stop();
  await new Promise((resolve) => backend.close(resolve));
});

async function openAs(browser: Browser, session: string | null): Promise<Page> {
  const context = await browser.newContext();
  if (session) {
    await context.addCookies([{ name: "session", value: session, url: backendUrl }]);
  }
  const page = await context.newPage();
  await page.goto(server.url + "/");
  return page;
}

async function say(page: Page, text: string) {
  await page.locator("#myMessage").fill(text);
  await page.locator("#myMessage").press("Enter");
}

function line(page: Page, text: string) {
  return page.locator("#messages .line").filter({ hasText: text });
}

test("the page signs in with the application's login and stays connected past its token's expiry", async ({
  browser,
}) => {
  const page = await openAs(browser, "ada");
  await expect(page.locator("#status")).toHaveAttribute("data-state", "online");
  await expect(page.locator("#signed-in")).toHaveText("Signed in as Ada");
  await expect(page.locator("#username")).toHaveCount(0);
  await say(page, "hello, signed in");
  await expect(line(page, "hello, signed in").locator(".author")).toHaveText("Ada");

  // Past the first token's life: refreshed in time, the same connection goes on.
  const before = tokensMinted;
  await page.waitForTimeout((TOKEN_SECONDS + 2) * 1000);
  expect(tokensMinted).toBeGreaterThan(before);
  await expect(page.locator("#status")).toHaveAttribute("data-state", "online");
  await say(page, "still here after the first token expired");
  await expect(line(page, "still here after the first token expired")).toBeVisible();
  await expect(page.getByText("the sign-in token has expired")).toHaveCount(0);
  await expect(page.getByText("You may have missed messages")).toHaveCount(0);
});

test("without a sign-in the page is told it needs one", async ({ browser }) => {
  const page = await openAs(browser, null);
  await expect(page.getByText("Not allowed: a sign-in token is required.").first()).toBeVisible();
});
