//! A development token issuer: a local RSA key that mints Clerk-shaped session tokens, and the
//! verifier that trusts it.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::clerk::SessionTokenVerifier;

/// A local RSA key (2048 bits, made on creation) that signs session tokens shaped like
/// Clerk's (v2 claims: `sub`, `sid`, `iss`, `azp`, `iat`, `nbf`, `exp`, `o: {id, rol, slg}`),
/// for tests and development servers: no Clerk account, no network.
///
/// [`verifier`](Self::verifier) hands out a [`SessionTokenVerifier`] that trusts this key
/// (static keys, nothing to serve); an app that wants to verify through a JWKS URL, as it
/// does Clerk's, serves [`jwks`](Self::jwks) there. The key is a throwaway: never trust it in
/// production. Its private half is kept out of `Debug`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use pg_tenancy::testing::DevTokenIssuer;
///
/// let issuer = DevTokenIssuer::generate("https://clerk.example.test")?;
/// let verifier = issuer.verifier();
/// let token = issuer.token("user_alice", Some(("org_acme", "admin")));
/// let claims = verifier.verify(&token).await?;
/// assert_eq!(claims.user_id.as_str(), "user_alice");
/// assert_eq!(claims.org_external_id.as_deref(), Some("org_acme"));
/// # Ok(()) }
/// ```
pub struct DevTokenIssuer {
    kid: String,
    key: EncodingKey,
    private_pem: String,
    public_pem: String,
    jwks: Value,
    issuer: String,
}

impl fmt::Debug for DevTokenIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevTokenIssuer")
            .field("issuer", &self.issuer)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// A development signing key could not be made.
#[derive(Debug, thiserror::Error)]
#[error("could not make a development signing key")]
pub struct DevKeyError(#[source] Box<dyn std::error::Error + Send + Sync>);

impl DevKeyError {
    fn new(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        DevKeyError(Box::new(e))
    }
}

impl DevTokenIssuer {
    /// The lifetime of [`token`](Self::token)'s tokens, in seconds (Clerk's: 60).
    pub const LIFETIME_SECS: i64 = 60;

    /// A fresh key, for tokens issued by `issuer` (their `iss`) and, by default, for `issuer`
    /// as the authorized party (their `azp`).
    ///
    /// # Errors
    /// When the operating system's random source or the key's encoding fails.
    pub fn generate(issuer: &str) -> Result<DevTokenIssuer, DevKeyError> {
        let private =
            rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).map_err(DevKeyError::new)?;
        let private_pem = private
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(DevKeyError::new)?
            .to_string();
        let key = EncodingKey::from_rsa_pem(private_pem.as_bytes()).map_err(DevKeyError::new)?;
        let public = private.to_public_key();
        let public_pem = public
            .to_public_key_pem(LineEnding::LF)
            .map_err(DevKeyError::new)?;
        let kid = format!("ins_dev_{}", Uuid::new_v4().simple());
        let jwks = json!({ "keys": [{
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid,
            "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
        }]});
        Ok(DevTokenIssuer {
            kid,
            key,
            private_pem,
            public_pem,
            jwks,
            issuer: issuer.to_owned(),
        })
    }

    /// The issuer (`iss`), and the authorized party (`azp`) of its tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The key id (`kid`) its tokens name.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWKS document with the public key, for an app that serves it at
    /// `/.well-known/jwks.json`.
    pub fn jwks(&self) -> &Value {
        &self.jwks
    }

    /// The public key in SPKI PEM (what Clerk calls the "JWKS Public Key").
    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }

    /// The private key in PKCS#8 PEM, for tests that sign with it themselves. A throwaway
    /// key; still, never print it.
    pub fn private_pem(&self) -> &str {
        &self.private_pem
    }

    /// A verifier that trusts this key (static JWKS, no network), for tokens issued by
    /// [`issuer`](Self::issuer) with it as the authorized party. Chain its `with_*` methods
    /// for other settings.
    pub fn verifier(&self) -> SessionTokenVerifier {
        SessionTokenVerifier::from_jwks_json(&self.jwks.to_string(), &self.issuer)
            .expect("the issuer's own JWKS is well-formed")
            .with_authorized_parties([self.issuer.clone()])
    }

    /// The claims of a Clerk v2 session token for `user_id`, issued now and valid for
    /// `lifetime_secs` (negative: already expired), with `org` = (Clerk organization id, role
    /// key without `org:`, slug) active. Change any field before [`sign`](Self::sign)ing it.
    pub fn claims(
        &self,
        user_id: &str,
        org: Option<(&str, &str, Option<&str>)>,
        lifetime_secs: i64,
    ) -> Value {
        let now = crate::util::unix_now();
        let mut claims = json!({
            "azp": self.issuer, "iss": self.issuer, "sub": user_id,
            "sid": format!("sess_{}", Uuid::new_v4().simple()),
            "iat": now, "nbf": now - 10, "exp": now + lifetime_secs,
            "jti": Uuid::new_v4().simple().to_string(), "v": 2, "sts": "active",
        });
        if let Some((id, rol, slg)) = org {
            claims["o"] = json!({ "id": id, "rol": rol, "slg": slg });
        }
        claims
    }

    /// Signs `claims` (RS256, with its `kid` in the header).
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key)
            .expect("RS256 signing with a key made here")
    }

    /// A signed session token for `user_id`, valid for [`LIFETIME_SECS`](Self::LIFETIME_SECS),
    /// with `org` = (Clerk organization id, role key without `org:`) active.
    pub fn token(&self, user_id: &str, org: Option<(&str, &str)>) -> String {
        let org = org.map(|(id, role)| (id, role, None));
        self.sign(&self.claims(user_id, org, Self::LIFETIME_SECS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clerk::TokenError;

    #[tokio::test]
    async fn a_minted_token_verifies_and_an_altered_one_does_not() {
        let issuer = DevTokenIssuer::generate("https://clerk.example.test").unwrap();
        let verifier = issuer.verifier();
        let claims = issuer.claims("user_alice", Some(("org_acme", "admin", Some("acme"))), 60);
        let token = issuer.sign(&claims);
        let verified = verifier
            .verify(&token)
            .await
            .expect("a minted token verifies");
        assert_eq!(verified.user_id.as_str(), "user_alice");
        assert_eq!(verified.org_external_id.as_deref(), Some("org_acme"));
        assert_eq!(verified.org_role.as_deref(), Some("org:admin"));
        assert_eq!(verified.org_slug.as_deref(), Some("acme"));

        // The payload swapped for one naming bob, the signature kept: refused.
        let parts: Vec<&str> = token.split('.').collect();
        let mut altered = claims.clone();
        altered["sub"] = json!("user_bob");
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(altered.to_string()),
            parts[2]
        );
        assert!(matches!(
            verifier.verify(&forged).await,
            Err(TokenError::BadSignature)
        ));
        // Another issuer's key: refused by this one's verifier, accepted by its own.
        let other = DevTokenIssuer::generate("https://clerk.example.test").unwrap();
        let foreign = other.token("user_alice", None);
        assert!(verifier.verify(&foreign).await.is_err());
        assert!(other.verifier().verify(&foreign).await.is_ok());
        // The private key stays out of Debug.
        assert!(!format!("{issuer:?}").contains("PRIVATE"));
    }
}
