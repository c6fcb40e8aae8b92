// Drive Debian's headless Chromium through playwright-core for the Python tests.
//
// Reads a JSON job from the file named on the command line:
//   {"userDataDir": "...", "cookies": [<Playwright cookies>],
//    "pages": [{"url": "...", "done": "<JS expression>",
//     "probe": "<JS function body returning JSON>", "screenshot": "file.png",
//     "viewport": {"width": 1000, "height": 700}, "fullPage": true,
//     "signal": "file", "then": "<JS expression>", "stripHeaders": ["name"]}]}
// Loads each page, waits until `done` is truthy, runs `probe` in the page and
// prints one JSON result per page on stdout: {probe, console, errors, failed}.
// With `signal`, it then creates that file (the test changes something on
// the server), waits until `then` is truthy and probes again (`probeAfter`).
// With `stripHeaders`, the page's own document arrives without those response
// headers (to show what they protect against); `cookies` are in the
// profile before the first page.
// Never downloads a browser: the executable is the system's chromium.
import { readFileSync, writeFileSync } from "node:fs";
import { chromium } from "playwright-core";

const EXECUTABLE = process.env.DQRXFER_CHROMIUM || "/usr/bin/chromium";
const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];

// Expressions become functions here: Playwright hands functions to the page
// through the debugger protocol, so a page's Content-Security-Policy (no eval)
// does not get in the way of the test.
const predicate = (expression) => new Function(`return (${expression});`);
const probeOf = (body) => new Function(body);

async function visit(context, spec) {
  const page = await context.newPage();
  if (spec.viewport) await page.setViewportSize(spec.viewport);
  const result = { url: spec.url, console: [], errors: [], failed: [] };
  page.on("console", (message) => result.console.push(`${message.type()}: ${message.text()}`));
  page.on("pageerror", (error) => result.errors.push(String(error.message || error)));
  page.on("requestfailed", (request) =>
    result.failed.push(`${request.url()} ${request.failure()?.errorText ?? ""}`),
  );
  if (spec.stripHeaders) {
    const strip = new Set(spec.stripHeaders.map((name) => name.toLowerCase()));
    await page.route(spec.url, async (route) => {
      const response = await route.fetch();
      const headers = Object.fromEntries(
        Object.entries(response.headers()).filter(([name]) => !strip.has(name.toLowerCase())),
      );
      await route.fulfill({ response, headers });
    });
  }
  try {
    await page.goto(spec.url, { waitUntil: "load", timeout: spec.timeout ?? 60000 });
    await page.waitForFunction(predicate(spec.done ?? "true"), null, {
      timeout: spec.timeout ?? 60000,
    });
    if (spec.probe) result.probe = await page.evaluate(probeOf(spec.probe));
    if (spec.signal) {
      writeFileSync(spec.signal, "ready");
      await page.waitForFunction(predicate(spec.then), null, { timeout: spec.timeout ?? 60000 });
      result.probeAfter = await page.evaluate(probeOf(spec.probe));
    }
    if (spec.screenshot) {
      await page.screenshot({ path: spec.screenshot, fullPage: spec.fullPage ?? true });
    }
  } catch (error) {
    result.errors.push(`driver: ${error.message}`);
  } finally {
    await page.close();
  }
  return result;
}

const job = JSON.parse(readFileSync(process.argv[2], "utf8"));
const context = await chromium.launchPersistentContext(job.userDataDir, {
  executablePath: EXECUTABLE,
  headless: true,
  args: ARGS,
});
try {
  if (job.cookies?.length) await context.addCookies(job.cookies);
  const results = [];
  for (const spec of job.pages) results.push(await visit(context, spec));
  process.stdout.write(JSON.stringify(results));
} finally {
  await context.close();
}
