// The control interface's script: signs in with the Nostr extension (NIP-07), fetches the data
// with the session, draws the pages. The router serves it as the fleet app (`mode=fleet`), a node
// as its own dashboard (`mode=node`). Changes to a node are NIP-98 requests to the node's admin
// API that the extension signs: the router only relays them, it cannot make them.
'use strict';
(() => {
  const body = document.body;
  const BASE = body.dataset.base;
  const MODE = body.dataset.mode;
  const SESSION = body.dataset.session;
  const API = MODE === 'fleet' ? '/api/v1/fleet' : BASE + 'api';
  const $ = (sel, root = document) => root.querySelector(sel);
  const F = window.InfernetForms;
  const page = $('#page');
  const statusLine = $('#status');
  let csrf = null;
  let signer = null;

  // ---- small helpers -------------------------------------------------------------------------
  function h(tag, attrs = {}, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'text') el.textContent = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  const say = (text, kind = '') => {
    statusLine.textContent = text;
    statusLine.className = 'status ' + kind;
  };
  const pct = (x) => (x === null || x === undefined || Number.isNaN(x) ? '–' : `${Math.round(x)} %`);
  const age = (secs) => {
    if (secs === null || secs === undefined) return 'never';
    if (secs < 90) return `${Math.round(secs)} s ago`;
    if (secs < 5400) return `${Math.round(secs / 60)} min ago`;
    return `${Math.round(secs / 3600)} h ago`;
  };
  const short = (k) => (k && k.length > 24 ? `${k.slice(0, 12)}…${k.slice(-6)}` : k);
  // A node's name: its address on the router (the key it is known by), the node's npub here.
  const label = (n) => (n.key === 'this' ? short(n.name) || 'this node' : n.key);
  const b64 = (text) => btoa(String.fromCharCode(...new TextEncoder().encode(text)));

  // SHA-256 of a string as hex: SubtleCrypto where the page is a secure context, else this.
  async function sha256hex(text) {
    const data = new TextEncoder().encode(text);
    if (globalThis.crypto && crypto.subtle) {
      const d = new Uint8Array(await crypto.subtle.digest('SHA-256', data));
      return [...d].map((x) => x.toString(16).padStart(2, '0')).join('');
    }
    const K = [];
    const isPrime = (n) => { for (let i = 2; i * i <= n; i++) if (n % i === 0) return false; return true; };
    for (let n = 2, k = 0; k < 64; n++) if (isPrime(n)) K[k++] = (Math.cbrt(n) % 1) * 2 ** 32 | 0;
    let H = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];
    const len = data.length;
    const padded = new Uint8Array(((len + 9 + 63) >> 6) << 6);
    padded.set(data);
    padded[len] = 0x80;
    new DataView(padded.buffer).setUint32(padded.length - 4, len * 8);
    const r = (x, n) => (x >>> n) | (x << (32 - n));
    const w = new Array(64);
    for (let o = 0; o < padded.length; o += 64) {
      const v = new DataView(padded.buffer, o, 64);
      for (let i = 0; i < 16; i++) w[i] = v.getUint32(i * 4);
      for (let i = 16; i < 64; i++) {
        const s0 = r(w[i - 15], 7) ^ r(w[i - 15], 18) ^ (w[i - 15] >>> 3);
        const s1 = r(w[i - 2], 17) ^ r(w[i - 2], 19) ^ (w[i - 2] >>> 10);
        w[i] = (w[i - 16] + s0 + w[i - 7] + s1) | 0;
      }
      let [a, b, c, d, e, f, g, hh] = H;
      for (let i = 0; i < 64; i++) {
        const t1 = (hh + (r(e, 6) ^ r(e, 11) ^ r(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i]) | 0;
        const t2 = ((r(a, 2) ^ r(a, 13) ^ r(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) | 0;
        hh = g; g = f; f = e; e = (d + t1) | 0; d = c; c = b; b = a; a = (t1 + t2) | 0;
      }
      H = H.map((x, i) => (x + [a, b, c, d, e, f, g, hh][i]) | 0);
    }
    return H.map((x) => (x >>> 0).toString(16).padStart(8, '0')).join('');
  }

  // A NIP-98 `Authorization` header for `method url` with `text` as the body, signed by the
  // extension.
  async function nip98(method, url, text) {
    if (!window.nostr) throw new Error('No Nostr extension (NIP-07) found: install one that holds your operator key.');
    // A nonce: two identical requests in one second are two events (a server takes each once).
    const nonce = [...crypto.getRandomValues(new Uint8Array(16))].map((x) => x.toString(16).padStart(2, '0')).join('');
    const tags = [['u', url], ['method', method], ['nonce', nonce]];
    if (text) tags.push(['payload', await sha256hex(text)]);
    const event = await window.nostr.signEvent({
      kind: 27235, created_at: Math.floor(Date.now() / 1000), tags, content: '',
    });
    return 'Nostr ' + b64(JSON.stringify(event));
  }

  // A request with the session; 401 shows the signed-out state.
  async function api(path, opts = {}) {
    const headers = { ...(opts.headers || {}) };
    if (opts.method && opts.method !== 'GET') headers['x-csrf-token'] = csrf || '';
    if (opts.json !== undefined) headers['content-type'] = 'application/json';
    const r = await fetch(path, {
      method: opts.method || 'GET', headers, credentials: 'same-origin',
      body: opts.json !== undefined ? JSON.stringify(opts.json) : undefined,
    });
    const data = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
    if (r.status === 401 && path !== SESSION) signedOut('Your session ended: sign in again.');
    if (!r.ok) throw Object.assign(new Error(data.error || `HTTP ${r.status}`), { status: r.status, data });
    return data;
  }

  // A signed request to a node's admin API: relayed by the router (fleet) or straight to this
  // node (its own dashboard). Answers the node's status and body.
  async function admin(node, method, path, payload) {
    const text = payload === undefined ? '' : JSON.stringify(payload);
    if (MODE === 'fleet') {
      // Signed for the node's own key (`infernet://<npub>`, which every node accepts for relayed
      // requests and no other node does), else for the address the router reaches it at.
      const url = (node.node ? `infernet://${node.node}` : node.url.replace(/\/$/, '')) + path;
      const authorization = await nip98(method, url, text);
      return api(`${API}/${encodeURIComponent(node.key)}/admin`, {
        method: 'POST', json: { method, path, body: text || null, authorization },
      });
    }
    const url = location.origin + path;
    const authorization = await nip98(method, url, text);
    const headers = { authorization };
    if (text) headers['content-type'] = 'application/json';
    const r = await fetch(path, { method, headers, body: text || undefined, credentials: 'omit' });
    return { status: r.status, body: await r.json().catch(() => null) };
  }

  // ---- session -----------------------------------------------------------------------------
  function signedIn(who) {
    signer = who.signer;
    csrf = who.csrf;
    $('#who').textContent = `Signed in as ${signer.slice(0, 12)}…${signer.slice(-6)}`;
    $('#signin').hidden = true;
    $('#signout').hidden = false;
    route();
  }
  function signedOut(message) {
    signer = null;
    csrf = null;
    $('#who').textContent = '';
    $('#signin').hidden = false;
    $('#signout').hidden = true;
    page.replaceChildren();
    $('#alerts').replaceChildren();
    firing = [];
    if ($('#alert-count')) $('#alert-count').textContent = '';
    say(message || `Sign in with your Nostr extension (NIP-07) to see your ${MODE === 'fleet' ? 'fleet' : 'node'}.`);
  }
  async function signIn() {
    try {
      say('Asking your extension to sign in…');
      const url = new URL(SESSION, location.href).href;
      const authorization = await nip98('POST', url, '');
      const r = await fetch(SESSION, { method: 'POST', headers: { authorization }, credentials: 'same-origin' });
      const data = await r.json().catch(() => ({}));
      if (!r.ok) throw new Error(data.error || `HTTP ${r.status}`);
      signedIn(data);
    } catch (e) {
      say(`Sign-in refused: ${e.message}`, 'bad');
    }
  }
  async function signOut() {
    try {
      await api(SESSION, { method: 'DELETE' });
    } catch (e) { /* ended anyway on our side */ }
    signedOut('Signed out.');
  }

  // ---- pages -------------------------------------------------------------------------------
  const pages = {};
  let fleetCache = [];

  async function fleet() {
    const nodes = MODE === 'fleet' ? (await api(API)).nodes : [(await api(`${API}/status`)).node];
    fleetCache = nodes;
    if (MODE !== 'fleet') showAlerts(nodes);
    return nodes;
  }

  // The alerts region at the top of a node's own dashboard: what the node's state says is wrong
  // (the router's alert rules are the fleet's: `refreshAlerts`).
  function showAlerts(nodes) {
    const items = nodes.flatMap((n) => (n.problems || []).map((p) => h('li', {}, h('a', { href: `#/node/${encodeURIComponent(n.key)}` }, label(n)), `: ${p}`)));
    $('#alerts').replaceChildren(...(items.length ? [h('h2', { class: 'sr' }, 'Alerts'), h('ul', {}, items)] : []));
  }

  function dot(node) {
    const label = node.status === 'up' ? 'up' : node.status === 'closed' ? 'up, not taking jobs' : 'down';
    return h('span', { class: `dot ${node.status}`, role: 'img', 'aria-label': label, title: label });
  }

  function resources(node) {
    const s = node.system || {};
    const mem = s.memory_total_bytes ? (100 * s.memory_used_bytes) / s.memory_total_bytes : null;
    const gpus = (s.gpus || []).map((g) => g.utilization_percent).filter((x) => x !== undefined);
    const gpu = gpus.length ? gpus.reduce((a, b) => a + b, 0) / gpus.length : null;
    return { cpu: s.cpu_percent, mem, gpu };
  }

  pages.fleet = async () => {
    const [nodes, money] = await Promise.all([fleet(), api(`${API}/earnings`)]);
    const of = (period, key) => money.periods.find((p) => p.period === period).current.by_node[key] || { jobs: 0, earned: 0 };
    const count = (period, key) => of(period, key).jobs;
    say(nodes.length ? `${nodes.length} node${nodes.length === 1 ? '' : 's'}` : 'No node names your key yet: set operator.pubkeys in a node\'s config to your key and point its stats.endpoint at this router.');
    const rows = nodes.map((n) => {
      const r = resources(n);
      const jobs = n.jobs || {};
      return h('tr', { 'data-node': n.key },
        h('td', {}, dot(n), ' ', h('a', { href: `#/node/${encodeURIComponent(n.key)}` }, label(n))),
        h('td', { 'data-label': 'Heartbeat' }, age(n.heartbeat_age)),
        h('td', { 'data-label': 'Version' }, n.version || '–'),
        h('td', { 'data-label': 'Containers' }, (n.containers || []).join(', ') || '–'),
        h('td', { 'data-label': 'Available' }, n.open === false ? 'closed' : 'open'),
        h('td', { 'data-label': 'Jobs 24 h / 7 d / all' }, `${count('day', n.key)} / ${count('week', n.key)} / ${jobs.total ?? 0}`),
        h('td', { 'data-label': 'Success' }, pct(jobs.success_rate)),
        h('td', { 'data-label': 'Earned 7 d' }, `${(+of('week', n.key).earned).toFixed(4)} ${money.unit}`),
        h('td', { 'data-label': 'CPU' }, pct(r.cpu)),
        h('td', { 'data-label': 'GPU' }, pct(r.gpu)),
        h('td', { 'data-label': 'Memory' }, pct(r.mem)));
    });
    page.replaceChildren(h('h2', {}, 'Fleet'), h('table', { class: 'grid', id: 'fleet' },
      h('caption', { class: 'sr' }, 'Your nodes'),
      h('thead', {}, h('tr', {}, ['Node', 'Heartbeat', 'Version', 'Containers', 'Available', 'Jobs 24 h / 7 d / all', 'Success', 'Earned 7 d', 'CPU', 'GPU', 'Memory'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, rows)), addNode());
  };

  // "Add a node": the router reads the node's signed statement and says what to set.
  function addNode() {
    const out = h('output', { class: 'answer', 'aria-live': 'polite' });
    const f = h('form', { class: 'form', id: 'add-node' },
      h('h3', {}, 'Add a node'),
      field('address', 'Node address (host:port or URL)', { required: true, autocomplete: 'off', id: 'node-address' }),
      h('button', { type: 'submit', class: 'primary' }, 'Check node'), out);
    f.addEventListener('submit', async (e) => {
      e.preventDefault();
      try {
        const a = await api(`${API}/nodes`, { method: 'POST', json: { address: new FormData(f).get('address') } });
        out.className = `answer ${a.names_you ? 'good' : 'bad'}`;
        out.textContent = `${a.address}: ${a.next}`;
      } catch (err) {
        out.className = 'answer bad';
        out.textContent = err.message;
      }
    });
    return f;
  }

  pages.earnings = async () => {
    const data = await api(`${API}/earnings`);
    const unit = data.unit;
    const money = (x) => `${(+x).toFixed(4)} ${unit}`;
    const change = (c, p) => (p > 0 ? ` (${c >= p ? '+' : ''}${Math.round((100 * (c - p)) / p)} %)` : '');
    say(`Earnings by the prices the nodes advertised, in ${unit}; accounted, not settled.`);
    const table = (title, rows) => h('table', { class: 'grid' }, h('caption', {}, title),
      h('thead', {}, h('tr', {}, ['', 'Jobs', 'Earned', 'Before'].map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: 4 }, 'Nothing yet.'))));
    page.replaceChildren(h('h2', {}, 'Earnings'), h('div', { id: 'earnings' }, data.periods.map((p) => {
      const c = p.current;
      const b = p.previous;
      const rows = (by, before) => Object.entries(by).map(([k, v]) => h('tr', {},
        h('th', { scope: 'row' }, k), h('td', { 'data-label': 'Jobs' }, String(v.jobs)),
        h('td', { 'data-label': 'Earned' }, money(v.earned)), h('td', { 'data-label': 'Before' }, money(before[k]?.earned || 0))));
      return h('section', { class: 'card' },
        h('h3', {}, `Last ${p.period}: ${money(c.earned)}${change(c.earned, b.earned)}`),
        h('p', { class: 'meta' }, `${c.jobs} jobs; the ${p.period} before: ${b.jobs} jobs, ${money(b.earned)}`),
        table('Per node', rows(c.by_node, b.by_node)), table('Per container', rows(c.by_container, b.by_container)));
    })));
  };

  const SERIES = [
    ['jobs', 'Jobs per minute', ''],
    ['success', 'Success rate', '%'],
    ['p50', 'Latency p50', 'ms'],
    ['p99', 'Latency p99', 'ms'],
    ['cpu', 'CPU', '%'],
    ['memory', 'Memory', '%'],
    ['gpu', 'GPU', '%'],
    ['pending', 'Pending jobs', ''],
  ];

  const SPANS = { '1h': 3600, '24h': 86400, '7d': 7 * 86400, '30d': 30 * 86400 };

  function plot(container, title, t, values, unit, span) {
    const box = h('figure', { class: 'plot' }, h('figcaption', {}, title));
    container.append(box);
    const width = Math.max(200, (box.clientWidth || 300) - 18);
    // eslint-disable-next-line no-undef
    new uPlot({
      width, height: 160,
      series: [{}, { label: title, stroke: '#15803d', width: 2, fill: 'rgba(21,128,61,0.12)', spanGaps: false, value: (u, v) => (v == null ? '–' : `${(+v).toFixed(1)}${unit ? ' ' + unit : ''}`) }],
      // The whole range asked for, so that a few points sit where they belong in it.
      scales: { x: { time: true, range: () => { const now = Date.now() / 1000; return [now - span, now]; } } },
      axes: [{}, { size: 44 }],
      legend: { show: true },
    }, [t, values], box);
  }

  pages.node = async (key) => {
    const range = new URLSearchParams(location.hash.split('?')[1] || '').get('range') || (MODE === 'fleet' ? '24h' : '1h');
    const nodes = await fleet();
    key = key || (nodes[0] && nodes[0].key);
    const node = nodes.find((n) => n.key === key);
    if (!node) throw new Error(`No node ${key} in your fleet`);
    const hist = await api(MODE === 'fleet' ? `${API}/${encodeURIComponent(key)}/history?range=${range}` : `${API}/history?range=${range}`);
    say(`${label(node)}: ${hist.points.length} points over ${range}`);
    const ranges = (MODE === 'fleet' ? ['1h', '24h', '7d', '30d'] : ['1h', '24h']).map((r) => h('a', {
      href: `#/node/${encodeURIComponent(key)}?range=${r}`, class: r === range ? 'chip on' : 'chip', 'aria-current': r === range ? 'true' : null,
    }, r));
    const plots = h('div', { class: 'plots', id: 'plots' });
    const r = resources(node);
    const prices = Object.entries(node.pricing || {}).map(([c, p]) => h('li', {}, `${c}: ${p.per_job ?? 0} ${p.unit} per job${p.per_second ? ` + ${p.per_second} per s` : ''}`));
    page.replaceChildren(
      h('h2', {}, dot(node), ' ', label(node)),
      h('p', { class: 'meta' }, `${short(node.node || node.name) || ''} · version ${node.version || '–'} · heartbeat ${age(node.heartbeat_age)} · CPU ${pct(r.cpu)} · memory ${pct(r.mem)} · GPU ${pct(r.gpu)}`),
      h('nav', { class: 'ranges', 'aria-label': 'Time range' }, ranges),
      plots,
      h('h3', {}, 'Containers'),
      h('ul', { id: 'containers' }, (node.container_states || node.containers || []).map((c) => h('li', {}, typeof c === 'string' ? c : `${c.id}: ${typeof c.state === 'object' && c.state ? c.state.state || JSON.stringify(c.state) : c.state}`))),
      h('h3', {}, 'Prices'),
      h('ul', { id: 'prices' }, prices.length ? prices : h('li', {}, 'free (no prices set)')),
      node.chain ? h('p', {}, `Chain: ${node.chain.enabled ? JSON.stringify(node.chain.state || 'enabled') : 'off'}`) : null,
      MODE === 'fleet' ? await record(key) : null,
    );
    const t = hist.points.map((p) => p.t);
    for (const [name, title, unit] of SERIES) {
      plot(plots, title, t, hist.points.map((p) => p[name] ?? null), unit, SPANS[range] || 3600);
    }
  };

  // Why the chooser left a node out, in words (the filters of `GET /api/v1/nodes/{node}`).
  const WHY = {
    price: 'its price was above what the client would pay',
    hours: 'it was outside its hours',
    hardware: 'it lacks the hardware the job asked for',
    health: 'it was not answering or not healthy',
    load: 'it was too busy',
  };

  // The node's public record as this router measured it, in plain words.
  async function record(key) {
    const box = h('section', { id: 'record' }, h('h3', {}, 'Public record (what clients see)'));
    let r;
    try {
      r = await api(`/api/v1/nodes/${encodeURIComponent(key)}`);
    } catch (e) {
      box.append(h('p', { class: 'meta' }, `No record yet: ${e.message}`));
      return box;
    }
    const share = (x) => (x == null ? 'no jobs yet' : pct(100 * x));
    const up = (x) => (x == null ? 'not measured yet' : pct(100 * x));
    const ran = r.jobs.succeeded + r.jobs.failed;
    const left = Object.entries(r.excluded_24h).filter(([, n]) => n > 0);
    const table = (id, caption, heads, rows) => h('table', { class: 'grid', id }, h('caption', {}, caption),
      h('thead', {}, h('tr', {}, heads.map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: heads.length }, 'Nothing yet.'))));
    box.append(
      h('p', { id: 'record-success' }, ran ? `${share(r.success_rate.all_time)} of its ${ran} jobs through this router succeeded; over the last 30 days: ${share(r.success_rate['30d'])}.`
        : 'No job ran on it through this router yet.'),
      h('p', { id: 'record-uptime' }, `Up (the router's probes answered): ${up(r.uptime['24h'])} over 24 h, ${up(r.uptime['7d'])} over 7 days, ${up(r.uptime['30d'])} over 30 days.`),
      h('h4', {}, 'Why it was passed over in the last 24 h'),
      left.length ? h('ul', { id: 'passed-over' }, left.map(([k, n]) => h('li', {}, `${n} job${n === 1 ? '' : 's'} went elsewhere because ${WHY[k] || k}.`)))
        : h('p', { id: 'passed-over' }, 'Never: no job went elsewhere because of this node.'),
      table('record-latency', 'Latency per container (30 days)', ['Containers', 'Jobs', 'Mean'], r.latency_ms.map((l) => h('tr', {},
        h('td', {}, l.containers.join(' → ')), h('td', { 'data-label': 'Jobs' }, String(l.jobs)),
        h('td', { 'data-label': 'Mean' }, l.mean_ms == null ? '–' : `${Math.round(l.mean_ms)} ms`)))),
      table('record-days', 'Jobs per day (UTC)', ['Day', 'Jobs', 'Succeeded'], r.jobs_per_day.slice().reverse().map((d) => h('tr', {},
        h('td', {}, d.day), h('td', { 'data-label': 'Jobs' }, String(d.jobs)), h('td', { 'data-label': 'Succeeded' }, String(d.succeeded))))));
    return box;
  }

  // A form whose submit signs a request: it shows each node's answer; `locate(path)` finds the
  // input a problem of a node's 400 names, to mark it there.
  function form(fields, submit, label, locate = () => null) {
    const f = h('form', { class: 'form' }, fields, h('button', { type: 'submit', class: 'primary' }, label));
    f.addEventListener('submit', async (e) => {
      e.preventDefault();
      const out = f.querySelector('.answer') || f.appendChild(h('output', { class: 'answer', 'aria-live': 'polite' }));
      out.textContent = 'Asking your extension to sign…';
      F.mark(h, f, null);
      try {
        const result = await submit(new FormData(f));
        const answers = Array.isArray(result) ? result : [{ answer: result }];
        out.className = `answer ${answers.every((a) => a.answer.status < 300) ? 'good' : 'bad'}`;
        out.replaceChildren(...answers.map((a) => h('span', { class: 'line' },
          `${a.node ? `${a.node}: the node` : 'The node'} answered ${a.answer.status}: ${JSON.stringify(a.answer.body)}`)));
        for (const p of answers.flatMap((a) => (a.answer.body && a.answer.body.problems) || [])) {
          const input = locate(p.path);
          if (input) F.mark(h, f, input, p.message);
        }
      } catch (err) {
        out.className = 'answer bad';
        out.textContent = err.message;
        if (err.field instanceof Element) F.mark(h, f, err.field, err.message);
      }
    });
    return f;
  }
  const field = (name, label, attrs = {}) => h('label', {}, h('span', {}, label), h('input', { name, ...attrs }));

  pages.settings = async (key) => {
    const nodes = await fleet();
    if (!nodes.length) { say('No node to set.'); page.replaceChildren(); return; }
    key = key || nodes[0].key;
    const node = nodes.find((n) => n.key === key) || nodes[0];
    say(`Settings of ${label(node)}: every change is signed by your extension and sent to the node.`);
    const chooser = MODE === 'fleet' ? h('label', {}, h('span', {}, 'Node'), h('select', {
      id: 'node-select', onchange: (e) => { location.hash = `#/settings/${encodeURIComponent(e.target.value)}`; },
    }, nodes.map((n) => h('option', { value: n.key, selected: n.key === node.key }, label(n))))) : null;
    const current = h('pre', { id: 'current-settings', class: 'json' }, 'Press “Load” to read the node’s settings (signed).');
    // Reading the settings is a signed request too: only when asked. What it reads fills the forms.
    const load = h('button', { type: 'button', id: 'load-settings', onclick: async () => {
      try {
        const a = await admin(node, 'GET', '/admin/settings');
        current.textContent = JSON.stringify(a.body, null, 2);
        if (a.status === 200 && a.body) {
          editSchedule(a.body);
          const p = (a.body.pricing || {})[$('#price-container').value];
          if (p) {
            $('#price-per-job').value = p.per_job ?? '';
            $('#price-per-second').value = p.per_second ?? '';
            $('#price-unit').value = p.unit;
          }
        }
      } catch (e) { current.textContent = e.message; }
    } }, 'Load settings');
    const containers = (node.containers || []);
    const price = form([
      h('label', {}, h('span', {}, 'Container'), h('select', { name: 'container', id: 'price-container' }, containers.map((c) => h('option', { value: c }, c)))),
      field('per_job', 'Price per job', { type: 'number', step: 'any', min: '0', required: true, id: 'price-per-job', inputmode: 'decimal' }),
      field('per_second', 'Price per second (optional)', { type: 'number', step: 'any', min: '0', id: 'price-per-second', inputmode: 'decimal' }),
      field('unit', 'Unit', { value: 'USD', required: true, id: 'price-unit' }),
    ], async (d) => {
      const cur = (await admin(node, 'GET', '/admin/settings')).body || {};
      const p = { per_job: Number(d.get('per_job')), unit: d.get('unit') };
      if (d.get('per_second')) p.per_second = Number(d.get('per_second'));
      cur.pricing = { ...(cur.pricing || {}), [d.get('container')]: p };
      return admin(node, 'PUT', '/admin/settings', cur);
    }, 'Set price');
    price.id = 'price-form';
    // Availability and limits are edited from what the node holds: the editors appear once its
    // settings are loaded (a save replaces both).
    const other = h('div', { id: 'schedule-place' }, h('p', { class: 'meta' }, 'Load the node’s settings (signed) to edit its availability and resource limits.'));
    function editSchedule(current) {
      const schedule = F.availability(h, current.availability || null);
      const limits = F.limits(h, containers, current.limits || {});
      const f = form([schedule.el, limits.el], async () => {
        const availability = schedule.read();
        const lim = limits.read();
        const cur = (await admin(node, 'GET', '/admin/settings')).body || {};
        if (availability) cur.availability = availability;
        else delete cur.availability;
        cur.limits = lim;
        return admin(node, 'PUT', '/admin/settings', cur);
      }, 'Save availability and limits', (path) => schedule.input(path) || limits.input(path));
      f.id = 'schedule-form';
      other.replaceChildren(f);
    }
    const add = form([
      field('id', 'Container id', { required: true, id: 'container-id', autocomplete: 'off' }),
      field('image', 'Image (for nodes that run Docker)', { id: 'container-image', autocomplete: 'off' }),
      field('port', 'Port of the service', { type: 'number', min: '1', max: '65535', id: 'container-port', inputmode: 'numeric' }),
      field('url', 'Or the URL of a running service', { id: 'container-url', autocomplete: 'off' }),
      field('description', 'Description', { id: 'container-description' }),
      MODE === 'fleet' ? h('fieldset', { id: 'container-nodes' }, h('legend', {}, 'Add to nodes'),
        nodes.map((n) => h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'nodes', value: n.key, checked: n.key === node.key }), h('span', {}, label(n))))) : null,
    ], async (d) => {
      const entry = { id: d.get('id') };
      for (const k of ['image', 'url', 'description']) if (d.get(k)) entry[k] = d.get(k);
      if (d.get('port')) entry.port = Number(d.get('port'));
      const chosen = MODE === 'fleet' ? nodes.filter((n) => d.getAll('nodes').includes(n.key)) : [node];
      if (!chosen.length) throw new Error('Choose at least one node.');
      const answers = [];
      // One signed request per node: each is signed for that node's own URL.
      for (const n of chosen) {
        answers.push({ node: label(n), answer: await admin(n, 'POST', '/admin/containers', entry).catch((e) => ({ status: 0, body: e.message })) });
      }
      return answers;
    }, 'Add container');
    add.id = 'container-form';
    const remove = containers.map((c) => h('li', {}, c, ' ', h('button', { type: 'button', class: 'small', 'aria-label': `Remove ${c}`, onclick: async (e) => {
      const a = await admin(node, 'DELETE', `/admin/containers/${encodeURIComponent(c)}`).catch((err) => ({ status: 0, body: err.message }));
      e.target.replaceWith(h('output', {}, `${a.status}: ${JSON.stringify(a.body)}`));
    } }, 'Remove')));
    const modes = ['pause', 'resume', 'drain'].map((m) => h('button', { type: 'button', id: `mode-${m}`, onclick: async (e) => {
      const a = await admin(node, 'POST', `/admin/${m}`).catch((err) => ({ status: 0, body: err.message }));
      e.target.parentElement.querySelector('output').textContent = `${a.status}: ${JSON.stringify(a.body)}`;
    } }, m[0].toUpperCase() + m.slice(1)));
    page.replaceChildren(h('h2', {}, 'Settings'), chooser,
      h('section', {}, h('h3', {}, 'Current'), load, current),
      h('section', {}, h('h3', {}, 'Prices'), price),
      h('section', {}, h('h3', {}, 'Availability and limits'), other),
      h('section', {}, h('h3', {}, 'Taking jobs'), h('div', { class: 'row' }, modes, h('output', { 'aria-live': 'polite' }))),
      h('section', {}, h('h3', {}, 'Containers'), h('ul', { id: 'container-list' }, remove), add));
  };

  pages.jobs = async () => {
    const q = new URLSearchParams(location.hash.split('?')[1] || '');
    const data = await api(`${API}/jobs?${q}`);
    say(`${data.jobs.length} job${data.jobs.length === 1 ? '' : 's'} on page ${data.page}`);
    const filters = h('form', { class: 'filters', id: 'job-filters', onsubmit: (e) => {
      e.preventDefault();
      const p = new URLSearchParams();
      for (const [k, v] of new FormData(e.target)) if (v) p.set(k, v);
      location.hash = `#/jobs?${p}`;
    } },
    h('label', {}, h('span', {}, 'Node'), h('select', { name: 'node' }, h('option', { value: '' }, 'all'), fleetCache.map((n) => h('option', { value: n.key, selected: q.get('node') === n.key }, label(n))))),
    field('container', 'Container', { value: q.get('container') || '' }),
    h('label', {}, h('span', {}, 'Outcome'), h('select', { name: 'outcome' }, ['', 'succeeded', 'failed', 'cancelled'].map((o) => h('option', { value: o, selected: (q.get('outcome') || '') === o }, o || 'all')))),
    h('button', { type: 'submit' }, 'Filter'));
    const pageLink = (n, label) => { const p = new URLSearchParams(q); p.set('page', n); return h('a', { href: `#/jobs?${p}`, class: 'chip' }, label); };
    page.replaceChildren(h('h2', {}, 'Jobs'), filters,
      h('table', { class: 'grid', id: 'jobs' }, h('thead', {}, h('tr', {}, ['Finished', 'Node', 'Containers', 'Outcome', 'Duration', 'Price'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, data.jobs.length ? null : h('tr', {}, h('td', { colspan: 6 }, 'No jobs match.')), data.jobs.map((j) => h('tr', {},
          h('td', {}, new Date(j.finished_at).toLocaleString()), h('td', { 'data-label': 'Node' }, j.node), h('td', { 'data-label': 'Containers' }, j.containers.join(' → ')),
          h('td', { 'data-label': 'Outcome' }, j.outcome), h('td', { 'data-label': 'Duration' }, `${j.duration_ms} ms`), h('td', { 'data-label': 'Price' }, j.price == null ? '–' : `${j.price} ${j.unit || ''}`))))),
      h('nav', { class: 'pager', 'aria-label': 'Pages' }, data.page > 1 ? pageLink(data.page - 1, 'Newer') : null, data.more ? pageLink(data.page + 1, 'Older') : null));
  };

  pages.diagnostics = async () => {
    const nodes = await fleet();
    say('What each node reports about itself; details need a signature.');
    page.replaceChildren(h('h2', {}, 'Diagnostics'), h('div', { id: 'diagnostics' }, nodes.map((n) => {
      const out = h('pre', { class: 'json' });
      const problems = (n.problems || []).map((p) => h('li', { class: 'bad' }, p));
      return h('section', { class: 'card' }, h('h3', {}, dot(n), ' ', label(n)),
        h('ul', {}, problems.length ? problems : h('li', { class: 'good' }, 'No problem seen from here.')),
        h('button', { type: 'button', onclick: async () => {
          try {
            const a = await admin(n, 'GET', '/admin/status');
            const d = a.body && a.body.diagnostics;
            out.textContent = JSON.stringify(d || a.body, null, 2);
            if (d && d.clock) {
              const skew = Math.round(Math.abs(Date.now() - d.clock.unix_ms) / 1000);
              if (skew > 30) out.before(h('p', { class: 'bad' }, `The node's clock is ${skew} s away from this device's: signed requests fail beyond 60 s. Sync its clock (NTP).`));
            }
            if (d && d.docker && !d.docker.reachable) out.before(h('p', { class: 'bad' }, 'The Docker engine does not answer: containers cannot start.'));
            if (d && d.gpus && d.gpus.host.length && !d.gpus.containers.visible) out.before(h('p', { class: 'bad' }, `GPUs on the host, not visible to containers: ${d.gpus.containers.reason}`));
          } catch (e) { out.textContent = e.message; }
        } }, 'Ask the node (signed)'), out);
    })));
  };

  // ---- alerts: the router's rules over the operator's nodes (fleet); a node's own state (node) --
  const ALERTS = '/api/v1/alerts';
  let firing = [];
  const rule = (r) => r.replace(/_/g, ' ');
  const when = (t) => (t ? new Date(t).toLocaleString() : '–');

  // The firing alerts: counted beside "Alerts" in the nav and listed at the top of every page.
  async function refreshAlerts() {
    if (MODE !== 'fleet' || !signer) return;
    firing = (await api(`${ALERTS}?status=firing&limit=100`)).alerts;
    const link = $('#nav a[data-page="alerts"]');
    const badge = $('#alert-count') || link.appendChild(h('span', { class: 'count', id: 'alert-count' }));
    badge.textContent = firing.length ? `${firing.length}${firing.length === 100 ? '+' : ''}` : '';
    badge.title = `${firing.length} firing`;
    const top = firing.slice(0, 5).map((a) => h('li', {}, h('strong', {}, rule(a.rule)), ' on ',
      h('a', { href: `#/node/${encodeURIComponent(a.node)}` }, a.node), `: ${a.summary}`));
    $('#alerts').replaceChildren(...(firing.length ? [
      h('h2', { class: 'alerts-title' }, h('a', { href: '#/alerts' }, `${firing.length} alert${firing.length === 1 ? '' : 's'} firing`)),
      h('ul', { id: 'firing-top' }, top), firing.length > top.length ? h('p', {}, h('a', { href: '#/alerts' }, `and ${firing.length - top.length} more`)) : null,
    ].filter(Boolean) : []));
  }

  // The firing alerts (acknowledge each) and the history of resolved ones, into `box`.
  async function drawAlertLists(box) {
    const resolved = (await api(`${ALERTS}?status=resolved&limit=50`)).alerts;
    const item = (a) => h('li', { class: 'alert', 'data-alert': a.id },
      h('strong', {}, rule(a.rule)), ' on ', h('a', { href: `#/node/${encodeURIComponent(a.node)}` }, a.node), `: ${a.summary}`,
      h('span', { class: 'meta' }, ` · since ${when(a.started_at)}${a.resolved_at ? ` · resolved ${when(a.resolved_at)}` : ''}${a.silenced ? ' · silenced' : ''}`),
      a.status !== 'firing' ? null : a.acked_at ? h('span', { class: 'meta acked' }, ` · acknowledged ${when(a.acked_at)}`)
        : h('button', { type: 'button', class: 'small ack', 'aria-label': `Acknowledge ${rule(a.rule)} on ${a.node}`, onclick: async (e) => {
          try {
            const acked = await api(`${ALERTS}/${encodeURIComponent(a.id)}/ack`, { method: 'POST' });
            e.target.replaceWith(h('span', { class: 'meta acked' }, ` · acknowledged ${when(acked.acked_at)}`));
          } catch (err) { e.target.replaceWith(h('span', { class: 'bad' }, ` ${err.message}`)); }
        } }, 'Acknowledge'));
    box.replaceChildren(
      h('section', {}, h('h3', {}, `Firing (${firing.length})`),
        firing.length ? h('ul', { id: 'alert-list', class: 'alert-list' }, firing.map(item)) : h('p', { id: 'no-alerts' }, 'No alert is firing.')),
      h('section', {}, h('h3', {}, 'Resolved'),
        resolved.length ? h('ul', { id: 'alert-history', class: 'alert-list' }, resolved.map(item)) : h('p', { class: 'meta', id: 'no-history' }, 'Nothing resolved yet.')));
  }

  // The operator's alert settings; a save shows the router's answer, a bad field beside it.
  function alertSettingsForm(settings) {
    const editor = F.alertSettings(h, settings, Object.keys(settings.rules || {}));
    const out = h('output', { class: 'answer', 'aria-live': 'polite', id: 'alert-settings-answer' });
    const f = h('form', { class: 'form wide', id: 'alert-settings' }, editor.el, h('button', { type: 'submit', class: 'primary' }, 'Save alert settings'), out);
    f.addEventListener('submit', async (e) => {
      e.preventDefault();
      F.mark(h, f, null);
      out.className = 'answer';
      out.textContent = 'Saving…';
      try {
        await api(`${ALERTS}/settings`, { method: 'PUT', json: editor.read() });
        out.className = 'answer good';
        out.textContent = 'Saved: the router answered 200.';
      } catch (err) {
        out.className = 'answer bad';
        if (err.field instanceof Element) F.mark(h, f, err.field, err.message);
        for (const p of (err.data && err.data.problems) || []) {
          const input = editor.input(p.field);
          if (input) F.mark(h, f, input, p.message);
        }
        out.textContent = err.status ? `The router answered ${err.status}: ${err.message}` : err.message;
      }
    });
    return f;
  }

  pages.alerts = async () => {
    if (MODE !== 'fleet') {
      const nodes = await fleet();
      const problems = nodes.flatMap((n) => (n.problems || []).map((p) => h('li', {}, `${label(n)}: ${p}`)));
      say('Alerts appear here and at the top of every page.');
      page.replaceChildren(h('h2', {}, 'Alerts'), problems.length ? h('ul', { id: 'alert-list' }, problems) : h('p', { id: 'no-alerts' }, 'No alerts.'));
      return;
    }
    const [settings] = await Promise.all([api(`${ALERTS}/settings`), refreshAlerts()]);
    const lists = h('div', { id: 'alert-lists' });
    await drawAlertLists(lists);
    say('Alerts of your nodes, as the router’s rules see them; they are sent where your settings say.');
    page.replaceChildren(h('h2', {}, 'Alerts'), lists, h('section', {}, h('h3', {}, 'Your alert settings'), alertSettingsForm(settings)));
  };

  async function route() {
    if (!signer) return;
    const [path] = location.hash.replace(/^#\/?/, '').split('?');
    const [name, ...rest] = path.split('/');
    const fleetOnly = ['fleet', 'jobs', 'earnings'];
    const known = pages[name] && (MODE === 'fleet' || !fleetOnly.includes(name));
    const which = known ? name : MODE === 'fleet' ? 'fleet' : 'node';
    for (const a of document.querySelectorAll('#nav a')) a.setAttribute('aria-current', a.dataset.page === which ? 'page' : 'false');
    try {
      if (which !== 'alerts') refreshAlerts().catch(() => {});
      await pages[which](rest.length ? decodeURIComponent(rest.join('/')) : undefined);
      body.dataset.page = which;
    } catch (e) {
      if (e.status !== 401) say(e.message, 'bad');
    }
  }

  // Pages that only show data are redrawn every 15 s while the app is in view; pages with forms
  // are left alone (a redraw would lose what is being typed), but the alerts' lists and count are
  // kept current.
  const LIVE = ['fleet', 'node', 'earnings'];
  setInterval(() => {
    if (!signer || document.visibilityState !== 'visible') return;
    if (LIVE.includes(body.dataset.page)) route();
    else if (MODE === 'fleet') {
      refreshAlerts().then(() => body.dataset.page === 'alerts' && $('#alert-lists') && drawAlertLists($('#alert-lists'))).catch(() => {});
    }
  }, 15_000);

  $('#signin').addEventListener('click', signIn);
  $('#signout').addEventListener('click', signOut);
  window.addEventListener('hashchange', route);
  if ('serviceWorker' in navigator && body.dataset.sw) {
    navigator.serviceWorker.register(body.dataset.sw, { scope: BASE }).catch(() => {});
  }
  fetch(SESSION, { credentials: 'same-origin' })
    .then((r) => (r.ok ? r.json().then(signedIn) : signedOut()))
    .catch(() => signedOut('Offline: the app is here, your data is not.'));
})();
