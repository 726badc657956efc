//! Password authentication with SCRAM-SHA-256, on `pgwire`'s SCRAM implementation.
//!
//! `pgwire` (over `ring`) owns the cryptography and the SASL exchange: salting a password,
//! the server-first and server-final messages, checking the client's proof against a stored
//! verifier, and channel binding (SCRAM-SHA-256-PLUS) over TLS. This module keeps what is the
//! database's: the stored form of a password ([`ScramVerifier`], Postgres's
//! `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` text, so a password is never
//! kept in clear text), and the source the exchange asks for a user's verifier, which answers
//! for a user that does not exist with a made-up verifier that no password matches. Postgres
//! does the same ("mock authentication"): an unknown user goes through the same exchange and
//! gets the same error as a wrong password, so nobody can find out which users exist.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use pgwire::api::auth::sasl::scram::{gen_salted_password, ScramSecret};
use pgwire::api::auth::{AuthSource, LoginInfo, Password};
use pgwire::error::{PgWireError, PgWireResult};

use crate::engine::PgEngine;

/// Iterations of the password hash for new verifiers: Postgres's default
/// (`scram_iterations`).
pub const SCRAM_ITERATIONS: usize = 4096;

const SALT_BYTES: usize = 16;

/// A password as the server keeps it: enough to check a SCRAM proof, not to recover the
/// password (RFC 5802's StoredKey and ServerKey).
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    iterations: usize,
    salt: Vec<u8>,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl ScramVerifier {
    /// The verifier of `password` with a fresh random salt.
    pub fn from_password(password: &str) -> ScramVerifier {
        let salt = rand::random::<[u8; SALT_BYTES]>().to_vec();
        Self::with_salt(password, salt, SCRAM_ITERATIONS)
    }

    fn with_salt(password: &str, salt: Vec<u8>, iterations: usize) -> ScramVerifier {
        let salted = gen_salted_password(password, &salt, iterations);
        match ScramSecret::verifier_from_salted_password(salt, salted, iterations) {
            ScramSecret::Verifier {
                salt,
                iterations,
                stored_key,
                server_key,
            } => ScramVerifier {
                iterations,
                salt,
                stored_key,
                server_key,
            },
            // `verifier_from_salted_password` only builds verifiers.
            ScramSecret::SaltedPassword { salt, .. } => ScramVerifier {
                iterations,
                salt,
                stored_key: Vec::new(),
                server_key: Vec::new(),
            },
        }
    }

    /// Whether `text` has the form of a stored verifier rather than a password: Postgres
    /// takes `PASSWORD 'SCRAM-SHA-256$...'` as the verifier itself (what pg_dumpall writes).
    pub fn is_verifier_text(text: &str) -> bool {
        text.parse::<ScramVerifier>().is_ok()
    }

    fn secret(&self) -> ScramSecret {
        ScramSecret::Verifier {
            salt: self.salt.clone(),
            iterations: self.iterations,
            stored_key: self.stored_key.clone(),
            server_key: self.server_key.clone(),
        }
    }
}

/// Postgres's text form, as `pg_authid.rolpassword` shows it.
impl fmt::Display for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(&self.stored_key),
            STANDARD.encode(&self.server_key)
        )
    }
}

// Never the keys: a verifier in a log line would allow an offline guessing attack.
impl fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramVerifier")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

/// A text that is not a SCRAM-SHA-256 verifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a SCRAM-SHA-256 verifier")]
pub struct NotAVerifier;

impl FromStr for ScramVerifier {
    type Err = NotAVerifier;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let rest = text.strip_prefix("SCRAM-SHA-256$").ok_or(NotAVerifier)?;
        let (salting, keys) = rest.split_once('$').ok_or(NotAVerifier)?;
        let (iterations, salt) = salting.split_once(':').ok_or(NotAVerifier)?;
        let (stored_key, server_key) = keys.split_once(':').ok_or(NotAVerifier)?;
        let decode = |part: &str| STANDARD.decode(part).map_err(|_| NotAVerifier);
        let verifier = ScramVerifier {
            iterations: iterations.parse().map_err(|_| NotAVerifier)?,
            salt: decode(salt)?,
            stored_key: decode(stored_key)?,
            server_key: decode(server_key)?,
        };
        // SHA-256 keys are 32 bytes; anything else could never match a proof.
        if verifier.iterations == 0
            || verifier.stored_key.len() != 32
            || verifier.server_key.len() != 32
        {
            return Err(NotAVerifier);
        }
        Ok(verifier)
    }
}

/// How a connection must prove who it is, as the engine decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// No proof: whoever connects is the user they name (loopback servers without a
    /// password).
    Trust,
    /// SCRAM-SHA-256 against the user's stored verifier.
    Scram,
}

/// The verifiers `pgwire`'s SCRAM exchange checks proofs against: the engine's, or a mock
/// one for a user without a password.
pub(crate) struct EngineVerifiers<E> {
    engine: Arc<E>,
    /// Keys the mock salts, so a user that does not exist gets the same salt on every
    /// attempt (as a real user does) without the salt telling anything about the server.
    mock_key: String,
}

impl<E> EngineVerifiers<E> {
    pub(crate) fn new(engine: Arc<E>) -> Self {
        let key: [u8; 32] = rand::random();
        Self {
            engine,
            mock_key: STANDARD.encode(key),
        }
    }

    fn mock_secret(&self, user: &str) -> ScramSecret {
        let salt = gen_salted_password(&format!("{}{user}", self.mock_key), b"mock salt", 1);
        ScramSecret::Verifier {
            salt: salt[..SALT_BYTES].to_vec(),
            iterations: SCRAM_ITERATIONS,
            // Random keys: no proof matches them.
            stored_key: rand::random::<[u8; 32]>().to_vec(),
            server_key: rand::random::<[u8; 32]>().to_vec(),
        }
    }
}

impl<E> fmt::Debug for EngineVerifiers<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineVerifiers").finish_non_exhaustive()
    }
}

#[async_trait]
impl<E: PgEngine> AuthSource for EngineVerifiers<E> {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        // Only SCRAM is offered, which asks for `get_scram_secret`.
        Err(PgWireError::InvalidPassword(
            login.user().unwrap_or_default().to_owned(),
        ))
    }

    async fn get_scram_secret(&self, login: &LoginInfo) -> PgWireResult<(ScramSecret, Option<()>)> {
        let user = login.user().unwrap_or_default();
        let secret = match self.engine.scram_verifier(user).await {
            Some(verifier) => verifier.secret(),
            None => self.mock_secret(user),
        };
        Ok((secret, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_text_round_trips() {
        let verifier = ScramVerifier::from_password("secret");
        let text = verifier.to_string();
        assert!(text.starts_with("SCRAM-SHA-256$4096:"));
        assert_eq!(text.parse::<ScramVerifier>(), Ok(verifier));
        assert!(!text.contains("secret"));
    }

    #[test]
    fn same_password_different_salt_different_verifier() {
        let a = ScramVerifier::from_password("pw");
        let b = ScramVerifier::from_password("pw");
        assert_ne!(a.to_string(), b.to_string());
    }

    /// RFC 7677's example password and salt; the expected keys were computed apart, with
    /// Python's `hashlib.pbkdf2_hmac` and `hmac` (RFC 5802's definitions).
    #[test]
    fn verifier_matches_rfc_7677() {
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let verifier = ScramVerifier::with_salt("pencil", salt, 4096);
        assert_eq!(
            verifier.to_string(),
            "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
        );
    }

    #[test]
    fn passwords_are_not_verifiers() {
        assert!(!ScramVerifier::is_verifier_text("hunter2"));
        assert!(!ScramVerifier::is_verifier_text("SCRAM-SHA-256$x"));
        assert!(!ScramVerifier::is_verifier_text("md5abcdef"));
    }
}
