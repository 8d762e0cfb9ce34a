// A real OpenID provider (the `oidc-provider` package) on loopback, for
// Zafe's OIDC login tests (zafe-server's oidc_api tests and the CLI's
// crates/zafe/tests/it/oidc_cli.rs).
//
// It listens on 127.0.0.1 on an ephemeral port and prints one JSON line on
// standard output once it is ready: {"issuer": "http://127.0.0.1:<port>"}.
// It stops when its standard input closes (the test process went away).
//
// Settings, from the environment:
//   OIDC_CLIENT_ID, OIDC_CLIENT_SECRET  the one test client (defaults below)
//   OIDC_ACCOUNTS  JSON {"<sub>": {"email": ..., "email_verified": bool, "groups": [...]}}
//
// Logging in needs no person: the interaction page finishes the login at
// once, as the account named by the authorization request's `login_hint`
// (default "alice"), and the consent page grants what was asked for. The
// test still drives the real authorization endpoint, its cookies and
// redirects, and the real token endpoint with PKCE.

import http from 'node:http';
import crypto from 'node:crypto';
import Provider from 'oidc-provider';

const clientId = process.env.OIDC_CLIENT_ID || 'zafe';
const clientSecret = process.env.OIDC_CLIENT_SECRET || 'zafe-test-client-secret-0123456789';
const accounts = JSON.parse(process.env.OIDC_ACCOUNTS || JSON.stringify({
  alice: { email: 'alice@example.com', email_verified: true, groups: ['eng'] },
  bob: { email: 'bob@example.com', email_verified: false, groups: [] },
}));

const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: 'test-rs256', alg: 'RS256', use: 'sig' };

const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    application_type: 'native',
    // Loopback redirect URIs match on any port (RFC 8252, section 7.3).
    redirect_uris: ['http://127.0.0.1/callback'],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  jwks: { keys: [signingKey] },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    groups: ['groups'],
  },
  // Scope claims go into the ID token itself: Zafe reads only the ID token.
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: { devInteractions: { enabled: false } },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(_ctx, sub) {
    const account = accounts[sub];
    if (!account) return undefined;
    return {
      accountId: sub,
      async claims() {
        return { sub, name: sub, ...account };
      },
    };
  },
});

const oidc = provider.callback();
server.on('request', async (req, res) => {
  if (!req.url.startsWith('/interaction/')) {
    oidc(req, res);
    return;
  }
  try {
    const details = await provider.interactionDetails(req, res);
    if (details.prompt.name === 'consent') {
      // Grant what was asked for, as a person clicking "Allow" would.
      const grant = new provider.Grant({ clientId: details.params.client_id, accountId: details.session.accountId });
      grant.addOIDCScope(details.params.scope);
      const grantId = await grant.save();
      await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
      return;
    }
    const accountId = details.params.login_hint || 'alice';
    if (!accounts[accountId]) {
      await provider.interactionFinished(req, res, { error: 'access_denied', error_description: 'unknown test account' });
      return;
    }
    await provider.interactionFinished(req, res, { login: { accountId } }, { mergeWithLastSubmission: false });
  } catch (err) {
    res.statusCode = 400;
    res.end(String(err && err.message));
  }
});

process.stdout.on('error', () => {});
process.stdout.write(`${JSON.stringify({ issuer, client_id: clientId })}\n`);
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));
