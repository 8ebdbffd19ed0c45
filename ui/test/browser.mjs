#!/usr/bin/env node
// Drives the control interface in Debian's Chromium (headless) as an operator would, with a
// NIP-07 signer injected into the page that holds a test key (signing with nostr-tools, which is
// not our code). Run by the router's test `ui::the_fleet_app_works_in_chromium`, which starts the
// router and two nodes and passes:
//   ROUTER        the router's base URL
//   NSEC          the operator's key (nsec1…)
//   NODES         the two nodes' keys (host:port), comma-separated
//   SERVICE_PORT  the port of a running service to add as a container
//   DOWN_PID      the process id of the second node, which the test stops to see an alert
//   OUT           where screenshots go (target/ui-screenshots)
//   CHROMIUM      the browser (default /usr/bin/chromium)
// Prints one line per step; exits 1 at the first step that fails, naming it.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { finalizeEvent, getPublicKey } from 'nostr-tools/pure';
import * as nip19 from 'nostr-tools/nip19';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const ROUTER = env('ROUTER');
const NODES = env('NODES').split(',');
const SERVICE_PORT = Number(env('SERVICE_PORT'));
const OUT = env('OUT');
const secret = nip19.decode(env('NSEC')).data;
const pubkey = getPublicKey(secret);
mkdirSync(OUT, { recursive: true });

let current = 'start';
const step = (name) => { current = name; console.log(`step: ${name}`); };
const TIMEOUT = 20_000;

// A persistent profile: Chromium does not install apps from an incognito context.
const profile = mkdtempSync(join(tmpdir(), 'infernet-ui-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu'],
  headless: true,
  viewport: { width: 1280, height: 860 },
});
const done = async () => {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
};

// The NIP-07 extension: window.nostr, signing in the test process with the operator's key.
async function withSigner(context) {
  let signed = 0;
  await context.exposeBinding('__nip07_sign', (_source, event) => { signed++; return finalizeEvent(event, secret); });
  await context.exposeBinding('__nip07_pubkey', () => pubkey);
  await context.addInitScript(() => {
    window.nostr = {
      getPublicKey: () => window.__nip07_pubkey(),
      signEvent: (event) => window.__nip07_sign(event),
    };
  });
  return () => signed;
}

async function shoot(page, name) {
  await page.screenshot({ path: join(OUT, `${name}.png`), fullPage: true });
}

const phoneShots = [];
let shown = null; // the main page, to say what it showed when a step fails
try {
  const signatures = await withSigner(context);
  const page = await context.newPage();
  shown = page;
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  // Refused requests (401 while signed out, the network while offline) are expected; anything
  // else the console reports as an error is a problem.
  // 400s are the bad fields the test enters on purpose.
  const expected = /status of 40[01]|ERR_INTERNET_DISCONNECTED/;
  page.on('response', async (r) => { if (r.status() >= 500) problems.push(`${r.status()} from ${r.url()}: ${await r.text().catch(() => '')}`); });
  page.on('console', (m) => { if (m.type() === 'error' && !expected.test(m.text())) problems.push(`console: ${m.text()}`); });

  step('the shell loads without a session, and data is refused');
  await page.goto(`${ROUTER}/`);
  await page.locator('#signin').waitFor({ state: 'visible', timeout: TIMEOUT });
  const refused = await page.evaluate(async () => (await fetch('/api/v1/fleet')).status);
  if (refused !== 401) throw new Error(`GET /api/v1/fleet without a session answered ${refused}`);
  await shoot(page, 'signin-desktop');

  step('sign in with the extension, by keyboard');
  for (let i = 0; i < 10 && await page.evaluate(() => document.activeElement?.id) !== 'signin'; i++) await page.keyboard.press('Tab');
  if (await page.evaluate(() => document.activeElement?.id) !== 'signin') throw new Error('Tab never reaches the sign-in button');
  await page.keyboard.press('Enter');
  await page.locator('#signout').waitFor({ state: 'visible', timeout: TIMEOUT });
  if (signatures() < 1) throw new Error('the extension was never asked to sign');

  step('the fleet shows the two nodes');
  await page.waitForFunction((n) => document.querySelectorAll('#fleet tbody tr').length === n, NODES.length, { timeout: TIMEOUT });
  const rows = await page.locator('#fleet tbody tr').evaluateAll((trs) => trs.map((tr) => tr.dataset.node));
  for (const key of NODES) if (!rows.includes(key)) throw new Error(`node ${key} missing from the fleet: ${rows}`);
  const up = await page.locator('#fleet .dot.up').count();
  if (up !== NODES.length) throw new Error(`${up} of ${NODES.length} nodes shown up`);
  await shoot(page, 'fleet-desktop');

  step('add a node: the router checks its signed statement');
  await page.getByLabel('Node address (host:port or URL)').fill(NODES[1]);
  await page.getByRole('button', { name: 'Check node' }).click();
  await page.waitForFunction(() => /in your fleet/.test(document.querySelector('#add-node output')?.textContent || ''), null, { timeout: TIMEOUT });

  step('a node page draws its plots with data');
  await page.locator(`#fleet tr[data-node="${NODES[0]}"] a`).click();
  await page.waitForFunction(() => document.querySelectorAll('#plots .uplot canvas').length >= 8, null, { timeout: TIMEOUT });
  const points = await page.evaluate(() => Number((document.querySelector('#status').textContent.match(/(\d+) points/) || [])[1] || 0));
  if (points < 1) throw new Error(`the node page shows ${points} points`);
  // Something was drawn: the CPU plot's canvas is not blank.
  const inked = await page.evaluate(() => {
    const c = document.querySelector('#plots .uplot canvas');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
    return n;
  });
  if (inked === 0) throw new Error('the plots are blank');
  await shoot(page, 'node-desktop');

  step('change a price: signed by the extension, relayed, the router reports it');
  await page.goto(`${ROUTER}/#/settings/${encodeURIComponent(NODES[0])}`);
  await page.locator('#price-form').waitFor({ timeout: TIMEOUT });
  await page.locator('#price-container').selectOption('x');
  await page.getByLabel('Price per job', { exact: true }).fill('0.25');
  await page.getByLabel('Unit', { exact: true }).fill('USD');
  await page.locator('#price-form button[type=submit]').click();
  await page.waitForFunction(() => /answered 200/.test(document.querySelector('#price-form .answer')?.textContent || ''), null, { timeout: TIMEOUT });
  await page.waitForFunction(async (key) => {
    const f = await (await fetch('/api/v1/fleet')).json();
    const n = f.nodes.find((x) => x.key === key);
    return n && n.pricing && n.pricing.x && n.pricing.x.per_job === 0.25;
  }, NODES[0], { timeout: TIMEOUT, polling: 200 });
  await shoot(page, 'settings-desktop');

  step('the settings read back (signed) fill the forms');
  await page.getByRole('button', { name: 'Load settings' }).click();
  await page.waitForFunction(() => document.querySelector('#price-per-job').value === '0.25' && /"per_job": 0.25/.test(document.querySelector('#current-settings').textContent), null, { timeout: TIMEOUT });

  step('availability and limits as forms: a bad time is named beside its field, a good week saved');
  await page.locator('#schedule-form').waitFor({ timeout: TIMEOUT });
  await page.getByLabel('Always available (no schedule)').uncheck();
  await page.getByLabel('Time zone (IANA name, e.g. Europe/Berlin)').fill('Europe/Berlin');
  const win = page.locator('#availability-windows .window').first();
  for (const d of ['Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat', 'Sun']) await win.getByLabel(d, { exact: true }).check();
  await win.getByLabel('From (HH:MM)').fill('00:00');
  await win.getByLabel('To (HH:MM, 24:00 = end of day)').fill('25:00');
  await page.getByRole('button', { name: 'Add an exception' }).click();
  const exception = page.locator('#availability-exceptions .exception').first();
  await exception.getByLabel('Date').fill('2099-12-25');
  await exception.getByLabel('That day').selectOption('false');
  await page.getByLabel('Serve chain subscriptions outside these hours too (chain_outside)').uncheck();
  const limitsOfX = page.locator('#limits-editor fieldset[data-container="x"]');
  await limitsOfX.getByLabel('CPUs').fill('1.5');
  await limitsOfX.getByLabel('Jobs at once').fill('4');
  await page.locator('#schedule-form button[type=submit]').click();
  await page.waitForFunction(() => {
    const to = [...document.querySelectorAll('#availability-windows input')].find((i) => i.value === '25:00');
    return to && to.getAttribute('aria-invalid') === 'true' && /HH:MM/.test(document.getElementById(to.getAttribute('aria-describedby'))?.textContent || '');
  }, null, { timeout: TIMEOUT });
  // A time zone the node does not know: the node's 400 is marked beside the field.
  await win.getByLabel('To (HH:MM, 24:00 = end of day)').fill('24:00');
  await page.getByLabel('Time zone (IANA name, e.g. Europe/Berlin)').fill('Mars/Olympus');
  await page.locator('#schedule-form button[type=submit]').click();
  await page.waitForFunction(() => {
    const tz = document.querySelector('#availability-timezone');
    return /answered 400/.test(document.querySelector('#schedule-form .answer')?.textContent || '') && tz.getAttribute('aria-invalid') === 'true'
      && /Mars\/Olympus|time zone/i.test(document.getElementById(tz.getAttribute('aria-describedby'))?.textContent || '');
  }, null, { timeout: TIMEOUT });
  await page.getByLabel('Time zone (IANA name, e.g. Europe/Berlin)').fill('Europe/Berlin');
  await page.locator('#schedule-form button[type=submit]').click();
  await page.waitForFunction(() => /answered 200/.test(document.querySelector('#schedule-form .answer')?.textContent || ''), null, { timeout: TIMEOUT });
  if (await page.locator('#schedule-form .field-error').count()) throw new Error('a field is still marked after a good save');
  await page.getByRole('button', { name: 'Load settings' }).click();
  await page.waitForFunction(() => {
    const s = JSON.parse(document.querySelector('#current-settings').textContent || '{}');
    const a = s.availability;
    return a && a.timezone === 'Europe/Berlin' && a.chain_outside === false && a.weekly.length === 1 && a.weekly[0].days.length === 7
      && a.weekly[0].from === '00:00' && a.weekly[0].to === '24:00' && a.exceptions[0]?.date === '2099-12-25' && a.exceptions[0]?.available === false
      && s.limits.x?.cpus === 1.5 && s.limits.x?.max_jobs === 4 && s.pricing.x?.per_job === 0.25;
  }, null, { timeout: TIMEOUT });
  // The editor is filled from what the node holds.
  await page.waitForFunction(() => !document.querySelector('#availability-always').checked && document.querySelector('#availability-timezone').value === 'Europe/Berlin', null, { timeout: TIMEOUT });
  await shoot(page, 'availability-desktop');

  step('add a container; the node serves a job on it');
  await page.getByLabel('Container id', { exact: true }).fill('added');
  await page.getByLabel('Port of the service', { exact: true }).fill(String(SERVICE_PORT));
  // To both nodes: one signature each, for each node's own URL.
  await page.getByRole('checkbox', { name: NODES[1] }).check();
  await page.locator('#container-form button[type=submit]').click();
  await page.waitForFunction(() => (document.querySelector('#container-form .answer')?.textContent.match(/answered 201/g) || []).length === 2, null, { timeout: 60_000 });
  const nodeUrl = `http://${NODES[0]}`;
  const created = await fetch(`${nodeUrl}/api/jobs`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ containers: ['added'], data: {} }),
  });
  if (created.status !== 200) throw new Error(`the job on the added container was refused: ${created.status} ${await created.text()}`);
  const { id } = await created.json();
  let job;
  for (const deadline = Date.now() + TIMEOUT; Date.now() < deadline;) {
    [job] = await (await fetch(`${nodeUrl}/api/jobs?id=${id}`)).json();
    if (job && job.status !== 'running') break;
    await new Promise((r) => setTimeout(r, 100));
  }
  if (!job || job.status !== 'success') throw new Error(`the job on the added container ended ${JSON.stringify(job)}`);
  await page.waitForFunction(async (key) => {
    const f = await (await fetch('/api/v1/fleet')).json();
    return f.nodes.filter((x) => x.containers.includes('added')).length === 2;
  }, NODES[0], { timeout: TIMEOUT, polling: 200 });

  step('the node page shows the new price and container');
  await page.goto(`${ROUTER}/#/node/${encodeURIComponent(NODES[0])}?range=1h`);
  await page.waitForFunction(() => /x: 0\.25 USD per job/.test(document.querySelector('#prices')?.textContent || ''), null, { timeout: TIMEOUT });

  step('a job the price left out: the node\'s public record says why, in words');
  const placed = await fetch(`${ROUTER}/api/v1/jobs`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ containers: ['x'], data: {}, max_price: 0.1 }),
  });
  if (placed.status !== 200) throw new Error(`the job at most 0.1 was refused: ${placed.status} ${await placed.text()}`);
  for (const deadline = Date.now() + TIMEOUT; ;) {
    await page.goto(`${ROUTER}/#/node/${encodeURIComponent(NODES[0])}?range=1h`);
    await page.reload();
    await page.locator('#record').waitFor({ timeout: TIMEOUT });
    const why = await page.locator('#passed-over').textContent();
    if (/1 job went elsewhere because its price was above what the client would pay/.test(why)) break;
    if (Date.now() > deadline) throw new Error(`the record never said why: ${why}`);
    await page.waitForTimeout(200);
  }
  const uptime = await page.locator('#record-uptime').textContent();
  if (!/: \d+ % over 24 h/.test(uptime)) throw new Error(`no uptime in the record: ${uptime}`);
  const success = await page.locator('#record-success').textContent();
  if (!/^(No job ran on it through this router yet|\d+ % of its \d+ jobs through this router succeeded)/.test(success)) throw new Error(`no success rate in the record: ${success}`);
  await shoot(page, 'node-record-desktop');

  step('jobs, earnings, diagnostics and alerts pages');
  for (const [hash, sel, name] of [['#/jobs', '#jobs', 'jobs'], ['#/earnings', '#earnings', 'earnings'], ['#/diagnostics', '#diagnostics', 'diagnostics'], ['#/alerts', '#alert-settings', 'alerts']]) {
    await page.goto(`${ROUTER}/${hash}`);
    await page.locator(sel).waitFor({ timeout: TIMEOUT });
    await shoot(page, `${name}-desktop`);
  }

  step('phone width (390 px): every page fits without sideways scrolling');
  const phone = await context.newPage();
  await phone.setViewportSize({ width: 390, height: 844 });
  for (const [hash, sel, name] of [
    ['#/fleet', '#fleet', 'fleet'], [`#/node/${encodeURIComponent(NODES[0])}`, '#plots canvas', 'node'],
    [`#/settings/${encodeURIComponent(NODES[0])}`, '#price-form', 'settings'], ['#/jobs', '#jobs', 'jobs'], ['#/earnings', '#earnings', 'earnings'],
    ['#/diagnostics', '#diagnostics', 'diagnostics'], ['#/alerts', '#alert-settings', 'alerts'],
  ]) {
    current = `phone width: ${name}`;
    await phone.goto(`${ROUTER}/${hash}`);
    await phone.locator(sel).first().waitFor({ timeout: TIMEOUT });
    if (name === 'settings') {
      // The schedule and limits editors appear once the node's settings are loaded.
      await phone.getByRole('button', { name: 'Load settings' }).click();
      await phone.locator('#schedule-form').waitFor({ timeout: TIMEOUT });
    }
    const wide = await phone.evaluate(() => document.documentElement.scrollWidth);
    if (wide > 390) {
      const culprits = await phone.evaluate(() => [...document.querySelectorAll('*')]
        .filter((el) => el.getBoundingClientRect().right > 392 || el.scrollWidth > 392)
        .slice(0, 12)
        .map((el) => `${el.tagName.toLowerCase()}#${el.id}.${el.className} (${Math.round(el.getBoundingClientRect().right)}/${el.scrollWidth} px)`));
      throw new Error(`${name} is ${wide} px wide at 390 px: ${culprits.join(', ')}`);
    }
    await shoot(phone, `${name}-phone`);
    phoneShots.push(name);
  }
  await phone.close();

  step('alert settings: every number and switch the router sends is a field, unknown ones too');
  // A field this app does not name (as a new switch of the router's would be) shows up by itself.
  await page.route('**/api/v1/alerts/settings', async (route) => {
    if (route.request().method() !== 'GET') return route.continue();
    const answer = await route.fetch();
    return route.fulfill({ response: answer, json: { ...(await answer.json()), nostr_dm: true, dm_every_s: 300 } });
  });
  await page.goto(`${ROUTER}/#/alerts`);
  await page.reload();
  await page.locator('#alert-settings').waitFor({ timeout: TIMEOUT });
  if (!(await page.getByLabel('nostr dm', { exact: true }).isChecked())) throw new Error('an unknown boolean setting is not shown as a checkbox');
  if (await page.getByLabel('dm every (s)', { exact: true }).inputValue() !== '300') throw new Error('an unknown number setting is not shown');
  await page.unroute('**/api/v1/alerts/settings');

  step('alert settings: a bad threshold is named beside its field');
  await page.reload();
  await page.locator('#alert-settings').waitFor({ timeout: TIMEOUT });
  for (const id of ['#alert-rules-offline-after-s', '#alert-rules-success-rate-enabled', '#alert-rules-balance-low-payment-eth']) {
    if (!await page.locator(id).count()) throw new Error(`no field ${id}`);
  }
  await page.locator('#alert-rules-success-rate-threshold').fill('2');
  await page.getByLabel(/^Webhooks, one per line/).fill('gopher://x');
  await page.getByRole('button', { name: 'Add a silence' }).click();
  const silence = page.locator('#alert-silences .silence').first();
  await silence.getByLabel('Rule').selectOption('disk');
  await silence.getByLabel(/^Until/).fill('tomorrow');
  await page.getByRole('button', { name: 'Save alert settings' }).click();
  await page.waitForFunction(() => {
    const said = (input) => input.getAttribute('aria-invalid') === 'true' && (document.getElementById(input.getAttribute('aria-describedby') || '-')?.textContent || '');
    return /0 to 1/.test(said(document.querySelector('#alert-rules-success-rate-threshold')))
      && /http/.test(said(document.querySelector('#alert-webhooks')))
      && /RFC 3339/.test(said(document.querySelector('#alert-silences [name=until]')))
      && /answered 400: rules\.success_rate\.threshold/.test(document.querySelector('#alert-settings-answer').textContent);
  }, null, { timeout: TIMEOUT });
  await shoot(page, 'alert-settings-desktop');

  step('alert settings saved: a memory threshold every node is over fires, counted in the nav');
  await page.locator('#alert-rules-success-rate-threshold').fill('0.9');
  await page.getByLabel(/^Webhooks, one per line/).fill('');
  await silence.getByLabel(/^Until/).fill('2099-01-01T00:00:00Z');
  await page.locator('#alert-rules-offline-after-s').fill('1');
  await page.locator('#alert-rules-memory-percent').fill('0.01');
  await page.getByRole('button', { name: 'Save alert settings' }).click();
  await page.waitForFunction(() => /answered 200/.test(document.querySelector('#alert-settings-answer').textContent), null, { timeout: TIMEOUT });
  if (await page.locator('#alert-settings .field-error').count()) throw new Error('a field is still marked after a good save');
  const stored = await page.evaluate(() => fetch('/api/v1/alerts/settings').then((r) => r.json()));
  if (stored.silences[0]?.rule !== 'disk' || stored.rules.memory.percent !== 0.01 || stored.webhooks.length) throw new Error(`stored settings: ${JSON.stringify(stored)}`);
  const firingMemory = (n) => {
    const count = Number(document.querySelector('#alert-count')?.textContent || 0);
    const listed = [...document.querySelectorAll('#alert-list li')].filter((li) => /^memory on /.test(li.textContent)).length;
    const top = document.querySelector('#alerts').textContent;
    return count >= n && listed >= n && /memory on/.test(top) && !/null|undefined/.test(top);
  };
  for (const deadline = Date.now() + TIMEOUT; ;) {
    await page.reload();
    await page.locator('#alert-lists').waitFor({ timeout: TIMEOUT });
    if (await page.evaluate(firingMemory, NODES.length)) break;
    if (Date.now() > deadline) throw new Error('the memory alerts never fired');
    await page.waitForTimeout(200);
  }
  await shoot(page, 'alerts-firing-desktop');

  step('acknowledge an alert');
  const ack = page.locator('#alert-list li', { hasText: /^memory on / }).first();
  const ackId = await ack.getAttribute('data-alert');
  await ack.getByRole('button', { name: /^Acknowledge/ }).click();
  await page.locator(`#alert-list li[data-alert="${ackId}"] .acked`).waitFor({ timeout: TIMEOUT });
  const acked = (await (await page.evaluate(() => fetch('/api/v1/alerts?status=firing').then((r) => r.json()))).alerts).find((a) => a.id === ackId);
  if (!acked || !acked.acked_at) throw new Error(`the router did not record the acknowledgement: ${JSON.stringify(acked)}`);

  step('the threshold back: the alerts resolve into the history');
  await page.locator('#alert-rules-memory-percent').fill('100');
  await page.getByRole('button', { name: 'Save alert settings' }).click();
  await page.waitForFunction(() => /answered 200/.test(document.querySelector('#alert-settings-answer').textContent), null, { timeout: TIMEOUT });
  for (const deadline = Date.now() + TIMEOUT; ;) {
    await page.reload();
    await page.locator('#alert-lists').waitFor({ timeout: TIMEOUT });
    const resolved = await page.evaluate(() => [...document.querySelectorAll('#alert-history li')].filter((li) => /^memory on .* resolved /.test(li.textContent)).length);
    if (resolved >= NODES.length && !(await page.evaluate(firingMemory, 1))) break;
    if (Date.now() > deadline) throw new Error('the memory alerts never resolved');
    await page.waitForTimeout(200);
  }
  await shoot(page, 'alerts-resolved-desktop');

  step('a node goes down: the alerts say so');
  process.kill(Number(env('DOWN_PID')), 'SIGKILL');
  await page.goto(`${ROUTER}/#/alerts`);
  await page.waitForFunction(async (key) => {
    const f = await (await fetch('/api/v1/fleet')).json();
    return f.nodes.find((n) => n.key === key)?.status === 'down';
  }, NODES[1], { timeout: TIMEOUT, polling: 200 });
  current = 'a node goes down: the alerts region names it';
  // Between two probes a node may show no reason yet: load the page until it does.
  const named = (key) => {
    const top = document.querySelector('#alerts')?.textContent || '';
    const offline = [...document.querySelectorAll('#alert-list li')].some((li) => li.textContent.startsWith(`offline on ${key}`));
    return top.includes(`offline on ${key}`) && offline;
  };
  for (const deadline = Date.now() + TIMEOUT; ;) {
    await page.reload();
    await page.locator('#page h2').waitFor({ timeout: TIMEOUT });
    if (await page.evaluate(named, NODES[1])) break;
    if (Date.now() > deadline) throw new Error('the alerts never named the node');
    await page.waitForTimeout(200);
  }
  if (Number(await page.locator('#alert-count').textContent()) < 1) throw new Error('the nav counts no alert');
  await shoot(page, 'alerts-desktop');

  step('every form field has a label');
  await page.goto(`${ROUTER}/#/settings/${encodeURIComponent(NODES[0])}`);
  await page.locator('#price-form').waitFor({ timeout: TIMEOUT });
  const labelled = await page.evaluate(() => [...document.querySelectorAll('input, select, textarea')].every((el) => el.closest('label')));
  if (!labelled) throw new Error('a form field has no label');

  step('the app is installable: manifest and service worker accepted by Chromium');
  await page.goto(`${ROUTER}/`);
  await page.evaluate(() => navigator.serviceWorker.ready.then(() => true));
  const cdp = await context.newCDPSession(page);
  const manifest = await cdp.send('Page.getAppManifest');
  if (manifest.errors.length) throw new Error(`manifest errors: ${JSON.stringify(manifest.errors)}`);
  const { installabilityErrors } = await cdp.send('Page.getInstallabilityErrors');
  if (installabilityErrors.length) throw new Error(`not installable: ${JSON.stringify(installabilityErrors)}`);

  step('offline, the service worker serves the shell and no data');
  await page.reload();
  await page.evaluate(() => new Promise((r) => (navigator.serviceWorker.controller ? r() : navigator.serviceWorker.addEventListener('controllerchange', r))));
  const cached = await page.evaluate(async () => {
    const names = await caches.keys();
    const urls = [];
    for (const n of names) for (const r of await (await caches.open(n)).keys()) urls.push(new URL(r.url).pathname);
    return urls;
  });
  if (cached.some((u) => u.startsWith('/api/'))) throw new Error(`data cached: ${cached}`);
  await context.setOffline(true);
  await page.reload();
  await page.locator('#signin').waitFor({ state: 'attached', timeout: TIMEOUT });
  await page.waitForFunction(() => /Offline/.test(document.querySelector('#status').textContent), null, { timeout: TIMEOUT });
  await shoot(page, 'offline-desktop');
  await context.setOffline(false);

  step('sign out: the session ends on the server');
  await page.reload();
  await page.locator('#signout').waitFor({ state: 'visible', timeout: TIMEOUT });
  const [cookie] = (await context.cookies(ROUTER)).filter((c) => c.name === 'infernet_session');
  if (!cookie || !cookie.httpOnly || cookie.sameSite !== 'Strict') throw new Error(`session cookie ${JSON.stringify(cookie)}`);
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.locator('#signin').waitFor({ state: 'visible', timeout: TIMEOUT });
  const after = await fetch(`${ROUTER}/api/v1/fleet`, { headers: { cookie: `infernet_session=${cookie.value}` } });
  if (after.status !== 401) throw new Error(`the old session cookie still works: ${after.status}`);
  await shoot(page, 'signed-out-desktop');

  step('the node\'s own dashboard: an operator signs in and sees the node');
  const dash = await context.newPage();
  await dash.goto(`${nodeUrl}/dashboard/`);
  await dash.getByRole('button', { name: 'Sign in' }).click();
  await dash.waitForFunction(() => document.querySelectorAll('#plots .uplot canvas').length >= 8, null, { timeout: TIMEOUT });
  await shoot(dash, 'dashboard-desktop');
  await dash.setViewportSize({ width: 390, height: 844 });
  await shoot(dash, 'dashboard-phone');

  if (problems.length) { current = 'no script errors'; throw new Error(problems.join('\n')); }
  console.log(`ok: screenshots in ${OUT}`);
  await done();
} catch (e) {
  const state = shown && await shown.evaluate(() => ({
    url: location.href, status: document.querySelector('#status')?.textContent, alerts: document.querySelector('#alerts')?.textContent,
    answers: [...document.querySelectorAll('.answer, .field-error')].map((e) => e.textContent),
  })).catch(() => null);
  if (shown) await shoot(shown, 'failed').catch(() => {});
  console.error(`FAILED at "${current}": ${e.message}\nthe page showed: ${JSON.stringify(state)} (screenshot: failed.png)`);
  await done();
  process.exit(1);
}
