//! Bearer token verification and HS256 minting for dev and tests.
//!
//! Verification goes from the raw `authorization` value to a [`Principal`]
//! in one pass: header shape and size, then the algorithm and key (HS256
//! with the shared secret; RS256, ES256 or EdDSA with the JWKS key named by
//! `kid`, whose pinned algorithm the token must name), the signature, time
//! and issuer/audience claims (by `jsonwebtoken`), `iat`, then our own
//! claims. Every refusal carries a fixed reason: nothing from the token is
//! ever copied into an error, so logging one cannot leak a credential.

use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

use super::AuthError;
use super::jwks::{ASYMMETRIC_ALGORITHMS, MAX_KID_BYTES};
use super::keystore::{JwksConfig, KeyStore};
use super::limits::ServiceSubjects;
use super::principal::{Principal, check_subject, check_team};
use super::roles::{Role, RoleMap};

/// Default name of the claim carrying the team id.
pub const DEFAULT_TEAM_CLAIM: &str = "team_id";
/// Default name of the claim carrying the role value(s).
pub const DEFAULT_ROLES_CLAIM: &str = "roles";
/// Default clock-skew allowance for `exp`, `nbf` and `iat`.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;
/// Largest accepted leeway. Also keeps `now - leeway` inside `jsonwebtoken`
/// from underflowing, which would panic in debug builds.
pub const MAX_LEEWAY_SECS: u64 = 300;
/// Tokens longer than this are refused before any decoding, so a caller
/// cannot make us base64-decode and parse megabytes per request.
pub const MAX_TOKEN_BYTES: usize = 8192;
/// RFC 7518 3.2: an HS256 key must be at least as long as the hash output.
pub const MIN_SECRET_BYTES: usize = 32;

/// Registered claims that `jsonwebtoken` or we interpret; a custom team or
/// roles claim with one of these names would collide with them.
const REGISTERED_CLAIMS: &[&str] = &["iss", "sub", "aud", "exp", "nbf", "iat", "jti"];

/// How tokens are checked. The secret is never shown by `Debug`.
#[derive(Clone)]
pub struct VerifierConfig {
    /// The shared HS256 secret, at least 32 bytes; `None` refuses HS256.
    pub hs256_secret: Option<Vec<u8>>,
    /// Public keys (RS256, ES256, EdDSA) from a JWKS file and/or URL.
    pub jwks: JwksConfig,
    /// When set, `iss` is required and must equal it.
    pub issuer: Option<String>,
    /// When set, `aud` is required and must be or contain it. When unset, a
    /// token that carries an `aud` at all is refused (RFC 7519 4.1.3: we
    /// cannot be the audience of a token addressed to someone).
    pub audience: Option<String>,
    /// Claim holding the team id or `*`; default `team_id`.
    pub team_claim: String,
    /// Claim holding the role value(s), a string or an array of strings;
    /// default `roles`.
    pub roles_claim: String,
    /// Claim value to role.
    pub role_map: RoleMap,
    /// Service subjects that may claim every team, and limits per subject.
    pub service_subjects: ServiceSubjects,
    /// Claim holding the caller's groups (a string or an array of strings), which an
    /// installed app's `usable_by` may name; `None`: tokens carry no groups.
    pub groups_claim: Option<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`, at most
    /// [`MAX_LEEWAY_SECS`]; default 30.
    pub leeway_secs: u64,
}

impl VerifierConfig {
    /// The defaults with this HS256 secret and no JWKS.
    pub fn new(hs256_secret: Vec<u8>) -> VerifierConfig {
        VerifierConfig {
            hs256_secret: Some(hs256_secret),
            ..VerifierConfig::default()
        }
    }
}

impl Default for VerifierConfig {
    /// The defaults with no key at all, which [`Verifier::new`] refuses: a
    /// caller using `..Default::default()` must still give a secret or a JWKS.
    fn default() -> Self {
        VerifierConfig {
            hs256_secret: None,
            jwks: JwksConfig::default(),
            issuer: None,
            audience: None,
            team_claim: DEFAULT_TEAM_CLAIM.to_owned(),
            roles_claim: DEFAULT_ROLES_CLAIM.to_owned(),
            role_map: RoleMap::default(),
            service_subjects: ServiceSubjects::default(),
            groups_claim: None,
            leeway_secs: DEFAULT_LEEWAY_SECS,
        }
    }
}

impl fmt::Debug for VerifierConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifierConfig")
            .field(
                "hs256_secret",
                &self.hs256_secret.as_ref().map(|s| Redacted(s.len())),
            )
            .field("jwks", &self.jwks)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("team_claim", &self.team_claim)
            .field("roles_claim", &self.roles_claim)
            .field("role_map", &self.role_map)
            .field("service_subjects", &self.service_subjects)
            .field("groups_claim", &self.groups_claim)
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

/// Shows only the secret's length.
struct Redacted(usize);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted {} bytes>", self.0)
    }
}

/// Checks bearer tokens. Build once at startup and share; `verify` takes
/// `&self`. With a JWKS configured it owns a background task that keeps the
/// keys fresh, which ends when the last clone is dropped.
#[derive(Clone)]
pub struct Verifier {
    // `DecodingKey`'s own Debug prints the secret, hence the manual Debug
    // below. It zeroizes itself on drop.
    hs256: Option<(DecodingKey, usize)>,
    jwks: Option<Arc<KeyStore>>,
    /// One rule set per accepted algorithm: each lists that algorithm alone,
    /// so `jsonwebtoken` also refuses a token naming any other.
    validations: Vec<(Algorithm, Validation)>,
    issuer: Option<String>,
    audience: Option<String>,
    team_claim: String,
    roles_claim: String,
    role_map: RoleMap,
    service_subjects: ServiceSubjects,
    groups_claim: Option<String>,
    leeway_secs: u64,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let algorithms: Vec<Algorithm> = self.validations.iter().map(|(a, _)| *a).collect();
        f.debug_struct("Verifier")
            .field(
                "hs256_key",
                &self.hs256.as_ref().map(|(_, len)| Redacted(*len)),
            )
            .field("jwks", &self.jwks.is_some())
            .field("algorithms", &algorithms)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("team_claim", &self.team_claim)
            .field("roles_claim", &self.roles_claim)
            .field("role_map", &self.role_map)
            .field("service_subjects", &self.service_subjects)
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

impl Verifier {
    /// Checks the configuration, prepares the keys and validation rules, and
    /// with a JWKS loads it and starts its refresh task (so it must run
    /// inside a tokio runtime). A JWKS file that cannot be read is an error;
    /// a JWKS URL that does not answer yet is retried in the background.
    pub async fn new(cfg: VerifierConfig) -> Result<Verifier, AuthError> {
        if cfg.hs256_secret.is_none() && !cfg.jwks.is_configured() {
            return Err(config_error(
                "no token key is configured (an HS256 secret, a JWKS file or a JWKS URL)",
            ));
        }
        if cfg
            .hs256_secret
            .as_ref()
            .is_some_and(|s| s.len() < MIN_SECRET_BYTES)
        {
            return Err(config_error("the HS256 secret must be at least 32 bytes"));
        }
        check_claim_names(&cfg.team_claim, &cfg.roles_claim)?;
        if cfg.leeway_secs > MAX_LEEWAY_SECS {
            return Err(config_error("leeway must be at most 300 seconds"));
        }
        if cfg.issuer.as_deref().is_some_and(str::is_empty) {
            return Err(config_error("the configured issuer is empty"));
        }
        if cfg.audience.as_deref().is_some_and(str::is_empty) {
            return Err(config_error("the configured audience is empty"));
        }

        // Pinned: the accepted algorithms come from our keys, never from the
        // token. HS256 only with the secret; the others only with a JWKS key
        // of that very algorithm (checked per key in `verify`). So `none`,
        // other HMAC sizes and "verify an RS256 token with the public key as
        // HMAC secret" all fail before any signature check.
        let mut algorithms = Vec::new();
        if cfg.hs256_secret.is_some() {
            algorithms.push(Algorithm::HS256);
        }
        if cfg.jwks.is_configured() {
            algorithms.extend(ASYMMETRIC_ALGORITHMS);
        }
        let validations = algorithms
            .into_iter()
            .map(|alg| (alg, validation(alg, &cfg)))
            .collect();
        let jwks = if cfg.jwks.is_configured() {
            Some(KeyStore::start(cfg.jwks.clone()).await?)
        } else {
            None
        };

        Ok(Verifier {
            hs256: cfg
                .hs256_secret
                .as_ref()
                .map(|s| (DecodingKey::from_secret(s), s.len())),
            jwks,
            validations,
            issuer: cfg.issuer,
            audience: cfg.audience,
            team_claim: cfg.team_claim,
            roles_claim: cfg.roles_claim,
            role_map: cfg.role_map,
            service_subjects: cfg.service_subjects,
            groups_claim: cfg.groups_claim,
            leeway_secs: cfg.leeway_secs,
        })
    }

    /// Changes whenever the public keys change (a JWKS refresh replaced them); constant with
    /// the HS256 secret alone. A cache of verified tokens must not answer across a change.
    pub fn keys_epoch(&self) -> u64 {
        self.jwks.as_ref().map_or(0, |store| store.epoch())
    }

    /// Verifies the raw `authorization` metadata value and returns the
    /// caller. Every error means "missing or invalid credentials" to the
    /// client; the variant and reason are for the server's debug log.
    ///
    /// Only a token naming an unknown `kid` can wait: for a key refresh, at
    /// most the configured request wait (500 ms by default), rate-limited.
    pub async fn verify(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        let token = bearer_token(authorization)?;

        // Read the header ourselves first: a clearer reason in the log, and
        // `crit` is refused (RFC 7515 4.1.11: we understand no extension, so
        // we must not accept a token that says one is critical). `jku`,
        // `x5u`, `jwk` and `x5c` are ignored: keys come only from our own
        // configuration, never from where a token points.
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| invalid("the token header is unreadable or names an unknown algorithm"))?;
        if header.crit.is_some() {
            return Err(invalid("critical header extensions are not supported"));
        }
        let validation = self
            .validations
            .iter()
            .find(|(alg, _)| *alg == header.alg)
            .map(|(_, v)| v)
            .ok_or_else(|| invalid("algorithm not allowed"))?;

        let data = if header.alg == Algorithm::HS256 {
            let (key, _) = self
                .hs256
                .as_ref()
                .ok_or_else(|| invalid("algorithm not allowed"))?;
            jsonwebtoken::decode::<Map<String, Value>>(token, key, validation)
        } else {
            let store = self
                .jwks
                .as_ref()
                .ok_or_else(|| invalid("algorithm not allowed"))?;
            let kid = header
                .kid
                .as_deref()
                .ok_or_else(|| invalid("the token names no key id"))?;
            // Checked before the lookup: a silly `kid` must not even count
            // towards a refresh.
            if kid.is_empty() || kid.len() > MAX_KID_BYTES {
                return Err(invalid("the key id is empty or too long"));
            }
            let key = store.key(kid).await?;
            if key.alg != header.alg {
                return Err(invalid(
                    "the token's algorithm is not the one pinned to its key",
                ));
            }
            jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation)
        }
        .map_err(|e| reject(e.kind()))?;
        self.check_iat(&data.claims)?;
        self.principal_from(&data.claims)
    }

    /// `jsonwebtoken` does not look at `iat`. A token issued in the future
    /// (beyond the leeway) comes from a broken or hostile issuer clock.
    fn check_iat(&self, claims: &Map<String, Value>) -> Result<(), AuthError> {
        let Some(iat) = claims.get("iat") else {
            return Ok(());
        };
        let iat = iat
            .as_f64()
            .filter(|t| t.is_finite())
            .ok_or_else(|| invalid("iat claim is not a number"))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| invalid("the system clock is before 1970"))?
            .as_secs();
        if iat > now.saturating_add(self.leeway_secs) as f64 {
            return Err(invalid("token issued in the future (iat)"));
        }
        Ok(())
    }

    fn principal_from(&self, claims: &Map<String, Value>) -> Result<Principal, AuthError> {
        // `jsonwebtoken` checks iss membership but also accepts an array; the
        // RFC says iss is a single string, so anything else is refused.
        if self.issuer.is_some() && !matches!(claims.get("iss"), Some(Value::String(_))) {
            return Err(invalid("the issuer claim is not a string"));
        }
        let subject = match claims.get("sub") {
            Some(Value::String(s)) => s.clone(),
            _ => return Err(bad_claims("the subject claim is missing or not a string")),
        };
        let team = match claims.get(&self.team_claim) {
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(bad_claims("the team claim is not a string")),
            None => return Err(bad_claims("the team claim is missing")),
        };
        let values = role_values(claims.get(&self.roles_claim))?;
        let role = self.role_map.resolve(values.iter().copied())?;
        let mut principal = Principal::new(subject, team, role)?;
        // Every team only for the subjects configuration names: a leaked or misissued
        // service token of any other subject must not reach every tenant.
        if principal.team == super::ALL_TEAMS
            && !self.service_subjects.all_teams.contains(&principal.subject)
        {
            return Err(bad_claims(
                "the all-teams value is only accepted for the configured service subjects",
            ));
        }
        if role == Role::Service {
            let granted = self.role_map.resolve_limits(values.iter().copied());
            let configured = self.service_subjects.limits.get(&principal.subject);
            principal.limits = match (granted, configured) {
                (Some(g), Some(c)) => Some(g.intersect(c)),
                (Some(l), None) => Some(l),
                (None, Some(c)) => Some(c.clone()),
                (None, None) => None,
            };
        }
        if let Some(claim) = &self.groups_claim {
            let values = role_values(claims.get(claim)).map_err(|_| {
                bad_claims("the groups claim is neither a string nor an array of strings")
            })?;
            principal.groups = super::principal::check_groups(values)?;
        }
        Ok(principal)
    }
}

/// The rules for one algorithm: `exp` and `sub` always required, `iss` and
/// `aud` when configured, `nbf` checked when present.
fn validation(alg: Algorithm, cfg: &VerifierConfig) -> Validation {
    let mut validation = Validation::new(alg);
    validation.leeway = cfg.leeway_secs;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.validate_aud = true;
    let mut required = vec!["exp", "sub"];
    if let Some(iss) = &cfg.issuer {
        validation.set_issuer(&[iss]);
        required.push("iss");
    }
    if let Some(aud) = &cfg.audience {
        validation.set_audience(&[aud]);
        required.push("aud");
    }
    validation.set_required_spec_claims(&required);
    validation
}

/// The claims of a token minted by [`mint_hs256`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MintClaims {
    /// `sub`.
    pub subject: String,
    /// The team id or `*`, written under `team_claim`.
    pub team: String,
    /// Role values, written as an array under `roles_claim`.
    pub roles: Vec<String>,
    /// `iss`, omitted when `None`.
    pub issuer: Option<String>,
    /// `aud`, omitted when `None`.
    pub audience: Option<String>,
    /// `exp = now + ttl_secs`.
    pub ttl_secs: u64,
    /// Name of the team claim (usually [`DEFAULT_TEAM_CLAIM`]).
    pub team_claim: String,
    /// Name of the roles claim (usually [`DEFAULT_ROLES_CLAIM`]).
    pub roles_claim: String,
}

/// Signs an HS256 token with `iat = now` and `exp = now + ttl`.
///
/// Refuses what the verifier would refuse in shape (short secret, bad
/// subject or team, colliding claim names), so `token --dev` fails at once
/// instead of minting a token that can never work.
pub fn mint_hs256(secret: &[u8], claims: &MintClaims) -> Result<String, AuthError> {
    if secret.len() < MIN_SECRET_BYTES {
        return Err(config_error("the HS256 secret must be at least 32 bytes"));
    }
    check_claim_names(&claims.team_claim, &claims.roles_claim)?;
    check_subject(&claims.subject)?;
    check_team(&claims.team)?;

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| config_error("the system clock is before 1970"))?
        .as_secs();
    let exp = now
        .checked_add(claims.ttl_secs)
        .ok_or_else(|| config_error("the token lifetime is too large"))?;

    let mut body = Map::new();
    body.insert("sub".to_owned(), Value::from(claims.subject.as_str()));
    body.insert("iat".to_owned(), Value::from(now));
    body.insert("exp".to_owned(), Value::from(exp));
    if let Some(iss) = &claims.issuer {
        body.insert("iss".to_owned(), Value::from(iss.as_str()));
    }
    if let Some(aud) = &claims.audience {
        body.insert("aud".to_owned(), Value::from(aud.as_str()));
    }
    body.insert(claims.team_claim.clone(), Value::from(claims.team.as_str()));
    body.insert(
        claims.roles_claim.clone(),
        Value::Array(
            claims
                .roles
                .iter()
                .map(|r| Value::from(r.as_str()))
                .collect(),
        ),
    );

    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &body,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|_| config_error("signing the token failed"))
}

/// `Bearer <token>`, scheme in any case, exactly one space, and a token of
/// three non-empty base64url segments no longer than [`MAX_TOKEN_BYTES`].
fn bearer_token(authorization: Option<&str>) -> Result<&str, AuthError> {
    let value = authorization.ok_or(AuthError::Missing)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed);
    }
    // Size first: nothing below looks at more than this many bytes.
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Malformed);
    }
    // Also rejects a second space, tabs, trailing whitespace and a fourth
    // segment: anything that is not exactly a compact JWS.
    let mut segments = 0;
    for segment in token.split('.') {
        segments += 1;
        let base64url = segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if segment.is_empty() || !base64url {
            return Err(AuthError::Malformed);
        }
    }
    if segments != 3 {
        return Err(AuthError::Malformed);
    }
    Ok(token)
}

/// The role claim as a list of values: absent means none (and so, later,
/// no role); a string is one value; an array must hold only strings.
fn role_values(claim: Option<&Value>) -> Result<Vec<&str>, AuthError> {
    match claim {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.as_str()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .ok_or_else(|| bad_claims("the roles claim holds a non-string value"))
            })
            .collect(),
        Some(_) => Err(bad_claims(
            "the roles claim is neither a string nor an array of strings",
        )),
    }
}

fn check_claim_names(team_claim: &str, roles_claim: &str) -> Result<(), AuthError> {
    if team_claim.is_empty() || roles_claim.is_empty() {
        return Err(config_error(
            "the team and roles claim names must not be empty",
        ));
    }
    if team_claim == roles_claim {
        return Err(config_error("the team and roles claims must differ"));
    }
    if REGISTERED_CLAIMS.contains(&team_claim) || REGISTERED_CLAIMS.contains(&roles_claim) {
        return Err(config_error(
            "the team and roles claims must not be registered JWT claims",
        ));
    }
    Ok(())
}

/// A fixed reason per `jsonwebtoken` failure. Its own messages are not
/// used: JSON errors can quote parts of the token.
fn reject(kind: &ErrorKind) -> AuthError {
    invalid(match kind {
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => "algorithm not allowed",
        ErrorKind::ExpiredSignature => "token expired",
        ErrorKind::ImmatureSignature => "token not yet valid (nbf)",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::InvalidSubject => "wrong subject",
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "exp" => "missing exp claim",
            "sub" => "missing or non-string sub claim",
            "iss" => "missing or malformed iss claim",
            "aud" => "missing or malformed aud claim",
            _ => "missing required claim",
        },
        ErrorKind::InvalidClaimFormat(claim) => match claim.as_str() {
            "exp" => "exp claim is not a number",
            "nbf" => "nbf claim is not a number",
            _ => "a time claim is not a number",
        },
        ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_)
        | ErrorKind::InvalidToken => "token is not decodable",
        _ => "token rejected",
    })
}

fn invalid(reason: &str) -> AuthError {
    AuthError::Invalid(reason.to_owned())
}

fn bad_claims(reason: &str) -> AuthError {
    AuthError::BadClaims(reason.to_owned())
}

/// Configuration and minting problems; not about any token.
fn config_error(reason: &str) -> AuthError {
    AuthError::Invalid(reason.to_owned())
}

#[cfg(test)]
mod tests {
    use super::super::limits::Limits;
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;

    const SECRET: &[u8] = b"test-secret-0123456789-abcdefghijklmnop";
    const ISS: &str = "https://idp.example.test";
    const AUD: &str = "integration-hub";

    fn config() -> VerifierConfig {
        VerifierConfig {
            issuer: Some(ISS.to_owned()),
            audience: Some(AUD.to_owned()),
            ..VerifierConfig::new(SECRET.to_vec())
        }
    }

    async fn verifier() -> Verifier {
        Verifier::new(config()).await.unwrap()
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn mint_claims(roles: &[&str]) -> MintClaims {
        MintClaims {
            subject: "alice@example.test".to_owned(),
            team: "team-1".to_owned(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            issuer: Some(ISS.to_owned()),
            audience: Some(AUD.to_owned()),
            ttl_secs: 600,
            team_claim: DEFAULT_TEAM_CLAIM.to_owned(),
            roles_claim: DEFAULT_ROLES_CLAIM.to_owned(),
        }
    }

    /// A valid claim set as JSON, to be edited by each test.
    fn body() -> Value {
        json!({
            "sub": "alice@example.test",
            "iss": ISS,
            "aud": AUD,
            "iat": now(),
            "exp": now() + 600,
            "team_id": "team-1",
            "roles": ["developer"],
        })
    }

    fn sign_with(alg: Algorithm, secret: &[u8], body: &Value) -> String {
        jsonwebtoken::encode(&Header::new(alg), body, &EncodingKey::from_secret(secret)).unwrap()
    }

    fn sign(body: &Value) -> String {
        sign_with(Algorithm::HS256, SECRET, body)
    }

    fn with(edit: impl FnOnce(&mut Map<String, Value>)) -> String {
        let mut b = body();
        edit(b.as_object_mut().unwrap());
        sign(&b)
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    async fn check(token: &str) -> Result<Principal, AuthError> {
        verifier().await.verify(Some(&bearer(token))).await
    }

    fn b64(json: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(json).unwrap())
    }

    fn reason(err: AuthError) -> String {
        match err {
            AuthError::Invalid(r) | AuthError::BadClaims(r) => r,
            other => panic!("expected a reason, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_minted_token_verifies_to_its_principal() {
        let token = mint_hs256(SECRET, &mint_claims(&["viewer", "editor"])).unwrap();
        let p = check(&token).await.unwrap();
        assert_eq!(
            p,
            Principal {
                subject: "alice@example.test".to_owned(),
                team: "team-1".to_owned(),
                role: Role::Developer,
                limits: None,
                groups: Vec::new(),
            }
        );
    }

    #[tokio::test]
    async fn a_minted_token_carries_iat_exp_and_roles_as_an_array() {
        let token = mint_hs256(SECRET, &mint_claims(&["admin"])).unwrap();
        let payload = token.split('.').nth(1).unwrap();
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(claims["roles"], json!(["admin"]));
        let (iat, exp) = (
            claims["iat"].as_u64().unwrap(),
            claims["exp"].as_u64().unwrap(),
        );
        assert_eq!(exp - iat, 600);
        assert!(iat.abs_diff(now()) <= 5);
    }

    #[tokio::test]
    async fn custom_claim_names_are_used_for_minting_and_verifying() {
        let mut claims = mint_claims(&["ops"]);
        claims.team_claim = "org".to_owned();
        claims.roles_claim = "groups".to_owned();
        claims.issuer = None;
        claims.audience = None;
        let token = mint_hs256(SECRET, &claims).unwrap();
        let v = Verifier::new(VerifierConfig {
            team_claim: "org".to_owned(),
            roles_claim: "groups".to_owned(),
            role_map: RoleMap::parse("ops=admin").unwrap(),
            ..VerifierConfig::new(SECRET.to_vec())
        })
        .await
        .unwrap();
        assert_eq!(
            v.verify(Some(&bearer(&token))).await.unwrap().role,
            Role::Admin
        );
        // The default verifier looks for `team_id` and refuses.
        assert!(check(&token).await.is_err());
    }

    #[tokio::test]
    async fn minting_refuses_what_could_never_verify() {
        assert!(mint_hs256(b"short", &mint_claims(&["admin"])).is_err());
        let mut c = mint_claims(&["admin"]);
        c.team = "not a team".to_owned();
        assert!(mint_hs256(SECRET, &c).is_err());
        let mut c = mint_claims(&["admin"]);
        c.subject = String::new();
        assert!(mint_hs256(SECRET, &c).is_err());
        let mut c = mint_claims(&["admin"]);
        c.roles_claim = "exp".to_owned();
        assert!(mint_hs256(SECRET, &c).is_err());
        let mut c = mint_claims(&["admin"]);
        c.ttl_secs = u64::MAX;
        assert!(mint_hs256(SECRET, &c).is_err());
    }

    #[tokio::test]
    async fn the_scheme_is_case_insensitive() {
        let token = sign(&body());
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            let header = format!("{scheme} {token}");
            assert!(
                verifier().await.verify(Some(&header)).await.is_ok(),
                "{scheme}"
            );
        }
    }

    #[tokio::test]
    async fn a_missing_header_is_missing() {
        assert!(matches!(
            verifier().await.verify(None).await,
            Err(AuthError::Missing)
        ));
    }

    #[tokio::test]
    async fn anything_but_bearer_and_one_space_is_malformed() {
        let token = sign(&body());
        let cases = [
            format!("Basic {token}"),
            format!("Token {token}"),
            format!("Bearer  {token}"),
            format!("Bearer\t{token}"),
            format!("Bearer {token} "),
            format!(" Bearer {token}"),
            format!("Bearer{token}"),
            token.clone(),
            format!("Bearer {token}.x"),
            format!("Bearer {token} extra"),
            String::new(),
            "Bearer".to_owned(),
        ];
        for header in cases {
            assert!(
                matches!(
                    verifier().await.verify(Some(&header)).await,
                    Err(AuthError::Malformed)
                ),
                "{header:?}"
            );
        }
    }

    #[tokio::test]
    async fn an_empty_token_is_malformed() {
        assert!(matches!(
            verifier().await.verify(Some("Bearer ")).await,
            Err(AuthError::Malformed)
        ));
        assert!(matches!(check("..").await, Err(AuthError::Malformed)));
    }

    #[tokio::test]
    async fn an_oversized_token_is_refused_before_parsing() {
        // Validly signed, so only the size can be the reason.
        let token = with(|b| {
            b.insert("padding".to_owned(), json!("x".repeat(MAX_TOKEN_BYTES)));
        });
        assert!(token.len() > MAX_TOKEN_BYTES);
        assert!(matches!(check(&token).await, Err(AuthError::Malformed)));
        // And garbage of that size is refused the same way.
        let junk = format!(
            "{}.{}.{}",
            "a".repeat(4000),
            "b".repeat(4000),
            "c".repeat(200)
        );
        assert!(matches!(check(&junk).await, Err(AuthError::Malformed)));
    }

    #[tokio::test]
    async fn alg_none_is_refused() {
        let header = b64(&json!({"alg": "none", "typ": "JWT"}));
        let payload = b64(&body());
        // The classic shape: empty signature.
        assert!(check(&format!("{header}.{payload}.")).await.is_err());
        // With a signature present, so the algorithm itself is what fails.
        let sig = sign(&body()).rsplit('.').next().unwrap().to_owned();
        let err = check(&format!("{header}.{payload}.{sig}"))
            .await
            .unwrap_err();
        assert!(matches!(err, AuthError::Invalid(_)), "{err:?}");
        for alg in ["None", "NONE"] {
            let header = b64(&json!({"alg": alg}));
            assert!(check(&format!("{header}.{payload}.{sig}")).await.is_err());
        }
    }

    #[tokio::test]
    async fn other_algorithms_are_refused_even_with_our_secret() {
        for alg in [Algorithm::HS384, Algorithm::HS512] {
            let token = sign_with(alg, SECRET, &body());
            assert_eq!(
                reason(check(&token).await.unwrap_err()),
                "algorithm not allowed"
            );
        }
        // An RS256 header over an HMAC signature (algorithm confusion).
        let header = b64(&json!({"alg": "RS256", "typ": "JWT"}));
        let good = sign(&body());
        let mut parts = good.split('.');
        let (_, payload, sig) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        let err = check(&format!("{header}.{payload}.{sig}"))
            .await
            .unwrap_err();
        assert_eq!(reason(err), "algorithm not allowed");
    }

    #[tokio::test]
    async fn a_tampered_payload_fails_the_signature() {
        let good = sign(&body());
        let mut parts = good.split('.');
        let (header, _, sig) = (parts.next().unwrap(), parts.next(), parts.next().unwrap());
        let mut tampered = body();
        tampered["roles"] = json!(["admin"]);
        let token = format!("{header}.{}.{sig}", b64(&tampered));
        assert_eq!(reason(check(&token).await.unwrap_err()), "bad signature");
    }

    #[tokio::test]
    async fn a_truncated_signature_is_refused() {
        let good = sign(&body());
        for cut in [1, 2, 4, 20] {
            let token = &good[..good.len() - cut];
            assert!(check(token).await.is_err(), "cut {cut}");
        }
    }

    #[tokio::test]
    async fn a_token_signed_with_another_secret_is_refused() {
        let token = sign_with(
            Algorithm::HS256,
            b"another-secret-0123456789-abcdefghij",
            &body(),
        );
        assert_eq!(reason(check(&token).await.unwrap_err()), "bad signature");
    }

    #[tokio::test]
    async fn a_token_expired_beyond_the_leeway_is_refused() {
        let token = with(|b| {
            b.insert("exp".to_owned(), json!(now() - 120));
        });
        assert_eq!(reason(check(&token).await.unwrap_err()), "token expired");
    }

    #[tokio::test]
    async fn a_token_expired_within_the_leeway_is_accepted() {
        let token = with(|b| {
            b.insert("exp".to_owned(), json!(now() - 10));
        });
        assert!(check(&token).await.is_ok());
    }

    #[tokio::test]
    async fn exp_is_required_and_must_be_a_number() {
        let token = with(|b| {
            b.remove("exp");
        });
        assert_eq!(
            reason(check(&token).await.unwrap_err()),
            "missing exp claim"
        );
        let token = with(|b| {
            b.insert("exp".to_owned(), json!((now() + 600).to_string()));
        });
        assert!(matches!(check(&token).await, Err(AuthError::Invalid(_))));
        let token = with(|b| {
            b.insert("exp".to_owned(), json!(-5));
        });
        assert!(check(&token).await.is_err());
    }

    #[tokio::test]
    async fn a_future_nbf_is_refused_and_a_past_one_accepted() {
        let token = with(|b| {
            b.insert("nbf".to_owned(), json!(now() + 3600));
        });
        assert_eq!(
            reason(check(&token).await.unwrap_err()),
            "token not yet valid (nbf)"
        );
        let token = with(|b| {
            b.insert("nbf".to_owned(), json!(now() - 60));
        });
        assert!(check(&token).await.is_ok());
        let token = with(|b| {
            b.insert("nbf".to_owned(), json!("soon"));
        });
        assert!(check(&token).await.is_err());
    }

    #[tokio::test]
    async fn the_issuer_is_required_and_checked_when_configured() {
        let wrong = with(|b| {
            b.insert("iss".to_owned(), json!("https://evil.test"));
        });
        assert!(matches!(check(&wrong).await, Err(AuthError::Invalid(_))));
        let missing = with(|b| {
            b.remove("iss");
        });
        assert!(matches!(check(&missing).await, Err(AuthError::Invalid(_))));
        let as_list = with(|b| {
            b.insert("iss".to_owned(), json!([ISS]));
        });
        assert!(matches!(check(&as_list).await, Err(AuthError::Invalid(_))));
    }

    #[tokio::test]
    async fn the_issuer_is_not_required_when_not_configured() {
        let v = Verifier::new(VerifierConfig {
            issuer: None,
            ..config()
        })
        .await
        .unwrap();
        let token = with(|b| {
            b.remove("iss");
        });
        assert!(v.verify(Some(&bearer(&token))).await.is_ok());
    }

    #[tokio::test]
    async fn the_audience_is_required_and_checked_when_configured() {
        let wrong = with(|b| {
            b.insert("aud".to_owned(), json!("other-service"));
        });
        assert_eq!(reason(check(&wrong).await.unwrap_err()), "wrong audience");
        let missing = with(|b| {
            b.remove("aud");
        });
        assert!(matches!(check(&missing).await, Err(AuthError::Invalid(_))));
        let list_without_us = with(|b| {
            b.insert("aud".to_owned(), json!(["a", "b"]));
        });
        assert!(matches!(
            check(&list_without_us).await,
            Err(AuthError::Invalid(_))
        ));
        let list_with_us = with(|b| {
            b.insert("aud".to_owned(), json!(["a", AUD]));
        });
        assert!(check(&list_with_us).await.is_ok());
    }

    #[tokio::test]
    async fn without_a_configured_audience_a_token_addressed_elsewhere_is_refused() {
        let v = Verifier::new(VerifierConfig {
            audience: None,
            ..config()
        })
        .await
        .unwrap();
        let addressed = sign(&body());
        assert!(v.verify(Some(&bearer(&addressed))).await.is_err());
        let unaddressed = with(|b| {
            b.remove("aud");
        });
        assert!(v.verify(Some(&bearer(&unaddressed))).await.is_ok());
    }

    #[tokio::test]
    async fn sub_is_required_and_must_be_a_valid_subject() {
        let missing = with(|b| {
            b.remove("sub");
        });
        assert!(check(&missing).await.is_err());
        let number = with(|b| {
            b.insert("sub".to_owned(), json!(42));
        });
        assert!(check(&number).await.is_err());
        let control = with(|b| {
            b.insert("sub".to_owned(), json!("bob\nINFO forged"));
        });
        assert!(matches!(
            check(&control).await,
            Err(AuthError::BadClaims(_))
        ));
    }

    #[tokio::test]
    async fn the_team_claim_is_required_and_must_be_a_string() {
        let missing = with(|b| {
            b.remove("team_id");
        });
        assert_eq!(
            reason(check(&missing).await.unwrap_err()),
            "the team claim is missing"
        );
        for value in [json!(7), json!(["team-1"]), json!(null), json!({"id": "t"})] {
            let token = with(|b| {
                b.insert("team_id".to_owned(), value.clone());
            });
            assert!(
                matches!(check(&token).await, Err(AuthError::BadClaims(_))),
                "{value}"
            );
        }
        let bad_shape = with(|b| {
            b.insert("team_id".to_owned(), json!("team 1"));
        });
        assert!(matches!(
            check(&bad_shape).await,
            Err(AuthError::BadClaims(_))
        ));
    }

    /// A verifier whose configuration names `worker` for every team and limits `slack-bot`.
    async fn service_verifier(role_map: &str) -> Verifier {
        Verifier::new(VerifierConfig {
            role_map: RoleMap::parse(role_map).unwrap(),
            service_subjects: ServiceSubjects::parse(
                Some("worker"),
                Some("slack-bot=services:slack|github"),
            )
            .unwrap(),
            ..config()
        })
        .await
        .unwrap()
    }

    fn service_token(subject: &str, team: &str, roles: &[&str]) -> String {
        with(|b| {
            b.insert("sub".to_owned(), json!(subject));
            b.insert("team_id".to_owned(), json!(team));
            b.insert("roles".to_owned(), json!(roles));
        })
    }

    #[tokio::test]
    async fn all_teams_is_only_for_the_service_role_and_the_configured_subjects() {
        let v =
            service_verifier("service=service,viewer=viewer,developer=developer,admin=admin").await;
        for role in ["viewer", "developer", "admin"] {
            let token = service_token("worker", "*", &[role]);
            assert!(
                matches!(
                    v.verify(Some(&bearer(&token))).await,
                    Err(AuthError::BadClaims(_))
                ),
                "{role}"
            );
        }
        let p = v
            .verify(Some(&bearer(&service_token("worker", "*", &["service"]))))
            .await
            .unwrap();
        assert_eq!(p.role, Role::Service);
        assert!(p.all_teams());
        // Any other subject claiming every team is refused, configured or not.
        for subject in ["alice@example.test", "slack-bot", "Worker"] {
            let token = service_token(subject, "*", &["service"]);
            assert_eq!(
                reason(v.verify(Some(&bearer(&token))).await.unwrap_err()),
                "the all-teams value is only accepted for the configured service subjects",
                "{subject}"
            );
        }
        // Without configuration nobody holds every team.
        let token = service_token("worker", "*", &["service"]);
        assert!(matches!(check(&token).await, Err(AuthError::BadClaims(_))));
    }

    #[tokio::test]
    async fn a_service_gets_the_narrower_of_its_role_values_and_its_subjects_limits() {
        let v = service_verifier(
            "svc=service,slack=service;services:slack;types:slack.post_team_activity",
        )
        .await;
        let verify = async |subject: &str, roles: &[&str]| {
            v.verify(Some(&bearer(&service_token(subject, "team-1", roles))))
                .await
                .unwrap()
                .limits
        };
        assert_eq!(verify("other", &["svc"]).await, None, "unlimited");
        let by_claim = verify("other", &["slack"]).await.unwrap();
        assert_eq!(
            by_claim.services,
            Limits::parse("services:slack").unwrap().services
        );
        let by_subject = verify("slack-bot", &["svc"]).await.unwrap();
        assert_eq!(by_subject.services.unwrap().len(), 2);
        let both = verify("slack-bot", &["slack"]).await.unwrap();
        assert_eq!(
            both.services,
            Limits::parse("services:slack").unwrap().services
        );
        assert!(both.types.is_some());
        // A person's token carries no limits: limits narrow services only.
        let dev = with(|b| {
            b.insert("sub".to_owned(), json!("slack-bot"));
        });
        assert_eq!(check(&dev).await.unwrap().limits, None);
    }

    #[tokio::test]
    async fn unknown_or_differently_cased_roles_grant_nothing() {
        for roles in [
            json!(["root"]),
            json!(["Admin"]),
            json!("ADMIN"),
            json!([]),
            json!(null),
        ] {
            let token = with(|b| {
                b.insert("roles".to_owned(), roles.clone());
            });
            assert!(
                matches!(check(&token).await, Err(AuthError::NoRole)),
                "{roles}"
            );
        }
        let token = with(|b| {
            b.remove("roles");
        });
        assert!(matches!(check(&token).await, Err(AuthError::NoRole)));
        // An unknown value beside a known one is ignored.
        let token = with(|b| {
            b.insert("roles".to_owned(), json!(["Admin", "viewer"]));
        });
        assert_eq!(check(&token).await.unwrap().role, Role::Viewer);
    }

    #[tokio::test]
    async fn roles_may_be_a_string_or_an_array_of_strings() {
        let one = with(|b| {
            b.insert("roles".to_owned(), json!("super_admin"));
        });
        assert_eq!(check(&one).await.unwrap().role, Role::Admin);
        let many = with(|b| {
            b.insert("roles".to_owned(), json!(["guest", "admin", "editor"]));
        });
        assert_eq!(check(&many).await.unwrap().role, Role::Admin);
        for bad in [json!(["admin", 1]), json!(5), json!({"admin": true})] {
            let token = with(|b| {
                b.insert("roles".to_owned(), bad.clone());
            });
            assert!(
                matches!(check(&token).await, Err(AuthError::BadClaims(_))),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn service_mixed_with_a_human_role_is_refused() {
        let token = with(|b| {
            b.insert("roles".to_owned(), json!(["service", "admin"]));
        });
        assert!(matches!(check(&token).await, Err(AuthError::BadClaims(_))));
    }

    #[tokio::test]
    async fn key_fetching_headers_are_ignored() {
        let mut header = Header::new(Algorithm::HS256);
        header.jku = Some("https://attacker.test/jwks.json".to_owned());
        header.x5u = Some("https://attacker.test/cert.pem".to_owned());
        header.kid = Some("attacker".to_owned());
        let token =
            jsonwebtoken::encode(&header, &body(), &EncodingKey::from_secret(SECRET)).unwrap();
        assert!(check(&token).await.is_ok());
        let forged = jsonwebtoken::encode(
            &header,
            &body(),
            &EncodingKey::from_secret(b"attacker-secret-0123456789-abcdefgh"),
        )
        .unwrap();
        assert_eq!(reason(check(&forged).await.unwrap_err()), "bad signature");
    }

    #[tokio::test]
    async fn a_crit_header_is_refused() {
        let mut header = Header::new(Algorithm::HS256);
        header.crit = Some(vec!["b64".to_owned()]);
        let token =
            jsonwebtoken::encode(&header, &body(), &EncodingKey::from_secret(SECRET)).unwrap();
        assert!(matches!(check(&token).await, Err(AuthError::Invalid(_))));
    }

    #[tokio::test]
    async fn the_configuration_is_checked() {
        assert!(
            Verifier::new(VerifierConfig::new(vec![7; 31]))
                .await
                .is_err()
        );
        assert!(
            Verifier::new(VerifierConfig::new(vec![7; 32]))
                .await
                .is_ok()
        );
        assert!(Verifier::new(VerifierConfig::default()).await.is_err());
        let bad = [
            VerifierConfig {
                leeway_secs: u64::MAX,
                ..config()
            },
            VerifierConfig {
                team_claim: String::new(),
                ..config()
            },
            VerifierConfig {
                roles_claim: "team_id".to_owned(),
                ..config()
            },
            VerifierConfig {
                team_claim: "sub".to_owned(),
                ..config()
            },
            VerifierConfig {
                issuer: Some(String::new()),
                ..config()
            },
            VerifierConfig {
                audience: Some(String::new()),
                ..config()
            },
        ];
        for cfg in bad {
            assert!(Verifier::new(cfg.clone()).await.is_err(), "{cfg:?}");
        }
    }

    #[tokio::test]
    async fn debug_output_never_shows_the_secret() {
        let secret = b"CANARY-SECRET-0123456789-abcdefghijklmnop".to_vec();
        let cfg = VerifierConfig::new(secret.clone());
        let v = Verifier::new(cfg.clone()).await.unwrap();
        let canary = "CANARY-SECRET";
        for text in [format!("{cfg:?}"), format!("{v:?}"), format!("{v:#?}")] {
            assert!(!text.contains(canary), "{text}");
            assert!(!text.contains("67, 65, 78, 65, 82, 89"), "{text}"); // b"CANARY"
            assert!(text.contains("redacted"), "{text}");
        }
    }

    #[tokio::test]
    async fn errors_never_contain_the_token() {
        let canary = "CANARY0token0CANARY";
        // Each edit sets one claim; every resulting token is refused.
        let edits = [
            ("exp", json!(now() - 3600)),
            ("aud", json!(canary)),
            ("iss", json!(canary)),
            ("team_id", json!(format!("{canary} x"))),
            ("roles", json!([canary])),
            ("exp", json!(canary)),
        ];
        let mut tokens: Vec<String> = edits
            .into_iter()
            .map(|(claim, value)| {
                let mut b = body();
                b["sub"] = json!(canary);
                b[claim] = value;
                sign(&b)
            })
            .collect();
        let mut b = body();
        b["sub"] = json!(canary);
        tokens.push(sign_with(
            Algorithm::HS256,
            b"wrong-secret-0123456789-abcdefghijkl",
            &b,
        ));
        tokens.push(sign_with(Algorithm::HS384, SECRET, &b));
        let none = b64(&json!({"alg": canary}));
        tokens.push(format!("{none}.{}.sig", b64(&b)));

        let v = verifier().await;
        let mut headers: Vec<String> = tokens.iter().map(|t| bearer(t)).collect();
        headers.push(format!("Basic {canary}"));
        headers.push(format!("Bearer {canary}.{canary}"));
        headers.push(format!("Bearer {}", canary.repeat(500)));
        for header in &headers {
            let err = v.verify(Some(header)).await.unwrap_err();
            let token = header.split_once(' ').map_or(header.as_str(), |(_, t)| t);
            for text in [err.to_string(), format!("{err:?}"), format!("{err:#?}")] {
                assert!(!text.contains(canary), "{text}");
                assert!(!text.contains(token), "{text}");
                assert!(!text.contains("test-secret"), "{text}");
            }
        }
    }
}
