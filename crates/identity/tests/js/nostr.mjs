// An independent Nostr implementation for the identity tests (nostr-tools):
//   node nostr.mjs sign <secret hex> <method> <url> [json body]  -> the Authorization header
//   node nostr.mjs verify <method> <url> <header>                -> the signer's hex public key
//   node nostr.mjs verify-event <event json>                     -> the signer's hex public key
//   node nostr.mjs dm-open <secret hex> <gift wrap json>         -> the rumor's JSON (NIP-17)
//   node nostr.mjs dm-wrap <secret hex> <to hex> <message>       -> a gift wrap's JSON (NIP-17)
import { finalizeEvent, verifyEvent, getPublicKey } from 'nostr-tools/pure';
import * as nip17 from 'nostr-tools/nip17';
import * as nip98 from 'nostr-tools/nip98';

const [command, ...args] = process.argv.slice(2);
try {
  if (command === 'sign') {
    const [secret, method, url, body] = args;
    const key = Uint8Array.from(Buffer.from(secret, 'hex'));
    const sign = (event) => finalizeEvent(event, key);
    const payload = body === undefined ? undefined : JSON.parse(body);
    console.log(await nip98.getToken(url, method, sign, true, payload));
  } else if (command === 'verify') {
    const [method, url, header] = args;
    await nip98.validateToken(header, url, method);
    console.log((await nip98.unpackEventFromToken(header)).pubkey);
  } else if (command === 'verify-event') {
    const event = JSON.parse(args[0]);
    if (!verifyEvent(event)) throw new Error('invalid signature');
    console.log(event.pubkey);
  } else if (command === 'dm-open') {
    const [secret, wrap] = args;
    const event = JSON.parse(wrap);
    if (!verifyEvent(event)) throw new Error('invalid gift wrap signature');
    const rumor = nip17.unwrapEvent(event, Uint8Array.from(Buffer.from(secret, 'hex')));
    console.log(JSON.stringify(rumor));
  } else if (command === 'dm-wrap') {
    const [secret, to, message] = args;
    const key = Uint8Array.from(Buffer.from(secret, 'hex'));
    console.log(JSON.stringify(nip17.wrapEvent(key, { publicKey: to }, message)));
  } else {
    throw new Error(`unknown command ${command}`);
  }
} catch (e) {
  console.error(e.message);
  process.exit(1);
}
