// A local OAuth 2.0 provider for the tests and the README walk-through: the real
// `oauth2-mock-server` (npm) behind a small front that adds what it does not do itself.
//
// It listens on 127.0.0.1 (port from argv[2], default 0), prints one JSON line
// `{"port": N}` when ready, and serves the mock server's endpoints (`/authorize`, `/token`,
// `/userinfo`, ...) plus a control API for tests:
//   POST /_control  {"rotate": bool, "expires_in": n, "fail": "invalid_grant"|"500"|"slow"|
//                    "echo"|"echo_code"|null, "fail_times": n, "deny": bool, "revoke": bool,
//                    "team_name": "..."}
//   GET  /_stats    {"authorization_code": n, "refresh_token": n, "refresh_rejected": n,
//                    "in_flight": n, "max_in_flight": n,
//                    "issued": {"codes": [...], "access_tokens": [...], "refresh_tokens": [...]}}
// `in_flight` counts token requests (`/token`) being answered now, `max_in_flight` the most
// at once since the start or since `POST /_control {"reset_max_in_flight": true}` (the
// bench checks that the hub's refresher never exceeds its configured concurrency).
// With `rotate`, every refresh answers a new refresh token and the one used is no longer
// valid (a second use answers invalid_grant, as real providers with rotation do). Refresh
// tokens are tracked here, since the mock server accepts any.
// A provider that repeats what it was sent: `echo` answers 400 `invalid_request` with the
// whole request (form and Authorization header) in `error_description` and `detail`, and
// `echo_code` puts the client secret into the `error` code itself; with `echo_all`, the
// invalid_grant and 500 answers carry the same description. `/_stats` lists what was echoed
// (`echoed`, as `name=value`). `team_name` is the account name the token response gives.
import http from 'node:http';
import { OAuth2Server } from 'oauth2-mock-server';

const settings = {
  rotate: false,
  expires_in: 3600,
  fail: null,
  fail_times: 0,
  deny: false,
  echo_all: false,
  team_name: 'Acme Workspace',
};
const stats = {
  authorization_code: 0,
  refresh_token: 0,
  refresh_rejected: 0,
  in_flight: 0,
  max_in_flight: 0,
};
// What was issued (the latest 100 of each), so tests can look for them where they must not be.
const issued = { codes: [], access_tokens: [], refresh_tokens: [] };
// Every value a request carried that an echoing answer repeated (the latest 100).
const echoed = [];
function remember(list, value) {
  if (typeof value !== 'string') return;
  list.push(value);
  if (list.length > 100) list.shift();
}
const valid = new Set();

const mock = new OAuth2Server();
await mock.issuer.keys.generate('RS256');

function refreshTokenOf(req) {
  return req.body && typeof req.body.refresh_token === 'string' ? req.body.refresh_token : null;
}

mock.service.on('beforeAuthorizeRedirect', (redirect) => {
  remember(issued.codes, redirect.url.searchParams.get('code'));
  if (settings.deny) {
    redirect.url.searchParams.delete('code');
    redirect.url.searchParams.set('error', 'access_denied');
    const state = redirect.url.searchParams.get('state');
    if (settings.echo_all) remember(echoed, `state=${state}`);
    redirect.url.searchParams.set('error_description', settings.echo_all ? `The user denied the request with state ${state}` : 'The user denied the request');
  }
});

// The request as an echoing provider repeats it, remembering each value it repeats.
function echo(req) {
  for (const [name, value] of Object.entries(req.body || {})) remember(echoed, `${name}=${value}`);
  if (req.headers.authorization) remember(echoed, `authorization=${req.headers.authorization}`);
  return `you sent ${JSON.stringify({ form: req.body, authorization: req.headers.authorization || null })}`;
}

mock.service.on('beforeResponse', (response, req) => {
  const grant = req.body.grant_type;
  if (grant !== 'authorization_code' && grant !== 'refresh_token') return;
  stats[grant] += 1;
  if (settings.fail && (settings.fail_times === 0 || settings.fail_times > 0)) {
    const fail = settings.fail;
    if (settings.fail_times > 0) {
      settings.fail_times -= 1;
      if (settings.fail_times === 0) settings.fail = null;
    }
    if (fail === 'invalid_grant') {
      response.statusCode = 400;
      response.body = { error: 'invalid_grant', error_description: settings.echo_all ? echo(req) : 'The refresh token was revoked' };
      return;
    }
    if (fail === '500') {
      response.statusCode = 500;
      response.body = settings.echo_all ? { error: 'server_error', error_description: echo(req) } : { error: 'server_error' };
      return;
    }
    if (fail === 'echo') {
      const said = echo(req);
      response.statusCode = 400;
      response.body = { error: 'invalid_request', error_description: said, detail: said };
      return;
    }
    if (fail === 'echo_code') {
      const said = echo(req);
      response.statusCode = 400;
      response.body = { error: String(req.body.client_secret), error_description: said };
      return;
    }
  }
  if (grant === 'refresh_token') {
    const used = refreshTokenOf(req);
    if (!valid.has(used)) {
      stats.refresh_rejected += 1;
      response.statusCode = 400;
      response.body = { error: 'invalid_grant', error_description: 'Unknown or reused refresh token' };
      return;
    }
    if (settings.rotate) {
      valid.delete(used);
    } else {
      response.body.refresh_token = used;
    }
  }
  if (response.body.refresh_token) valid.add(response.body.refresh_token);
  remember(issued.refresh_tokens, response.body.refresh_token);
  remember(issued.access_tokens, response.body.access_token);
  response.body.expires_in = settings.expires_in;
  response.body.team = { id: 'T0001', name: settings.team_name };
});

function send(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

const server = http.createServer((req, res) => {
  const path = new URL(req.url, 'http://localhost').pathname;
  if (req.method === 'GET' && path === '/_stats') return send(res, 200, { ...stats, issued, echoed });
  if (req.method === 'POST' && path === '/_control') {
    let text = '';
    req.on('data', (chunk) => { text += chunk; });
    req.on('end', () => {
      const change = JSON.parse(text || '{}');
      if (change.revoke) valid.clear();
      delete change.revoke;
      if (change.reset_max_in_flight) stats.max_in_flight = stats.in_flight;
      delete change.reset_max_in_flight;
      Object.assign(settings, change);
      send(res, 200, settings);
    });
    return;
  }
  if (path === '/token') {
    stats.in_flight += 1;
    stats.max_in_flight = Math.max(stats.max_in_flight, stats.in_flight);
    // 'close' comes once per response, answered or abandoned.
    res.on('close', () => { stats.in_flight -= 1; });
  }
  if (path === '/token' && settings.fail === 'slow') {
    // Never answers in time: the hub's timeout must end the call.
    setTimeout(() => mock.service.requestHandler(req, res), 60_000);
    return;
  }
  mock.service.requestHandler(req, res);
});

server.listen(Number(process.argv[2] || 0), '127.0.0.1', () => {
  const { port } = server.address();
  mock.issuer.url = `http://127.0.0.1:${port}`;
  process.stdout.write(`${JSON.stringify({ port })}\n`);
});
