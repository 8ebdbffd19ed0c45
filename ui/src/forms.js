// Form editors of the control interface, without data calls: a node's availability (the weekly
// schedule the node's settings take: time zone, windows of days and hours, whole-day exceptions,
// chain_outside), its per-container resource limits, and the operator's alert settings (every
// boolean and number field rendered by its name, so a field the server adds shows up by itself).
// Each editor answers its element and `read()`, which gives the document back or throws an Error
// whose `field` names the input at fault. app.js loads after this file and uses
// `window.InfernetForms`.
'use strict';
(() => {
  const DAYS = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'];
  const DAY_NAMES = { mon: 'Mon', tue: 'Tue', wed: 'Wed', thu: 'Thu', fri: 'Fri', sat: 'Sat', sun: 'Sun' };
  // `HH:MM`, or `24:00` (the end of the day), as the node takes them.
  const TIME = /^(([01]\d|2[0-3]):[0-5]\d|24:00)$/;
  const fail = (field, message) => Object.assign(new Error(message), { field });

  // The time zones this browser knows (IANA names), for the time-zone field's suggestions.
  const zones = () => (Intl.supportedValuesOf ? Intl.supportedValuesOf('timeZone') : []);
  const here = () => Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';

  // Marks `field` (an input) with `message` beside it; `null` clears every mark in `root`.
  function mark(h, root, input, message) {
    if (!input) {
      for (const e of root.querySelectorAll('.field-error')) e.remove();
      for (const e of root.querySelectorAll('[aria-invalid]')) e.removeAttribute('aria-invalid');
      return;
    }
    const id = `${input.id || input.name}-error`;
    input.setAttribute('aria-invalid', 'true');
    input.setAttribute('aria-describedby', id);
    // Inside the field's label (under the input), so the message stays with its field in a row.
    const note = h('span', { class: 'field-error bad', id, role: 'alert' }, message);
    const label = input.closest('label');
    if (label) label.append(note);
    else input.after(note);
  }

  // The weekly schedule editor. `value`: the node's `availability` (null: always available).
  function availability(h, value) {
    const rows = h('div', { class: 'windows', id: 'availability-windows' });
    const exceptions = h('div', { class: 'exceptions', id: 'availability-exceptions' });
    let n = 0;
    const removeButton = (what, row) => h('button', { type: 'button', class: 'small', 'aria-label': `Remove this ${what}`, onclick: () => row.remove() }, 'Remove');
    function addWindow(w = { days: ['mon', 'tue', 'wed', 'thu', 'fri'], from: '09:00', to: '17:00' }) {
      const i = n++;
      const row = h('fieldset', { class: 'window', 'data-window': i },
        h('legend', {}, 'Open'),
        h('div', { class: 'days row' }, DAYS.map((d) => h('label', { class: 'check' },
          h('input', { type: 'checkbox', name: `w${i}-${d}`, value: d, checked: w.days.includes(d) }), h('span', {}, DAY_NAMES[d])))),
        h('div', { class: 'row hours' },
          h('label', {}, h('span', {}, 'From (HH:MM)'), h('input', { name: `w${i}-from`, value: w.from, required: true, inputmode: 'numeric', autocomplete: 'off' })),
          h('label', {}, h('span', {}, 'To (HH:MM, 24:00 = end of day)'), h('input', { name: `w${i}-to`, value: w.to, required: true, inputmode: 'numeric', autocomplete: 'off' }))));
      row.append(removeButton('window', row));
      rows.append(row);
    }
    function addException(x = { date: '', available: false }) {
      const i = n++;
      const row = h('div', { class: 'row exception', 'data-exception': i },
        h('label', {}, h('span', {}, 'Date'), h('input', { type: 'date', name: `x${i}-date`, value: x.date, required: true })),
        h('label', {}, h('span', {}, 'That day'), h('select', { name: `x${i}-available` },
          h('option', { value: 'false', selected: !x.available }, 'closed all day'),
          h('option', { value: 'true', selected: x.available }, 'open all day'))));
      row.append(removeButton('exception', row));
      exceptions.append(row);
    }
    const always = h('input', { type: 'checkbox', name: 'always', id: 'availability-always', checked: !value });
    const schedule = h('div', { class: 'schedule', id: 'availability-schedule', hidden: !value });
    always.addEventListener('change', () => { schedule.hidden = always.checked; });
    const list = h('datalist', { id: 'time-zones' }, zones().map((z) => h('option', { value: z })));
    const tz = h('input', { name: 'timezone', id: 'availability-timezone', list: 'time-zones', value: (value && value.timezone) || here(), autocomplete: 'off', required: true });
    const chain = h('input', { type: 'checkbox', name: 'chain_outside', id: 'availability-chain-outside', checked: !value || value.chain_outside !== false });
    schedule.append(
      h('label', {}, h('span', {}, 'Time zone (IANA name, e.g. Europe/Berlin)'), tz), list,
      h('p', { class: 'meta' }, 'Open in these windows (local time of that zone); a window whose end is not after its start runs overnight.'),
      rows, h('button', { type: 'button', id: 'add-window', onclick: () => addWindow() }, 'Add a window'),
      h('h4', {}, 'Exceptions'), exceptions, h('button', { type: 'button', id: 'add-exception', onclick: () => addException() }, 'Add an exception'),
      h('label', { class: 'check' }, chain, h('span', {}, 'Serve chain subscriptions outside these hours too (chain_outside)')));
    for (const w of (value && value.weekly) || []) addWindow(w);
    for (const x of (value && value.exceptions) || []) addException(x);
    if (!value) addWindow();
    const el = h('fieldset', { id: 'availability-editor' }, h('legend', {}, 'Availability'),
      h('label', { class: 'check' }, always, h('span', {}, 'Always available (no schedule)')), schedule);

    function read() {
      if (always.checked) return null;
      const zone = tz.value.trim();
      if (!zone) throw fail(tz, 'Name a time zone, e.g. Europe/Berlin.');
      const weekly = [...rows.querySelectorAll('.window')].map((row) => {
        const i = row.dataset.window;
        const days = DAYS.filter((d) => row.querySelector(`[name="w${i}-${d}"]`).checked);
        const from = row.querySelector(`[name="w${i}-from"]`);
        const to = row.querySelector(`[name="w${i}-to"]`);
        if (!days.length) throw fail(row.querySelector('input'), 'Choose at least one day.');
        for (const t of [from, to]) if (!TIME.test(t.value.trim())) throw fail(t, 'A time as HH:MM (00:00 to 24:00).');
        return { days, from: from.value.trim(), to: to.value.trim() };
      });
      const excepted = [...exceptions.querySelectorAll('.exception')].map((row) => {
        const i = row.dataset.exception;
        const date = row.querySelector(`[name="x${i}-date"]`);
        if (!/^\d{4}-\d{2}-\d{2}$/.test(date.value)) throw fail(date, 'Choose a date.');
        return { date: date.value, available: row.querySelector(`[name="x${i}-available"]`).value === 'true' };
      });
      return { timezone: zone, weekly, exceptions: excepted, chain_outside: chain.checked };
    }
    // The input a node's problem path names (`availability.weekly[0].to`), for its 400.
    function input(path) {
      const w = /^availability\.weekly\[(\d+)\]\.?(\w*)/.exec(path);
      if (w) {
        const row = rows.querySelectorAll('.window')[Number(w[1])];
        return row && (row.querySelector(`[name$="-${w[2]}"]`) || row.querySelector('input'));
      }
      const x = /^availability\.exceptions\[(\d+)\]/.exec(path);
      if (x) return exceptions.querySelectorAll('.exception')[Number(x[1])]?.querySelector('input') || null;
      return path === 'availability.timezone' ? tz : null;
    }
    return { el, read, input };
  }

  // Resource limits per container: `containers` ids, `value` the node's `limits`.
  function limits(h, containers, value) {
    const ids = [...new Set([...containers, ...Object.keys(value || {})])];
    const num = (name, label, v, attrs = {}) => h('label', {}, h('span', {}, label),
      h('input', { name, value: v ?? '', type: 'number', min: '0', inputmode: 'decimal', ...attrs }));
    const rows = ids.map((id) => {
      const l = (value || {})[id] || {};
      const gpus = Array.isArray(l.gpus) ? l.gpus.join(',') : (l.gpus ?? '');
      return h('fieldset', { class: 'limits', 'data-container': id }, h('legend', {}, id),
        h('div', { class: 'row' },
          num('cpus', 'CPUs', l.cpus, { step: 'any' }),
          num('memory_mb', 'Memory (MiB)', l.memory_mb, { step: '1' }),
          h('label', {}, h('span', {}, 'GPUs (a count, or device ids 0,1)'), h('input', { name: 'gpus', value: gpus, autocomplete: 'off', inputmode: 'numeric' })),
          num('max_jobs', 'Jobs at once', l.max_jobs, { step: '1', min: '1' })));
    });
    const el = h('fieldset', { id: 'limits-editor' }, h('legend', {}, 'Resource limits per container (empty: no limit)'),
      rows.length ? rows : h('p', { class: 'meta' }, 'No containers.'));
    function read() {
      const out = {};
      for (const row of el.querySelectorAll('fieldset.limits')) {
        const l = {};
        for (const name of ['cpus', 'memory_mb', 'max_jobs']) {
          const input = row.querySelector(`[name="${name}"]`);
          if (input.value === '') continue;
          const v = Number(input.value);
          if (!Number.isFinite(v) || v < 0 || (name !== 'cpus' && !Number.isInteger(v))) throw fail(input, name === 'cpus' ? 'A number of CPUs.' : 'A whole number.');
          l[name] = v;
        }
        const g = row.querySelector('[name="gpus"]');
        const text = g.value.trim();
        if (text) {
          if (/^\d+$/.test(text)) l.gpus = Number(text);
          else if (/^\d+(\s*,\s*\d+)*$/.test(text)) l.gpus = text.split(',').map((x) => Number(x.trim()));
          else throw fail(g, 'A count (2) or device ids (0,1).');
        }
        if (Object.keys(l).length) out[row.dataset.container] = l;
      }
      return out;
    }
    // The input of `limits.<container>.<field>`, for a node's 400.
    function input(path) {
      const m = /^limits\.(.+)\.(\w+)$/.exec(path);
      const row = m && [...el.querySelectorAll('fieldset.limits')].find((r) => r.dataset.container === m[1]);
      return (row && row.querySelector(`[name="${m[2]}"]`)) || null;
    }
    return { el, read, input };
  }

  // Words for a settings field's name: `after_s` → "after (s)", `node_eth` → "node (ETH)".
  const words = (key) => {
    const units = { _s: ' (s)', _ms: ' (ms)', _eth: ' (ETH)', _mb: ' (MiB)' };
    for (const [suffix, unit] of Object.entries(units)) if (key.endsWith(suffix)) return key.slice(0, -suffix.length).replace(/_/g, ' ') + unit;
    return key.replace(/_/g, ' ');
  };

  // The operator's alert settings. Booleans and numbers anywhere in `value` become checkboxes
  // and number fields named by their path (`rules.success_rate.threshold`, `nostr_dm`);
  // `webhooks` is one per line; `silences` are rows. Fields of other shapes are kept as they are.
  function alertSettings(h, value, ruleNames) {
    const inputs = [];
    const scalar = (path, key, v) => {
      const id = `alert-${path.replace(/[^a-z0-9]+/gi, '-')}`;
      if (typeof v === 'boolean') {
        const input = h('input', { type: 'checkbox', id, 'data-path': path, checked: v });
        inputs.push(input);
        return h('label', { class: 'check' }, input, h('span', {}, key === 'enabled' ? 'on' : words(key)));
      }
      const input = h('input', { type: 'number', step: 'any', id, 'data-path': path, value: v ?? '', 'data-nullable': v === null ? 'true' : null, inputmode: 'decimal' });
      inputs.push(input);
      return h('label', {}, h('span', {}, words(key) + (v === null ? ' (empty: off)' : '')), input);
    };
    const isScalar = (v) => typeof v === 'boolean' || typeof v === 'number' || v === null;
    // The rule's switch first, then its figures.
    const first = ([a], [b]) => (b === 'enabled') - (a === 'enabled');
    const fields = (obj, prefix) => Object.entries(obj).filter(([, v]) => isScalar(v)).sort(first).map(([k, v]) => scalar(prefix + k, k, v));
    const rules = Object.entries(value.rules || {}).map(([name, rule]) => h('fieldset', { class: 'rule', 'data-rule': name },
      h('legend', {}, words(name)), h('div', { class: 'row' }, fields(rule, `rules.${name}.`))));
    // Top-level fields other than the three known ones (e.g. a delivery switch the server adds).
    const others = Object.entries(value).filter(([k, v]) => !['rules', 'webhooks', 'silences'].includes(k) && isScalar(v))
      .map(([k, v]) => scalar(k, k, v));
    const hooks = h('textarea', { id: 'alert-webhooks', 'data-path': 'webhooks', rows: 3, spellcheck: 'false' }, (value.webhooks || []).join('\n'));
    const silences = h('div', { id: 'alert-silences' });
    let n = 0;
    function addSilence(s = { rule: ruleNames[0], node: '', until: '' }) {
      const i = n++;
      const row = h('div', { class: 'row silence', 'data-silence': i },
        h('label', {}, h('span', {}, 'Rule'), h('select', { name: 'rule' }, ruleNames.map((r) => h('option', { value: r, selected: r === s.rule }, words(r))))),
        h('label', {}, h('span', {}, 'Node (empty: every node)'), h('input', { name: 'node', value: s.node || '', autocomplete: 'off' })),
        h('label', {}, h('span', {}, 'Until (UTC, e.g. 2026-12-24T00:00:00Z)'), h('input', { name: 'until', value: s.until, autocomplete: 'off', required: true })));
      row.append(h('button', { type: 'button', class: 'small', 'aria-label': 'Remove this silence', onclick: () => row.remove() }, 'Remove'));
      silences.append(row);
    }
    for (const s of value.silences || []) addSilence(s);
    const el = h('div', { id: 'alert-fields' },
      others.length ? h('fieldset', { id: 'alert-delivery' }, h('legend', {}, 'Delivery'), h('div', { class: 'row' }, others)) : null,
      h('label', {}, h('span', {}, 'Webhooks, one per line: https://… (JSON), slack:https://…, discord:https://…'), hooks),
      h('h4', {}, 'Rules'), rules,
      h('h4', {}, 'Silences'), silences, h('button', { type: 'button', id: 'add-silence', onclick: () => addSilence() }, 'Add a silence'));

    function read() {
      const out = JSON.parse(JSON.stringify(value));
      for (const input of inputs) {
        const path = input.dataset.path.split('.');
        const last = path.pop();
        const at = path.reduce((o, k) => o[k], out);
        if (input.type === 'checkbox') at[last] = input.checked;
        else if (input.value === '' && input.dataset.nullable) at[last] = null;
        else if (input.value === '' || !Number.isFinite(Number(input.value))) throw fail(input, 'A number.');
        else at[last] = Number(input.value);
      }
      out.webhooks = hooks.value.split('\n').map((x) => x.trim()).filter(Boolean);
      out.silences = [...silences.querySelectorAll('.silence')].map((row) => {
        const s = { rule: row.querySelector('[name=rule]').value, until: row.querySelector('[name=until]').value.trim() };
        const node = row.querySelector('[name=node]').value.trim();
        if (node) s.node = node;
        return s;
      });
      return out;
    }
    // The input a server's field path names (`webhooks[1]` is the webhooks box, `silences[0].until`
    // that row's field).
    function input(path) {
      const s = /^silences\[(\d+)\]\.?(\w*)/.exec(path);
      if (s) {
        const row = silences.querySelectorAll('.silence')[Number(s[1])];
        return row && (row.querySelector(`[name="${s[2] || 'until'}"]`) || row.querySelector('input'));
      }
      if (/^webhooks/.test(path)) return hooks;
      return inputs.find((i) => i.dataset.path === path) || null;
    }
    return { el, read, input };
  }

  window.InfernetForms = { availability, limits, alertSettings, mark };
})();
