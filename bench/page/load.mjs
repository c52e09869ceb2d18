// The page's weight and how soon it can be used (docs/benchmarks.md, "The page"): the
// release build's wasm, JS and CSS sizes (raw and gzip -9), then `--runs` fresh visits in
// headless Chromium to a release node on loopback, each in a new browser context (no
// cache): when the HTML arrived, when the wasm finished loading, and when the page was
// interactive (hydrated and connected: the state reads "Online" and input is taken).
//
//   node bench/page/load.mjs URL [--runs 20]
//
// Run it through scripts/bench-page.sh, which builds and starts the node.
import { createRequire } from "node:module";
import { gzipSync } from "node:zlib";
import { readFileSync } from "node:fs";
import * as path from "node:path";

const root = path.resolve(import.meta.dirname, "..", "..");
// Playwright is installed with the browser tests, in end2end/.
const { chromium } = createRequire(path.join(root, "end2end", "package.json"))("@playwright/test");

const [url, ...rest] = process.argv.slice(2);
const runs = Number(rest[rest.indexOf("--runs") + 1] ?? 20) || 20;
const pkg = path.join(root, "target", "site", "pkg");

const sizes = {};
for (const file of ["chatroom.wasm", "chatroom.js", "chatroom.css"]) {
  const bytes = readFileSync(path.join(pkg, file));
  sizes[file] = { raw: bytes.length, gzip: gzipSync(bytes, { level: 9 }).length };
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
const samples = [];
for (let i = 0; i < runs; i++) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(url, { waitUntil: "commit" });
  await page.waitForSelector('#status[data-state="online"]', { timeout: 15_000 });
  samples.push(
    await page.evaluate(() => {
      const nav = performance.getEntriesByType("navigation")[0];
      const wasm = performance.getEntriesByType("resource").find((r) => r.name.endsWith(".wasm"));
      return { html: nav.responseEnd, wasm: wasm ? wasm.responseEnd : NaN, interactive: performance.now() };
    }),
  );
  await context.close();
}
await browser.close();

const median = (key) => {
  const sorted = samples.map((s) => s[key]).sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
};
const max = (key) => Math.max(...samples.map((s) => s[key]));
console.log(JSON.stringify({ sizes, runs, median: { html: median("html"), wasm: median("wasm"), interactive: median("interactive") }, max: { interactive: max("interactive") } }));
