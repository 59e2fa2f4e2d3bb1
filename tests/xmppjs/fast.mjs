// xmpp.js (@xmpp/client 0.14) against xmppd: SASL2 (XEP-0388) with Bind2
// (XEP-0386), a FAST token (XEP-0484, HT-SHA-256-NONE), a login with a
// tampered token, a login with the token and a wrong password, and a message
// exchanged from that session.
//
// Usage: node fast.mjs '{"service": "xmpp://127.0.0.1:PORT", "domain": ...,
//   "username": ..., "password": ..., "wrongPassword": ..., "tag": ...,
//   "peer": BARE_JID, "body": ..., "stepTimeout": MS, "wire": FILE}'
// The server's certificate is trusted through NODE_EXTRA_CA_CERTS; the
// service URL and the domain are given, so nothing is resolved.  Prints one
// JSON line: what each login sent and received (see `observe`), and the
// reply to the message; {"error": ...} if a step broke.
//
// How xmpp.js drives FAST (read from node_modules/@xmpp/client-core/src/fast/
// fast.js, @xmpp/sasl2/index.js, @xmpp/client/lib/createOnAuthenticate.js):
// - FAST is always on in @xmpp/client.  When the server's SASL2
//   <authentication/> lists <fast xmlns='urn:xmpp:fast:0'> with a mechanism
//   xmpp.js knows (only HT-SHA-256-NONE) in its <inline/>, the client first
//   asks `client.fast.fetchToken()` for a token ({mechanism, token, expiry}).
// - No usable token (none, another mechanism, or past its expiry): it
//   authenticates with the password (SCRAM-SHA-1 or PLAIN: xmpp.js has no
//   SCRAM-SHA-256) and adds <request-token xmlns='urn:xmpp:fast:0'
//   mechanism='HT-SHA-256-NONE'/> to <authenticate/>.  The <token/> of the
//   <success/> goes to `client.fast.saveToken(token)`.
// - A token: <authenticate mechanism='HT-SHA-256-NONE'> with the HMAC of
//   "Initiator" under the token as initial response and <fast
//   xmlns='urn:xmpp:fast:0'/> (no count).  If the server answers
//   not-authorized or credentials-expired, xmpp.js deletes the token and
//   authenticates again on the same stream with the password, requesting a
//   new token.  If <success/> carries <additional-data/>, it must be the HMAC
//   of "Responder" under the token.
// - fetchToken/saveToken/deleteToken (the package's README says
//   removeToken, but deleteToken is what the code calls) keep the token in
//   memory by default; an application replaces them to keep it across
//   restarts, which is how the logins below after the first get their
//   token.  Tokens are per client: every login gives the same
//   <user-agent id=.../>.

import { appendFileSync } from "node:fs";

import { client, xml } from "@xmpp/client";

const NS_SASL2 = "urn:xmpp:sasl:2";
const NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl";
const NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind";
const NS_BIND2 = "urn:xmpp:bind:0";
const NS_FAST = "urn:xmpp:fast:0";
const NS_SM = "urn:xmpp:sm:3";

const options = JSON.parse(process.argv[2]);
const userAgentId = globalThis.crypto.randomUUID();

function bounded(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`${what}: no answer within ${options.stepTimeout} ms`)),
      options.stepTimeout,
    );
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function childNames(element) {
  return element.getChildElements().map((child) => `{${child.getNS()}}${child.name}`);
}

// Every byte of a client's streams, to the file options.wire ("NAME C:"
// what the client wrote, "NAME S:" what it read).
function record(xmpp, name) {
  const write = xmpp.write.bind(xmpp);
  xmpp.write = (string) => {
    appendFileSync(options.wire, `${name} C: ${string}\n`);
    return write(string);
  };
  const onData = xmpp._onData.bind(xmpp);
  xmpp._onData = (data) => {
    appendFileSync(options.wire, `${name} S: ${data}\n`);
    return onData(data);
  };
}

// What one client sends and receives of SASL, SASL2, Bind2, FAST and stream
// management: the facts the Python test asserts on.
function observe(xmpp) {
  const seen = {
    authentication: null, // the SASL2 stream feature offered
    legacyMechanisms: null, // RFC 6120 <mechanisms/> offered beside it
    attempts: [], // one per <authenticate/>, with its outcome
    legacyAuth: false, // an RFC 6120 <auth/> was sent
    legacyBind: false, // an RFC 6120 bind <iq/> was sent
    smSent: [], // stream management <enable/> or <resume/> sent outside Bind2
    featuresAfterSuccess: null,
    streamHeaderFrom: null,
    errors: [],
  };
  const write = xmpp.write.bind(xmpp);
  xmpp.write = (string) => {
    const from = /<stream:stream\b[^>]*\sfrom=['"]([^'"]*)['"]/.exec(string);
    if (from) seen.streamHeaderFrom = from[1];
    return write(string);
  };
  xmpp.on("send", (element) => {
    if (element.is("authenticate", NS_SASL2)) {
      const userAgent = element.getChild("user-agent");
      const bind = element.getChild("bind", NS_BIND2);
      const requestToken = element.getChild("request-token", NS_FAST);
      const fast = element.getChild("fast", NS_FAST);
      seen.attempts.push({
        mechanism: element.attrs.mechanism,
        initialResponse: element.getChild("initial-response") !== undefined,
        userAgent: userAgent && {
          id: userAgent.attrs.id,
          software: userAgent.getChildText("software"),
          device: userAgent.getChildText("device"),
        },
        bind: bind && { tag: bind.getChildText("tag"), features: childNames(bind).filter(
          (name) => name !== `{${NS_BIND2}}tag`) },
        requestToken: requestToken ? requestToken.attrs.mechanism : null,
        fast: fast ? { ...fast.attrs } : null,
        xml: element.toString().replace(
          /<initial-response>[^<]*<\/initial-response>/, "<initial-response>…</initial-response>"),
        outcome: null,
      });
    } else if (element.is("enable", NS_SM) || element.is("resume", NS_SM)) {
      seen.smSent.push(element.name);
    } else if (element.is("auth", NS_SASL)) {
      seen.legacyAuth = true;
    } else if (element.is("iq") && element.getChild("bind", NS_BIND)) {
      seen.legacyBind = true;
    }
  });
  xmpp.on("element", (element) => {
    const attempt = seen.attempts.at(-1);
    if (element.is("features", "http://etherx.jabber.org/streams")) {
      const authentication = element.getChild("authentication", NS_SASL2);
      if (authentication) {
        const inline = authentication.getChild("inline");
        const fast = inline?.getChild("fast", NS_FAST);
        const bind = inline?.getChild("bind", NS_BIND2);
        seen.authentication = {
          mechanisms: authentication.getChildren("mechanism").map((m) => m.text()),
          inline: inline ? childNames(inline) : [],
          fastMechanisms: fast ? fast.getChildren("mechanism").map((m) => m.text()) : [],
          bindFeatures: bind?.getChild("inline")?.getChildren("feature")
            .map((f) => f.attrs.var) ?? [],
        };
        const legacy = element.getChild("mechanisms", NS_SASL);
        seen.legacyMechanisms = legacy
          ? legacy.getChildren("mechanism").map((m) => m.text()) : null;
      } else if (attempt?.outcome?.result === "success" && seen.featuresAfterSuccess === null) {
        seen.featuresAfterSuccess = childNames(element);
      }
    } else if (attempt && element.getNS() === NS_SASL2) {
      if (element.name === "success") {
        const token = element.getChild("token", NS_FAST);
        const bound = element.getChild("bound", NS_BIND2);
        attempt.outcome = {
          result: "success",
          authorizationIdentifier: element.getChildText("authorization-identifier"),
          additionalData: element.getChild("additional-data") !== undefined,
          bound: bound !== undefined,
          boundChildren: bound ? childNames(bound) : [],
          smEnabled: bound?.getChild("enabled", NS_SM)?.attrs ?? null,
          token: token ? { expiry: token.attrs.expiry, length: token.attrs.token?.length } : null,
          children: childNames(element),
        };
      } else if (element.name === "failure") {
        const condition = element.getChildElements().find((child) => child.getNS() === NS_SASL);
        attempt.outcome = {
          result: "failure",
          condition: condition?.name ?? null,
          text: element.getChildText("text"),
        };
      } else if (element.name === "challenge") {
        attempt.challenges = (attempt.challenges ?? 0) + 1;
      }
    }
  });
  xmpp.on("error", (error) => seen.errors.push(describe(error)));
  return seen;
}

// A client of the account; `token` is what its fetchToken returns, `saved`
// collects what its saveToken is given.
function newClient(name, { password, token = null, saved = [] }) {
  const xmpp = client({
    service: options.service,
    domain: options.domain,
    username: options.username,
    password,
    resource: options.tag, // the Bind2 <tag/>
    userAgent: xml("user-agent", { id: userAgentId },
      xml("software", {}, "xmpp.js"), xml("device", {}, "xmppd integration test")),
  });
  xmpp.reconnect.stop(); // one connection per client: a failed login is final
  // xmpp.js waits 2 s for each step of opening and closing a stream; a
  // loaded test machine may take longer.
  xmpp.timeout = options.stepTimeout;
  record(xmpp, name);
  xmpp.fast.fetchToken = async () => token;
  xmpp.fast.saveToken = async (value) => {
    saved.push(value);
  };
  return { xmpp, seen: observe(xmpp), saved };
}

function describe(error) {
  return { name: error.name, condition: error.condition ?? null, message: error.message };
}

// Log in; then a ping to the server, so that what the server sent before
// its answer (the features after <success/>...) has been handled when the
// state of stream management is read.
async function login(entry) {
  try {
    const jid = await bounded(entry.xmpp.start(), "login");
    entry.login = { online: true, jid: jid.toString() };
  } catch (error) {
    entry.login = { online: false, error: describe(error) };
    return false;
  }
  try {
    await bounded(entry.xmpp.iqCaller.get(xml("ping", { xmlns: "urn:xmpp:ping" })), "a ping");
    entry.login.ping = true;
  } catch (error) {
    entry.login.ping = describe(error);
  }
  entry.login.sm = entry.xmpp.streamManagement.enabled;
  return true;
}

async function logout(entry) {
  try {
    await bounded(entry.xmpp.stop(), "logout");
  } catch {
    entry.xmpp.socket?.socket?.destroy();
  }
}

// What the client saw, and what its saveToken was given (without the tokens).
function report(entry) {
  const saved = entry.saved.map((t) => ({ mechanism: t.mechanism, expiry: t.expiry,
    length: t.token?.length }));
  return { ...entry.login, ...entry.seen, saved };
}

async function main() {
  const result = { userAgentId };

  // 1, 2: the password, SASL2 with Bind2, a FAST token requested.
  const first = newClient("first", { password: options.password });
  await login(first);
  await logout(first);
  result.first = report(first);
  const token = first.saved[0];
  if (!token) return result;

  // 4: the token with its last character changed, and a wrong password:
  // the server refuses both attempts (xmpp.js falls back to the password).
  const last = token.token.at(-1) === "A" ? "B" : "A";
  const tampered = newClient("tampered", { password: options.wrongPassword,
    token: { ...token, token: token.token.slice(0, -1) + last } });
  await login(tampered);
  await logout(tampered);
  result.tampered = report(tampered);

  // 3: the token and a wrong password: only FAST can log in.
  const fast = newClient("fast", { password: options.wrongPassword, token });
  if (await login(fast)) {
    // 5: the session works: a message to the peer, whose reply comes back.
    const reply = new Promise((resolve) => {
      fast.xmpp.on("stanza", (stanza) => {
        if (stanza.is("message") && stanza.getChildText("body")) {
          resolve({ from: stanza.attrs.from, type: stanza.attrs.type,
            body: stanza.getChildText("body") });
        }
      });
    });
    await fast.xmpp.send(xml("message", { to: options.peer, type: "chat", id: "fast-1" },
      xml("body", {}, options.body)));
    try {
      result.reply = await bounded(reply, "the reply");
    } catch (error) {
      result.reply = { error: error.message };
    }
  }
  await logout(fast);
  result.fast = report(fast);
  return result;
}

try {
  process.stdout.write(JSON.stringify(await main()) + "\n");
  process.exit(0);
} catch (error) {
  process.stdout.write(JSON.stringify({ error: String(error.stack ?? error) }) + "\n");
  process.exit(1);
}
