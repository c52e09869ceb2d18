//! Who may connect: connection tokens (JWTs that an application's backend signs) and the
//! policy that says whether one is needed (`docs/auth.md`).
//!
//! Invariant: a connection is a signed-in user only through a token this node verified
//! (signature, accepted algorithm, `exp`); everything else it presents leaves it
//! anonymous. A refused token is logged by its reason alone, never by its text.

use app::protocol::{RoomName, Username};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// The longest `sub` taken, in characters.
const MAX_SUBJECT_CHARS: usize = 128;
/// The most private rooms one token may list.
const MAX_TOKEN_ROOMS: usize = 1_000;

/// Who may connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum AuthPolicy {
    /// Tokens are optional: anonymous users chat as they always did.
    #[default]
    Open,
    /// Every connection needs a valid token.
    Token,
    /// Anonymous users may read public rooms; only signed-in users set a name and post.
    MixedReadonly,
}

/// The claims chatroom reads from a token; others are ignored.
#[derive(Deserialize)]
struct Claims {
    // Optional here so that a missing one is told as such (the crate checks `exp` itself).
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    admin: bool,
}

/// A user id as the application gives it (a token's `sub`): 1 to 128 characters, no
/// control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject(String);

impl Subject {
    /// Checks a user id.
    pub fn parse(raw: &str) -> Result<Self, Denied> {
        if raw.is_empty() || raw.chars().count() > MAX_SUBJECT_CHARS || raw.chars().any(char::is_control) {
            return Err(Denied::BadClaim("sub"));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The id as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A verified token: who the user is and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The user id the application gave (`sub`): all its connections are one user.
    pub subject: Subject,
    /// The name the token fixes (`name`), if any.
    pub name: Option<Username>,
    /// When the token expires (`exp`), in seconds since the Unix epoch.
    pub expires: u64,
    /// The private rooms the user may join (`rooms`).
    pub rooms: BTreeSet<RoomName>,
    /// Whether the user may moderate (`admin`).
    pub admin: bool,
}

/// Why a connection (or a refresh) is not let in; the text is what the client is told.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum Denied {
    /// No token where one is required.
    #[error("a sign-in token is required")]
    TokenRequired,
    /// A token where the node has no key to check it with.
    #[error("this chat does not accept sign-in tokens")]
    TokensNotAccepted,
    /// The token's `exp` has passed.
    #[error("the sign-in token has expired")]
    Expired,
    /// The signature does not match the token.
    #[error("the sign-in token's signature is not valid")]
    BadSignature,
    /// The token is signed with an algorithm this node does not accept (`none`, or HS256
    /// where a public key is configured).
    #[error("the sign-in token is not signed with an accepted algorithm")]
    WrongAlgorithm,
    /// The token's `aud` is not this service's.
    #[error("the sign-in token is not meant for this chat")]
    WrongAudience,
    /// Not a JWT at all.
    #[error("the sign-in token is not a valid JWT")]
    Malformed,
    /// A claim is missing or not valid.
    #[error("the sign-in token has no valid {0} claim")]
    BadClaim(&'static str),
    /// A refresh with a token of another user, or for an anonymous connection.
    #[error("the new sign-in token is not for the same user")]
    OtherUser,
}

/// A key that cannot check tokens.
#[derive(Debug, Error)]
pub enum KeyError {
    /// An empty HMAC secret.
    #[error("not an HMAC secret")]
    NotASecret(#[source] jsonwebtoken::errors::Error),
    /// The file holds no RSA or P-256 public key in PEM.
    #[error("not an RSA or EC (P-256) public key in PEM")]
    NotAPublicKey(#[source] jsonwebtoken::errors::Error),
}

/// Checks tokens against one key.
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl TokenVerifier {
    /// Tokens signed with HS256 and `secret`.
    pub fn hmac(secret: &[u8], audience: Option<&str>) -> Result<Self, KeyError> {
        let key = DecodingKey::from_secret(secret).map_err(KeyError::NotASecret)?;
        Ok(Self { key, validation: validation(Algorithm::HS256, audience) })
    }

    /// Tokens signed with RS256 or ES256 by the private half of the PEM public key `pem`.
    pub fn public_key(pem: &[u8], audience: Option<&str>) -> Result<Self, KeyError> {
        match DecodingKey::from_rsa_pem(pem) {
            Ok(key) => Ok(Self { key, validation: validation(Algorithm::RS256, audience) }),
            Err(_) => DecodingKey::from_ec_pem(pem)
                .map(|key| Self { key, validation: validation(Algorithm::ES256, audience) })
                .map_err(KeyError::NotAPublicKey),
        }
    }

    /// The grant of a valid `token`.
    pub fn verify(&self, token: &str) -> Result<Grant, Denied> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|err| denied_for(err.kind()))?
            .claims;
        grant_of(claims)
    }
}

/// What a token must be: of `algorithm`, with `sub` and `exp` (checked to the second:
/// nodes and the application keep their clocks by NTP), and for `audience` if one is set.
fn validation(algorithm: Algorithm, audience: Option<&str>) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp", "sub"]);
    match audience {
        Some(audience) => {
            validation.set_audience(&[audience]);
            validation.required_spec_claims.insert("aud".to_owned());
        }
        None => validation.validate_aud = false,
    }
    validation
}

fn denied_for(kind: &ErrorKind) -> Denied {
    match kind {
        ErrorKind::ExpiredSignature => Denied::Expired,
        ErrorKind::InvalidSignature => Denied::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::UnsupportedAlgorithm => {
            Denied::WrongAlgorithm
        }
        ErrorKind::InvalidAudience => Denied::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) if claim == "sub" => Denied::BadClaim("sub"),
        ErrorKind::MissingRequiredClaim(claim) if claim == "exp" => Denied::BadClaim("exp"),
        ErrorKind::MissingRequiredClaim(_) => Denied::WrongAudience,
        _ => Denied::Malformed,
    }
}

fn grant_of(claims: Claims) -> Result<Grant, Denied> {
    let subject = Subject::parse(claims.sub.as_deref().unwrap_or_default())?;
    let Some(expires) = claims.exp else { return Err(Denied::BadClaim("exp")) };
    let name = claims.name.map(|name| Username::parse(&name)).transpose().map_err(|_| Denied::BadClaim("name"))?;
    if claims.rooms.len() > MAX_TOKEN_ROOMS {
        return Err(Denied::BadClaim("rooms"));
    }
    let rooms = claims
        .rooms
        .iter()
        .map(|room| RoomName::parse(room))
        .collect::<Result<_, _>>()
        .map_err(|_| Denied::BadClaim("rooms"))?;
    Ok(Grant { subject, name, expires, rooms, admin: claims.admin })
}

/// What a connection may do, decided on connecting and again on each refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// No token.
    Anonymous {
        /// Whether it may set a name and post (not under `mixed-readonly`).
        may_post: bool,
    },
    /// A verified token.
    Signed(Grant),
}

impl Access {
    /// Whether the connection may set a name and post lines.
    pub fn may_post(&self) -> bool {
        match self {
            Access::Anonymous { may_post } => *may_post,
            Access::Signed(_) => true,
        }
    }

    /// Whether the connection may join `room`: any public room, and the private rooms
    /// its token lists.
    pub fn may_join(&self, room: &RoomName) -> bool {
        !room.is_private() || matches!(self, Access::Signed(grant) if grant.rooms.contains(room))
    }

    /// The name the token fixes, if any.
    pub fn fixed_name(&self) -> Option<&Username> {
        match self {
            Access::Signed(grant) => grant.name.as_ref(),
            Access::Anonymous { .. } => None,
        }
    }

    /// How long until the token expires (`None` without one; zero once it has).
    pub fn expires_in(&self) -> Option<Duration> {
        let Access::Signed(grant) = self else { return None };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Some(Duration::from_secs(grant.expires).saturating_sub(now))
    }
}

/// A node's gate: its policy and, when it accepts tokens, the key it checks them with.
pub struct Gate {
    policy: AuthPolicy,
    verifier: Option<TokenVerifier>,
}

impl Gate {
    /// A gate of `policy`, checking tokens with `verifier` if given.
    pub fn new(policy: AuthPolicy, verifier: Option<TokenVerifier>) -> Self {
        Self { policy, verifier }
    }

    /// Anyone may connect; no token is accepted (a node with no auth settings).
    pub fn open() -> Self {
        Self::new(AuthPolicy::Open, None)
    }

    /// What a connection that presents `token` (or none) may do, or why it may not connect.
    pub fn admit(&self, token: Option<&str>) -> Result<Access, Denied> {
        match (token, &self.verifier) {
            (Some(_), None) => Err(Denied::TokensNotAccepted),
            (Some(token), Some(verifier)) => verifier.verify(token).map(Access::Signed),
            (None, _) => match self.policy {
                AuthPolicy::Open => Ok(Access::Anonymous { may_post: true }),
                AuthPolicy::MixedReadonly => Ok(Access::Anonymous { may_post: false }),
                AuthPolicy::Token => Err(Denied::TokenRequired),
            },
        }
    }

    /// The access a signed-in connection has with a fresh `token` of the same user.
    pub fn refresh(&self, current: &Access, token: &str) -> Result<Access, Denied> {
        let Access::Signed(current) = current else { return Err(Denied::OtherUser) };
        match self.admit(Some(token))? {
            Access::Signed(fresh) if fresh.subject == current.subject => Ok(Access::Signed(fresh)),
            _ => Err(Denied::OtherUser),
        }
    }

    /// Whether `token` is a valid token with the `admin` claim.
    pub fn is_admin(&self, token: &str) -> bool {
        self.verifier.as_ref().and_then(|verifier| verifier.verify(token).ok()).is_some_and(|grant| grant.admin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::{Value, json};

    const SECRET: &[u8] = b"a secret of at least thirty-two bytes!";

    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
    }

    fn signed(claims: &Value) -> String {
        encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(SECRET).expect("a key"))
            .expect("signed")
    }

    fn gate(policy: AuthPolicy) -> Gate {
        Gate::new(policy, Some(TokenVerifier::hmac(SECRET, None).expect("a secret")))
    }

    #[test]
    fn a_valid_token_grants_its_user_name_and_rooms() {
        let token = signed(&json!({"sub": "u-1", "exp": now() + 60, "name": " Ada ", "rooms": ["private-ops"]}));
        let Ok(Access::Signed(grant)) = gate(AuthPolicy::Token).admit(Some(&token)) else { panic!("not admitted") };
        assert_eq!(grant.subject.as_str(), "u-1");
        assert_eq!(grant.name.as_ref().map(Username::as_str), Some("Ada"));
        let access = Access::Signed(grant);
        assert!(access.may_join(&RoomName::parse("private-ops").expect("a room")));
        assert!(!access.may_join(&RoomName::parse("private-hr").expect("a room")));
        assert!(access.may_join(&RoomName::lobby()));
        assert!(access.expires_in().is_some_and(|left| left > Duration::from_secs(50)));
    }

    #[test]
    fn each_policy_decides_about_a_connection_without_a_token() {
        assert_eq!(gate(AuthPolicy::Open).admit(None), Ok(Access::Anonymous { may_post: true }));
        assert_eq!(gate(AuthPolicy::MixedReadonly).admit(None), Ok(Access::Anonymous { may_post: false }));
        assert_eq!(gate(AuthPolicy::Token).admit(None), Err(Denied::TokenRequired));
        assert_eq!(Gate::open().admit(Some("x.y.z")), Err(Denied::TokensNotAccepted));
        let anonymous = Access::Anonymous { may_post: true };
        assert!(!anonymous.may_join(&RoomName::parse("private-ops").expect("a room")));
    }

    #[test]
    fn bad_tokens_are_refused_with_their_reason() {
        let gate = gate(AuthPolicy::Open);
        let expired = signed(&json!({"sub": "u", "exp": now() - 1}));
        assert_eq!(gate.admit(Some(&expired)), Err(Denied::Expired));
        let valid = signed(&json!({"sub": "u", "exp": now() + 60}));
        // The signature's first character carries six bits of it (its last one only some),
        // so changing it always changes the signature.
        let at = valid.rfind('.').expect("a signature") + 1;
        let other = if valid[at..].starts_with('A') { "B" } else { "A" };
        let tampered = format!("{}{other}{}", &valid[..at], &valid[at + 1..]);
        assert_eq!(gate.admit(Some(&tampered)), Err(Denied::BadSignature));
        let other_key = encode(
            &Header::new(Algorithm::HS256),
            &json!({"sub": "u", "exp": now() + 60}),
            &EncodingKey::from_secret(b"another secret of thirty-two bytes or more").expect("a key"),
        )
        .expect("signed");
        assert_eq!(gate.admit(Some(&other_key)), Err(Denied::BadSignature));
        // `alg: none`: a header and claims without a signature. The crate knows no such
        // algorithm, so its header does not even parse.
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", valid.split('.').nth(1).expect("claims"));
        assert_eq!(gate.admit(Some(&none)), Err(Denied::Malformed));
        assert_eq!(gate.admit(Some("not a token")), Err(Denied::Malformed));
        assert_eq!(gate.admit(Some(&signed(&json!({"exp": now() + 60})))), Err(Denied::BadClaim("sub")));
        assert_eq!(gate.admit(Some(&signed(&json!({"sub": "u"})))), Err(Denied::BadClaim("exp")));
        let long_name = signed(&json!({"sub": "u", "exp": now() + 60, "name": "x".repeat(40)}));
        assert_eq!(gate.admit(Some(&long_name)), Err(Denied::BadClaim("name")));
        let bad_room = signed(&json!({"sub": "u", "exp": now() + 60, "rooms": ["Not A Room"]}));
        assert_eq!(gate.admit(Some(&bad_room)), Err(Denied::BadClaim("rooms")));
    }

    #[test]
    fn a_refresh_keeps_the_user() {
        let gate = gate(AuthPolicy::Open);
        let first = gate.admit(Some(&signed(&json!({"sub": "u", "exp": now() + 5})))).expect("admitted");
        let fresh = gate.refresh(&first, &signed(&json!({"sub": "u", "exp": now() + 600}))).expect("refreshed");
        assert!(fresh.expires_in().is_some_and(|left| left > Duration::from_secs(500)));
        let other = signed(&json!({"sub": "v", "exp": now() + 600}));
        assert_eq!(gate.refresh(&first, &other), Err(Denied::OtherUser));
        assert_eq!(gate.refresh(&Access::Anonymous { may_post: true }, &other), Err(Denied::OtherUser));
    }

    #[test]
    fn an_audience_once_set_is_required() {
        let gate = Gate::new(AuthPolicy::Open, Some(TokenVerifier::hmac(SECRET, Some("chat")).expect("a secret")));
        let ours = signed(&json!({"sub": "u", "exp": now() + 60, "aud": "chat"}));
        assert!(gate.admit(Some(&ours)).is_ok());
        let theirs = signed(&json!({"sub": "u", "exp": now() + 60, "aud": "billing"}));
        assert_eq!(gate.admit(Some(&theirs)), Err(Denied::WrongAudience));
        let none = signed(&json!({"sub": "u", "exp": now() + 60}));
        assert_eq!(gate.admit(Some(&none)), Err(Denied::WrongAudience));
    }

    #[test]
    fn a_public_key_takes_its_own_algorithm_and_no_other() {
        let public = include_bytes!("../tests/fixtures/token-rsa-public.pem");
        let private = include_bytes!("../tests/fixtures/token-rsa-private.pem");
        let gate = Gate::new(AuthPolicy::Token, Some(TokenVerifier::public_key(public, None).expect("an RSA key")));
        let claims = json!({"sub": "u", "exp": now() + 60});
        let rs256 = encode(&Header::new(Algorithm::RS256), &claims, &EncodingKey::from_rsa_pem(private).expect("key"))
            .expect("signed");
        assert!(gate.admit(Some(&rs256)).is_ok());
        // The classic confusion: HS256 "signed" with the public key as the secret.
        let confused =
            encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(public).expect("a key"))
                .expect("signed");
        assert_eq!(gate.admit(Some(&confused)), Err(Denied::WrongAlgorithm));
        let ec = rcgen::KeyPair::generate().expect("a P-256 key");
        let gate = Gate::new(
            AuthPolicy::Token,
            Some(TokenVerifier::public_key(ec.public_key_pem().as_bytes(), None).expect("EC")),
        );
        let es256 = encode(
            &Header::new(Algorithm::ES256),
            &claims,
            &EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).expect("key"),
        )
        .expect("signed");
        assert!(gate.admit(Some(&es256)).is_ok());
        assert_eq!(gate.admit(Some(&rs256)), Err(Denied::WrongAlgorithm));
        assert!(TokenVerifier::public_key(b"not a key", None).is_err());
    }

    #[test]
    fn only_a_valid_token_with_the_admin_claim_is_an_admin() {
        let gate = gate(AuthPolicy::Open);
        assert!(gate.is_admin(&signed(&json!({"sub": "op", "exp": now() + 60, "admin": true}))));
        assert!(!gate.is_admin(&signed(&json!({"sub": "u", "exp": now() + 60}))));
        assert!(!gate.is_admin(&signed(&json!({"sub": "op", "exp": now() - 1, "admin": true}))));
    }
}
