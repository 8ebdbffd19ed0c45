#!/usr/bin/env node
// Compiles every contract under src/ with the pinned solcjs and writes deterministic artifacts:
//   out/<ContractName>.json  {contractName, abi, bytecode, deployedBytecode}
//   out/selectors.json       function selectors, event topics and error selectors per contract
// and checks the selectors against selectors.expected.json (transcribed from the SDK v1.1.0 spec).
//
// Usage: node build.mjs           build and (re)write out/
//        node build.mjs --check   build in memory; exit 1 if out/ is stale, incomplete or has extra files
import { readFileSync, writeFileSync, readdirSync, mkdirSync, existsSync, rmSync } from 'node:fs';
import { join, relative, dirname, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const solc = require('solc');
const { keccak256 } = require('js-sha3');

const ROOT = dirname(fileURLToPath(import.meta.url));
const SRC = join(ROOT, 'src');
const OUT = join(ROOT, 'out');
const EXPECTED = join(ROOT, 'selectors.expected.json');
const CHECK = process.argv.includes('--check');
const MAX_RUNTIME_SIZE = 24576; // EIP-170

const SETTINGS = {
  evmVersion: 'paris',
  optimizer: { enabled: true, runs: 1_000_000 },
  viaIR: true, // needed: deliverCompute is stack-too-deep without it
  metadata: { bytecodeHash: 'none' },
  outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
};

function listSources(dir) {
  const found = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = join(dir, entry.name);
    if (entry.isDirectory()) found.push(...listSources(full));
    else if (entry.name.endsWith('.sol')) found.push(full);
  }
  return found.sort();
}

function compile() {
  const sources = {};
  for (const file of listSources(SRC)) {
    sources[relative(ROOT, file).split(sep).join('/')] = { content: readFileSync(file, 'utf8') };
  }
  const input = { language: 'Solidity', sources, settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input)));
  const errors = (output.errors || []).filter((e) => e.severity === 'error');
  for (const e of output.errors || []) {
    if (e.severity !== 'error') console.error(e.formattedMessage || e.message);
  }
  if (errors.length) {
    for (const e of errors) console.error(e.formattedMessage || e.message);
    throw new Error(`solc reported ${errors.length} error(s)`);
  }
  return output;
}

// Canonical ABI type (tuples expanded), as used in signatures.
function canonicalType(param) {
  if (!param.type.startsWith('tuple')) return param.type;
  const inner = param.components.map(canonicalType).join(',');
  return `(${inner})${param.type.slice('tuple'.length)}`;
}

function signature(item) {
  return `${item.name}(${item.inputs.map(canonicalType).join(',')})`;
}

function sortObject(obj) {
  return Object.fromEntries(Object.keys(obj).sort().map((k) => [k, obj[k]]));
}

function selectorsOf(abi) {
  const groups = { functions: {}, events: {}, errors: {} };
  for (const item of abi) {
    if (item.type === 'function') groups.functions[signature(item)] = '0x' + keccak256(signature(item)).slice(0, 8);
    else if (item.type === 'event') groups.events[signature(item)] = '0x' + keccak256(signature(item));
    else if (item.type === 'error') groups.errors[signature(item)] = '0x' + keccak256(signature(item)).slice(0, 8);
  }
  return { functions: sortObject(groups.functions), events: sortObject(groups.events), errors: sortObject(groups.errors) };
}

function render(value) {
  return JSON.stringify(value, null, 2) + '\n';
}

function main() {
  const output = compile();
  const files = new Map(); // file name in out/ -> content
  const selectors = {};
  const problems = [];

  const contracts = [];
  for (const source of Object.keys(output.contracts || {}).sort()) {
    for (const name of Object.keys(output.contracts[source]).sort()) {
      contracts.push({ source, name, data: output.contracts[source][name] });
    }
  }
  const seen = new Map();
  for (const { source, name, data } of contracts) {
    if (seen.has(name)) throw new Error(`duplicate contract name ${name} in ${seen.get(name)} and ${source}`);
    seen.set(name, source);
    const bytecode = '0x' + data.evm.bytecode.object;
    const deployedBytecode = '0x' + data.evm.deployedBytecode.object;
    if (bytecode.includes('__$')) throw new Error(`${name} needs library linking, which this build does not support`);
    const runtimeSize = (deployedBytecode.length - 2) / 2;
    if (runtimeSize > MAX_RUNTIME_SIZE) problems.push(`${name}: runtime bytecode ${runtimeSize} B exceeds ${MAX_RUNTIME_SIZE} B`);
    files.set(`${name}.json`, render({ contractName: name, abi: data.abi, bytecode, deployedBytecode }));
    if (data.abi.length) selectors[name] = selectorsOf(data.abi);
  }
  files.set('selectors.json', render({ solc: solc.version(), contracts: selectors }));

  // Compare with the selectors transcribed from the SDK spec.
  const expected = JSON.parse(readFileSync(EXPECTED, 'utf8'));
  let expectedCount = 0;
  for (const [contract, groups] of Object.entries(expected.contracts)) {
    for (const [group, entries] of Object.entries(groups)) {
      for (const [sig, value] of Object.entries(entries)) {
        expectedCount++;
        const actual = selectors[contract]?.[group]?.[sig];
        if (actual === undefined) problems.push(`${contract}: missing ${group.slice(0, -1)} ${sig} (expected ${value})`);
        else if (actual !== value) problems.push(`${contract}: ${sig} is ${actual}, expected ${value}`);
      }
    }
  }
  if (problems.length) {
    for (const p of problems) console.error(`error: ${p}`);
    process.exit(1);
  }

  if (CHECK) {
    const stale = [];
    for (const [file, content] of files) {
      const path = join(OUT, file);
      if (!existsSync(path)) stale.push(`out/${file} (missing)`);
      else if (readFileSync(path, 'utf8') !== content) stale.push(`out/${file} (differs)`);
    }
    if (existsSync(OUT)) {
      for (const file of readdirSync(OUT).sort()) {
        if (!files.has(file)) stale.push(`out/${file} (not produced by the build)`);
      }
    }
    if (stale.length) {
      console.error('stale artifacts; run `node build.mjs` and commit out/:');
      for (const s of stale) console.error(`  ${s}`);
      process.exit(1);
    }
    console.log(`out/ is up to date (${files.size} files, ${expectedCount} spec selectors match, solc ${solc.version()})`);
    return;
  }

  mkdirSync(OUT, { recursive: true });
  for (const file of readdirSync(OUT)) {
    if (!files.has(file)) rmSync(join(OUT, file));
  }
  for (const [file, content] of files) writeFileSync(join(OUT, file), content);
  console.log(`wrote ${files.size} files to out/ (${expectedCount} spec selectors match, solc ${solc.version()})`);
}

main();
