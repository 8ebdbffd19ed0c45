#!/usr/bin/env node
// Builds the control interface's files into dist/, which the binaries embed (crates/service/src/
// web.rs): our sources from src/ and uPlot (the plot library) from node_modules, copied as they
// are — no bundler, so what ships is what is reviewed.
//
// Usage: node build.mjs           (re)write dist/
//        node build.mjs --check   exit 1 if dist/ differs from what a build would write
import { readFileSync, writeFileSync, readdirSync, mkdirSync, existsSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = dirname(fileURLToPath(import.meta.url));
const DIST = join(ROOT, 'dist');
const CHECK = process.argv.includes('--check');

const files = {
  'app.js': join(ROOT, 'src/app.js'),
  'forms.js': join(ROOT, 'src/forms.js'),
  'app.css': join(ROOT, 'src/app.css'),
  'sw.js': join(ROOT, 'src/sw.js'),
  'icon.svg': join(ROOT, 'src/icon.svg'),
  'icon-192.png': join(ROOT, 'src/icon-192.png'),
  'icon-512.png': join(ROOT, 'src/icon-512.png'),
  'uplot.js': join(ROOT, 'node_modules/uplot/dist/uPlot.iife.min.js'),
  'uplot.css': join(ROOT, 'node_modules/uplot/dist/uPlot.min.css'),
};

const built = {};
for (const [name, source] of Object.entries(files)) {
  if (!existsSync(source)) {
    console.error(`missing ${source}: run \`npm ci\` in ui/ first`);
    process.exit(1);
  }
  built[name] = readFileSync(source);
}

if (CHECK) {
  const problems = [];
  for (const [name, bytes] of Object.entries(built)) {
    const path = join(DIST, name);
    if (!existsSync(path)) problems.push(`dist/${name} is missing`);
    else if (!readFileSync(path).equals(bytes)) problems.push(`dist/${name} differs from its source`);
  }
  for (const name of existsSync(DIST) ? readdirSync(DIST) : []) {
    if (!(name in built)) problems.push(`dist/${name} is not built from any source`);
  }
  if (problems.length) {
    console.error(`ui/dist is stale; run \`node build.mjs\` in ui/ and commit dist/:\n  ${problems.join('\n  ')}`);
    process.exit(1);
  }
  console.log(`ui/dist matches its sources (${Object.keys(built).length} files)`);
} else {
  mkdirSync(DIST, { recursive: true });
  for (const [name, bytes] of Object.entries(built)) writeFileSync(join(DIST, name), bytes);
  console.log(`wrote ${Object.keys(built).length} files to ui/dist`);
}
