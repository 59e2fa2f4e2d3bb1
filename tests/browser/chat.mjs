// Drives client.html (Strophe.js) in headless Chromium, as a user would:
// log in, send a message, wait for the reply, take a screenshot, log out.
//
//   node chat.mjs '{"chromium": "/usr/bin/chromium", "pagePort": 8123,
//                   "service": "wss://example.test:5281/xmpp-websocket",
//                   "resolve": {"example.test": "127.0.0.1"}, "spki": "BASE64...",
//                   "jid": "...", "password": "...", "to": "...", "body": "...",
//                   "screenshot": "/tmp/chat.png", "stepTimeout": 8000}'
//
// The page is served on http://127.0.0.1:PAGEPORT/ (another origin than the
// service). Chromium resolves the names of "resolve" without DNS and trusts
// only the server key whose SPKI SHA-256 is "spki". Prints one JSON object:
// the page's status and transcript, the browser console, and the error that
// stopped it, if any (then the exit status is 1).

import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const options = JSON.parse(process.argv[2]);
const step = options.stepTimeout ?? 8000;

const files = {
  '/': ['text/html; charset=utf-8', join(here, 'client.html')],
  '/strophe.umd.min.js': ['text/javascript; charset=utf-8',
    join(here, 'node_modules', 'strophe.js', 'dist', 'strophe.umd.min.js')],
};

function serve(port) {
  const server = createServer(async (request, response) => {
    const file = files[new URL(request.url, 'http://page').pathname];
    if (!file) {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(200, { 'Content-Type': file[0], 'Cache-Control': 'no-store' });
    response.end(await readFile(file[1]));
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

const result = { console: [] };
let browser = null;
let page = null;
let pageServer = null;
try {
  pageServer = await serve(options.pagePort);
  const rules = Object.entries(options.resolve ?? {}).map(([name, address]) => `MAP ${name} ${address}`);
  browser = await chromium.launch({
    executablePath: options.chromium,
    headless: true,
    timeout: 3 * step,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      `--host-resolver-rules=${rules.join(', ')}`,
      `--ignore-certificate-errors-spki-list=${options.spki}`,
    ],
  });
  page = await browser.newPage({ viewport: { width: 900, height: 760 } });
  page.setDefaultTimeout(step);
  page.on('console', (message) => result.console.push(`${message.type()}: ${message.text()}`));
  page.on('pageerror', (error) => result.console.push(`pageerror: ${error.message}`));

  await page.goto(`http://127.0.0.1:${options.pagePort}/`);
  await page.fill('#service', options.service);
  await page.fill('#jid', options.jid);
  await page.fill('#password', options.password);
  await page.click('#login');
  // Online, or a state Strophe gives up in.
  await page.waitForSelector(['online', 'connfail', 'authfail', 'conntimeout', 'error', 'disconnected']
    .map((state) => `#status[data-state="${state}"]`).join(', '));
  result.online = await page.textContent('#status');
  if (await page.getAttribute('#status', 'data-state') !== 'online') {
    throw new Error(`not logged in: ${result.online}`);
  }

  await page.fill('#to', options.to);
  await page.fill('#body', options.body);
  await page.click('#send');
  await page.waitForSelector('#transcript li.incoming');
  result.transcript = await page.$$eval('#transcript li', (lines) =>
    lines.map((line) => ({ kind: line.className, text: line.textContent })));
  result.text = await page.innerText('body');
  await page.screenshot({ path: options.screenshot, fullPage: true });

  await page.click('#logout');
  await page.waitForSelector('#status[data-state="disconnected"]');
  result.status = await page.textContent('#status');
} catch (error) {
  result.error = String(error.stack || error);
  if (page) {
    result.text = await page.innerText('body').catch(() => null);
    await page.screenshot({ path: options.screenshot, fullPage: true }).catch(() => null);
  }
  process.exitCode = 1;
} finally {
  await browser?.close().catch(() => null);
  pageServer?.close();
}
process.stdout.write(JSON.stringify(result) + '\n');
