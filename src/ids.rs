//! Identifier newtypes: [`OrgId`] and [`UserId`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::Error;

/// An organization's id: the `organizations.id` uuid.
///
/// An `OrgId` is only an identifier. It grants nothing: access needs an
/// [`OrgContext`](crate::OrgContext).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrgId(Uuid);

impl OrgId {
    /// The UUIDv5 namespace under which identity-provider organization ids are mapped.
    /// Fixed forever: changing it would orphan every synced organization.
    pub const EXTERNAL_NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_4c2e_9a57_4d0e_8a3c_7e5d_2f90_1b64);

    /// Wraps a uuid.
    pub const fn from_uuid(id: Uuid) -> Self {
        OrgId(id)
    }

    /// Maps an identity provider's organization id (Clerk: `org_2g7np7Hrk0SN6kj5EDMLDaKNL0S`)
    /// to an `OrgId`, deterministically: UUIDv5 of the id under [`Self::EXTERNAL_NAMESPACE`].
    ///
    /// Webhook sync and request authorization both use this, so they always agree, and
    /// neither needs a database lookup or an RLS bypass to find the organization.
    pub fn from_external_id(external_id: &str) -> Self {
        OrgId(Uuid::new_v5(
            &Self::EXTERNAL_NAMESPACE,
            external_id.as_bytes(),
        ))
    }

    /// The inner uuid.
    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl fmt::Display for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for OrgId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(OrgId)
    }
}

impl From<Uuid> for OrgId {
    fn from(id: Uuid) -> Self {
        OrgId(id)
    }
}

impl From<OrgId> for Uuid {
    fn from(id: OrgId) -> Self {
        id.0
    }
}

/// A user's id as the identity provider issues it (Clerk: `user_...`; Auth0: `auth0|...`).
///
/// Validated on construction: 1 to 255 bytes of printable ASCII without `'` or `\`. Those
/// rules let the id travel inside the `BEGIN` round trip as a plain SQL literal that no server
/// setting (`standard_conforming_strings`) can reinterpret.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    /// Longest accepted id, in bytes.
    pub const MAX_LEN: usize = 255;

    /// Validates and wraps a user id.
    ///
    /// # Errors
    /// [`Error::InvalidUserId`] for an empty id, one longer than [`UserId::MAX_LEN`] bytes, or
    /// one with characters outside printable ASCII, a quote or a backslash.
    pub fn new(id: impl Into<String>) -> Result<Self, Error> {
        let id = id.into();
        let ok = !id.is_empty()
            && id.len() <= Self::MAX_LEN
            && id
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b'\'' && b != b'\\');
        if ok {
            Ok(UserId(id))
        } else {
            Err(Error::InvalidUserId)
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("UserId").field(&self.0).finish()
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for UserId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UserId::new(s)
    }
}

impl<'de> Deserialize<'de> for UserId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        UserId::new(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_ids_map_deterministically_and_distinctly() {
        let a = OrgId::from_external_id("org_2g7np7Hrk0SN6kj5EDMLDaKNL0S");
        assert_eq!(
            a,
            OrgId::from_external_id("org_2g7np7Hrk0SN6kj5EDMLDaKNL0S")
        );
        assert_ne!(
            a,
            OrgId::from_external_id("org_2g7np7Hrk0SN6kj5EDMLDaKNL0T")
        );
        assert_eq!(a.as_uuid().get_version_num(), 5);
        // Pinned to literals computed independently (Python's `uuid.uuid5` under the same
        // namespace): a changed namespace or mapping would orphan every synced organization.
        assert_eq!(a.to_string(), "cf3f4061-5599-5688-a09f-b3fca4d7ddb3");
        assert_eq!(
            OrgId::from_external_id("org_x").to_string(),
            "c7277f39-8ba9-5f8a-a500-617521653372"
        );
    }

    #[test]
    fn user_ids_are_validated() {
        for good in ["user_2abc", "auth0|123", "a@b.example", "x"] {
            assert_eq!(UserId::new(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            "a b",
            "o'hara",
            "back\\slash",
            "tab\t",
            "é",
            &"x".repeat(256),
        ] {
            assert!(
                matches!(UserId::new(bad), Err(Error::InvalidUserId)),
                "{bad:?}"
            );
        }
        assert!(serde_json::from_str::<UserId>("\"o'hara\"").is_err());
    }
}
