//! The user and active organization from a verified Clerk session token.

use serde_json::Value;

use super::event::PayloadError;
use super::roles::RoleMapping;
use crate::{OrgContext, OrgId, Role, UserId};

/// The user and active organization from a Clerk session token's claims (v1 `org_id` /
/// `org_role` / `org_permissions`, or v2 `o: { id, rol, per, fpm }` with `fea`), read
/// **after** your JWT library verified the token.
///
/// ```
/// use pg_tenancy::clerk::SessionClaims;
///
/// let claims = serde_json::json!({
///     "sub": "user_2h8op3Isl1QR7tKu5FGNfaLKEoU", "v": 2,
///     "o": { "id": "org_2g7np7Hrk0SN6kj5EDMLDaKNL0S", "rol": "admin" }
/// });
/// let session = SessionClaims::from_verified_claims(&claims)?;
/// let (user, org) = session.user_and_org().expect("an active organization");
/// // Then: let ctx = pool.authorize(&user, org).await?;  (the role from the database)
/// # Ok::<(), pg_tenancy::clerk::PayloadError>(())
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionClaims {
    /// `sub`.
    pub user_id: UserId,
    /// The active organization's Clerk id, if one is active.
    pub org_external_id: Option<String>,
    /// The active organization's role key as Clerk names it (`org:admin`; v2's `admin` is
    /// given its `org:` prefix back).
    pub org_role: Option<String>,
    /// The active organization's slug (v1 `org_slug`, v2 `o.slg`), if any.
    pub org_slug: Option<String>,
    /// The active organization's permissions as the token states them (`org:<feature>:<name>`,
    /// in the token's order): v1's `org_permissions`, or v2's decoded from `o.per`, `o.fpm`
    /// and the organization features of `fea` ([`from_verified_claims`](Self::from_verified_claims)
    /// says how). Empty without an active organization. A snapshot as old as the token: the
    /// application checks it first, the database decides with its own at each unit's entry.
    pub org_permissions: Vec<String>,
    /// `iat`: when the token was issued (unix seconds), if stated.
    pub issued_at: Option<i64>,
    /// `act.sub`: in an impersonated session, who is acting (the impersonator's user id, as
    /// Clerk's actor token names it), while [`user_id`](Self::user_id) is the user acted as.
    /// For logs and audit trails only, never for authorization: the session acts as, and with
    /// the memberships of, `user_id`.
    pub actor: Option<String>,
}

impl SessionClaims {
    /// Reads the claims of a verified token. Never call this on an unverified token: the
    /// result is trusted.
    ///
    /// Permissions are read as Clerk's own SDK (`@clerk/shared`'s `jwtPayloadParser`) reads
    /// them, and only with an active organization:
    /// - v1: `org_permissions`, an array of strings.
    /// - v2: `per` is a comma-separated list of permission names, `fea` a comma-separated list
    ///   of `scope:feature` (the feature is everything after the first colon), and `fpm` one
    ///   decimal number per **organization** feature of `fea` (scope `o`, `ou` or `uo`, in
    ///   order; user features `u` and unknown scopes take none). Bit `i` of a feature's number
    ///   (value 2<sup>i</sup>) grants `org:<feature>:<per[i]>`; bits at or beyond `per`'s
    ///   length grant nothing, and the number is exact at any length. A feature without a
    ///   number grants nothing. Elements are trimmed; an empty `per`, `fpm` or `fea` is none.
    ///
    /// ```
    /// # use pg_tenancy::clerk::SessionClaims;
    /// let claims = serde_json::json!({
    ///     "sub": "user_1", "v": 2, "fea": "o:impersonation,u:profile,o:invoices",
    ///     "o": { "id": "org_1", "rol": "admin", "per": "read,manage", "fpm": "3,1" }
    /// });
    /// let session = SessionClaims::from_verified_claims(&claims)?;
    /// assert_eq!(
    ///     session.org_permissions,
    ///     ["org:impersonation:read", "org:impersonation:manage", "org:invoices:read"]
    /// );
    /// # Ok::<(), pg_tenancy::clerk::PayloadError>(())
    /// ```
    ///
    /// # Errors
    /// [`PayloadError::Invalid`] when `sub` is missing or not a valid
    /// [`UserId`](crate::UserId), and, with an active organization, when the permission claims
    /// are not Clerk's encoding (naming the claim: `org_permissions` not an array of strings;
    /// `fea`, `o.per` or `o.fpm` not a string; an element of `fea` without a colon or with an
    /// empty feature; an empty name in `per`; an entry of `fpm` that is not a decimal number,
    /// sign and point included). Such a token is refused rather than read as
    /// granting nothing: a signed token Clerk's encoding cannot explain means this reading is
    /// wrong, which must not pass quietly. The other organization claims never fail: absent or
    /// empty, the session has no active organization.
    pub fn from_verified_claims(claims: &Value) -> Result<Self, PayloadError> {
        let text = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
        let sub = text(claims, "sub").ok_or(PayloadError::Invalid {
            field: "sub",
            reason: "absent",
        })?;
        let user_id = UserId::new(sub).map_err(|_| PayloadError::Invalid {
            field: "sub",
            reason: "not a usable user id",
        })?;
        let (org, role, slug) = match claims.get("o") {
            // v2: compact, the role without its `org:` prefix.
            Some(o) => (
                text(o, "id"),
                // An empty `rol` is no role (Clerk's SDK: `if (claims.o?.rol)`), not `org:`.
                text(o, "rol")
                    .filter(|r| !r.is_empty())
                    .map(|r| format!("org:{r}")),
                text(o, "slg"),
            ),
            None => (
                text(claims, "org_id"),
                text(claims, "org_role"),
                text(claims, "org_slug"),
            ),
        };
        let org = org.filter(|o| !o.is_empty());
        // Permissions exist only with an active organization.
        let org_permissions = match (&org, claims.get("o")) {
            (None, _) => Vec::new(),
            (Some(_), Some(o)) => v2_permissions(claims, o)?,
            (Some(_), None) => v1_permissions(claims)?,
        };
        Ok(SessionClaims {
            user_id,
            org_external_id: org,
            org_role: role,
            org_permissions,
            org_slug: slug.filter(|s| !s.is_empty()),
            issued_at: claims.get("iat").and_then(Value::as_i64),
            actor: claims
                .get("act")
                .and_then(|act| text(act, "sub"))
                .filter(|a| !a.is_empty()),
        })
    }

    /// The user and the active organization's `OrgId` (the same mapping the webhook sync
    /// uses), to pass to [`TenantPool::authorize`](crate::TenantPool::authorize) or [`TenantPool::with_member`](crate::TenantPool::with_member).
    pub fn user_and_org(&self) -> Option<(UserId, OrgId)> {
        let org = self.org_external_id.as_deref()?;
        Some((self.user_id.clone(), OrgId::from_external_id(org)))
    }

    /// A context with the role **as the token states it**, mapped by `roles`, without a
    /// database round trip. The token cannot know that the creator is the owner (see
    /// [`RoleMapping`]), so this never yields [`Role::Owner`]; and it is as fresh as the
    /// token. Use [`TenantPool::authorize`](crate::TenantPool::authorize) when the role must come from the database.
    /// The context carries the token's [`org_permissions`](Self::org_permissions).
    pub fn org_context_trusting_token_role(&self, roles: &RoleMapping) -> Option<OrgContext> {
        let (user, org) = self.user_and_org()?;
        let role = roles
            .role_for(self.org_role.as_deref()?, false)
            .min(Role::Admin);
        Some(
            OrgContext::from_verified_session(org, user, role)
                .with_permissions(self.org_permissions.iter().cloned()),
        )
    }
}

/// v1: `org_permissions`, an array of strings (absent: none).
fn v1_permissions(claims: &Value) -> Result<Vec<String>, PayloadError> {
    const INVALID: PayloadError = PayloadError::Invalid {
        field: "org_permissions",
        reason: "not an array of strings",
    };
    match claims.get("org_permissions") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|p| p.as_str().map(str::to_owned).ok_or(INVALID))
            .collect(),
        Some(_) => Err(INVALID),
    }
}

/// v2: `o.per`, `o.fpm` and the organization features of `fea`, decoded as Clerk's current SDK
/// does (see [`SessionClaims::from_verified_claims`]).
fn v2_permissions(claims: &Value, o: &Value) -> Result<Vec<String>, PayloadError> {
    let features = org_features(&list(claims, "fea", "fea")?)?;
    let names = list(o, "per", "o.per")?;
    if names.iter().any(|n| n.is_empty()) {
        return Err(PayloadError::Invalid {
            field: "o.per",
            reason: "an empty permission name",
        });
    }
    let numbers = list(o, "fpm", "o.fpm")?;
    if numbers
        .iter()
        .any(|n| n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(PayloadError::Invalid {
            field: "o.fpm",
            reason: "an entry is not a decimal number",
        });
    }
    let mut granted = Vec::new();
    // One number per organization feature, in order: a feature without one grants nothing, a
    // number without a feature names nothing.
    for (feature, number) in features.iter().zip(&numbers) {
        for (bit, name) in low_bits(number, names.len()).into_iter().zip(&names) {
            if bit {
                granted.push(format!("org:{feature}:{name}"));
            }
        }
    }
    Ok(granted)
}

/// The trimmed elements of the comma-separated string claim `key` of `value`: none when absent,
/// `null` or empty.
fn list<'a>(
    value: &'a Value,
    key: &str,
    field: &'static str,
) -> Result<Vec<&'a str>, PayloadError> {
    match value.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(s.split(',').map(str::trim).collect()),
        Some(_) => Err(PayloadError::Invalid {
            field,
            reason: "not a string",
        }),
    }
}

/// The organization features among `fea`'s elements, in order: those of scope `o`, `ou` or
/// `uo`, named by everything after the first colon (`u` is a user's feature; an unknown scope
/// is nobody's, as in Clerk's SDK).
fn org_features<'a>(elements: &[&'a str]) -> Result<Vec<&'a str>, PayloadError> {
    let mut features = Vec::new();
    for element in elements {
        let (scope, feature) = element.split_once(':').ok_or(PayloadError::Invalid {
            field: "fea",
            reason: "an element has no scope (no colon)",
        })?;
        if feature.is_empty() {
            return Err(PayloadError::Invalid {
                field: "fea",
                reason: "an element has an empty feature name",
            });
        }
        if matches!(scope, "o" | "ou" | "uo") {
            features.push(feature);
        }
    }
    Ok(features)
}

/// The `count` least significant bits of the decimal number `digits` (ASCII digits only),
/// least significant first, by halving the digit string: exact at any length (a 64-bit or
/// floating-point parse would not be), and at most `count` halvings.
fn low_bits(digits: &str, count: usize) -> Vec<bool> {
    let mut number: Vec<u8> = digits
        .bytes()
        .map(|b| b - b'0')
        .skip_while(|&d| d == 0)
        .collect();
    let mut bits = Vec::with_capacity(count.min(number.len() * 4));
    while bits.len() < count && !number.is_empty() {
        let mut remainder = 0;
        let mut half = Vec::with_capacity(number.len());
        for digit in &number {
            let value = remainder * 10 + digit;
            if !(half.is_empty() && value < 2) {
                half.push(value / 2);
            }
            remainder = value % 2;
        }
        bits.push(remainder == 1);
        number = half;
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_claims_v1_and_v2_read_alike() {
        let v1: Value = serde_json::from_str(include_str!(
            "../../tests/data/clerk-events/session_claims.v1.json"
        ))
        .unwrap();
        let v2: Value = serde_json::from_str(include_str!(
            "../../tests/data/clerk-events/session_claims.v2.json"
        ))
        .unwrap();
        let (a, b) = (
            SessionClaims::from_verified_claims(&v1).unwrap(),
            SessionClaims::from_verified_claims(&v2).unwrap(),
        );
        assert_eq!(a, b);
        assert_eq!(a.org_role.as_deref(), Some("org:admin"));
        // v1's `org_permissions` and v2's `fea` + `o.per` + `o.fpm` ("3"): the same two.
        assert_eq!(
            b.org_permissions,
            ["org:impersonation:read", "org:impersonation:manage"]
        );
        let (user, org) = a.user_and_org().unwrap();
        assert_eq!(user.as_str(), "user_2h8op3Isl1QR7tKu5FGNfaLKEoU");
        assert_eq!(
            org,
            OrgId::from_external_id("org_2g7np7Hrk0SN6kj5EDMLDaKNL0S")
        );
        let ctx = a
            .org_context_trusting_token_role(&RoleMapping::default())
            .unwrap();
        assert_eq!(ctx.role(), Role::Admin);
        // Not impersonated: no actor. Impersonated (Clerk's `act`, the same in v1 and v2):
        // the actor beside the user acted as.
        assert_eq!(a.actor, None);
        for mut claims in [v1.clone(), v2.clone()] {
            claims["act"] = serde_json::json!({
                "sub": "user_support", "iss": "https://dashboard.clerk.com", "sid": "sess_1"
            });
            let impersonated = SessionClaims::from_verified_claims(&claims).unwrap();
            assert_eq!(impersonated.actor.as_deref(), Some("user_support"));
            assert_eq!(impersonated.user_id, a.user_id);
            claims["act"] = serde_json::json!({"sub": ""});
            assert_eq!(
                SessionClaims::from_verified_claims(&claims).unwrap().actor,
                None
            );
        }
        // No active organization: no context. No subject: an error.
        let personal = serde_json::json!({"sub": "user_1"});
        assert_eq!(
            SessionClaims::from_verified_claims(&personal)
                .unwrap()
                .user_and_org(),
            None
        );
        assert!(
            SessionClaims::from_verified_claims(&serde_json::json!({"org_id": "org_1"})).is_err()
        );
        // An empty v2 role is none (then the web layer looks the role up).
        let no_role = serde_json::json!({"sub": "user_1", "v": 2, "o": {"id": "org_1", "rol": ""}});
        let no_role = SessionClaims::from_verified_claims(&no_role).unwrap();
        assert_eq!(no_role.org_role, None);
        assert!(no_role.user_and_org().is_some());
        // A custom role in the token maps to least privilege by default.
        let custom = serde_json::json!({"sub": "user_1", "o": {"id": "org_1", "rol": "billing"}});
        let ctx = SessionClaims::from_verified_claims(&custom)
            .unwrap()
            .org_context_trusting_token_role(&RoleMapping::default())
            .unwrap();
        assert_eq!(ctx.role(), Role::Member);
    }

    /// The permissions of a v2 token with the organization active and these `fea`, `o.per`
    /// and `o.fpm` (`None`: the claim absent).
    fn v2(
        fea: Option<&str>,
        per: Option<&str>,
        fpm: Option<&str>,
    ) -> Result<Vec<String>, PayloadError> {
        let mut claims = serde_json::json!({
            "sub": "user_1", "v": 2, "o": { "id": "org_1", "rol": "admin" }
        });
        if let Some(fea) = fea {
            claims["fea"] = fea.into();
        }
        if let Some(per) = per {
            claims["o"]["per"] = per.into();
        }
        if let Some(fpm) = fpm {
            claims["o"]["fpm"] = fpm.into();
        }
        SessionClaims::from_verified_claims(&claims).map(|c| c.org_permissions)
    }

    fn granted(fea: &str, per: &str, fpm: &str) -> Vec<String> {
        v2(Some(fea), Some(per), Some(fpm))
            .unwrap_or_else(|e| panic!("{fea:?} {per:?} {fpm:?}: {e}"))
    }

    /// Clerk's own vectors (`@clerk/shared`'s jwtPayloadParser tests), in the token's order.
    #[test]
    fn v2_permissions_decode_as_clerks_sdk_does() {
        let cases: [(&str, &str, &str, &[&str]); 9] = [
            (
                "o:impersonation",
                "read,manage",
                "3",
                &["org:impersonation:read", "org:impersonation:manage"],
            ),
            (
                "o:impersonation,o:memberships",
                "read,manage",
                "1,3",
                &[
                    "org:impersonation:read",
                    "org:memberships:read",
                    "org:memberships:manage",
                ],
            ),
            // A feature without a number grants nothing.
            (
                "o:impersonation,o:memberships,o:feature3",
                "read,manage",
                "1,3",
                &[
                    "org:impersonation:read",
                    "org:memberships:read",
                    "org:memberships:manage",
                ],
            ),
            // `uo` and `ou` are the organization's too.
            (
                "uo:impersonation,o:memberships,uo:feature3",
                "read,manage",
                "1,3,1",
                &[
                    "org:impersonation:read",
                    "org:memberships:read",
                    "org:memberships:manage",
                    "org:feature3:read",
                ],
            ),
            // A user's feature (`u`) takes no number.
            (
                "ou:memberships,u:impersonation",
                "read,manage",
                "3",
                &["org:memberships:read", "org:memberships:manage"],
            ),
            (
                "o:billing,o:email,o:fraud,o:instance,o:staging_plans",
                "manage,read",
                "3,3,3,3,1",
                &[
                    "org:billing:manage",
                    "org:billing:read",
                    "org:email:manage",
                    "org:email:read",
                    "org:fraud:manage",
                    "org:fraud:read",
                    "org:instance:manage",
                    "org:instance:read",
                    "org:staging_plans:manage",
                ],
            ),
            // 21 = 0b10101: read, update, revoke.
            (
                "o:repositories,o:projects",
                "read,create,update,delete,revoke",
                "7,21",
                &[
                    "org:repositories:read",
                    "org:repositories:create",
                    "org:repositories:update",
                    "org:projects:read",
                    "org:projects:update",
                    "org:projects:revoke",
                ],
            ),
            (
                "o:repositories,o:projects,o:webhooks,o:impersonation",
                "read,manage",
                "1,2,3",
                &[
                    "org:repositories:read",
                    "org:projects:manage",
                    "org:webhooks:read",
                    "org:webhooks:manage",
                ],
            ),
            (
                "o:repositories,uo:projects,u:goldprofileborder",
                "read,create,update,delete,revoke",
                "7,21",
                &[
                    "org:repositories:read",
                    "org:repositories:create",
                    "org:repositories:update",
                    "org:projects:read",
                    "org:projects:update",
                    "org:projects:revoke",
                ],
            ),
        ];
        for (fea, per, fpm, expected) in cases {
            assert_eq!(granted(fea, per, fpm), expected, "{fea:?} {per:?} {fpm:?}");
        }
        // Without `per` or `fpm` (or empty), none; also without `fea`.
        for (fea, per, fpm) in [
            (Some("o:x"), None, Some("3")),
            (Some("o:x"), Some("read"), None),
            (Some("o:x"), Some(""), Some("3")),
            (Some("o:x"), Some("read"), Some("")),
            (None, Some("read"), Some("3")),
            (Some(""), Some("read"), Some("3")),
            (Some("u:x"), Some("read"), Some("3")),
        ] {
            assert_eq!(
                v2(fea, per, fpm).unwrap(),
                Vec::<String>::new(),
                "{fea:?} {per:?} {fpm:?}"
            );
        }
        // Elements are trimmed; leading zeros and zero are numbers.
        assert_eq!(
            granted(" o:x , u:y ", " read , manage ", " 003 "),
            ["org:x:read", "org:x:manage"]
        );
        assert_eq!(granted("o:x", "read", "0"), Vec::<String>::new());
    }

    /// The mistakes of earlier versions of Clerk's SDK, each with a vector it got wrong.
    #[test]
    fn v2_permissions_avoid_the_sdks_earlier_mistakes() {
        // (a) Most significant bit first ("1" padded to "01" and read left to right granted
        // `manage`): bit 0 is the least significant.
        assert_eq!(granted("o:x", "read,manage", "1"), ["org:x:read"]);
        assert_eq!(granted("o:x", "read,manage", "2"), ["org:x:manage"]);
        // (b) Precision: parseInt loses bit 0 of 2^53 + 1; 64 and 128 bits are no limit.
        let names = |n: usize| {
            (0..n)
                .map(|i| format!("p{i}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        for (number, width, bits) in [
            ("9007199254740993", 54, [0, 53]),
            ("27670116110564327424", 65, [63, 64]),
            ("1361129467683753853853498429727072845825", 131, [0, 130]),
        ] {
            let expected: Vec<String> = bits.iter().map(|b| format!("org:x:p{b}")).collect();
            assert_eq!(granted("o:x", &names(width), number), expected, "{number}");
        }
        assert_eq!(
            granted("o:x", &names(64), "9223372036854775808"),
            ["org:x:p63"]
        );
        // (c) Scope tested on the whole element: `u:tools` (an `o` in its name) is a user's
        // feature and takes no number; an unknown scope neither.
        assert_eq!(
            granted("u:tools,o:invoices", "read", "1"),
            ["org:invoices:read"]
        );
        assert_eq!(
            granted("u:orders,x:foo,o:bar", "read", "1"),
            ["org:bar:read"]
        );
        // (d) The feature is everything after the first colon, not the text up to a second.
        assert_eq!(
            granted("o:billing:v2", "read", "1"),
            ["org:billing:v2:read"]
        );
        // (e) Bits at or beyond `per` grant nothing (no `org:x:undefined`).
        assert_eq!(granted("o:x", "read", "3"), ["org:x:read"]);
        assert_eq!(granted("o:x", "read", "255"), ["org:x:read"]);
        assert_eq!(
            granted("o:x", "read", "1361129467683753853853498429727072845825"),
            ["org:x:read"]
        );
        assert_eq!(granted("o:x", "read", "2"), Vec::<String>::new());
    }

    /// Permission claims that are not Clerk's encoding refuse the token, naming the claim;
    /// without an active organization they are not read.
    #[test]
    fn malformed_permission_claims_refuse_the_token() {
        let field_of = |r: Result<Vec<String>, PayloadError>| match r {
            Err(PayloadError::Invalid { field, .. }) => field,
            other => panic!("expected a refusal, got {other:?}"),
        };
        for fea in ["o:x,invoices", "o:x,", "o:", "invoices"] {
            assert_eq!(
                field_of(v2(Some(fea), Some("read"), Some("1"))),
                "fea",
                "{fea:?}"
            );
        }
        for fpm in [
            "abc", "-1", "+3", "1.0", "0x3", "1e3", "3,", "1, ,3", "3,x", "٣",
        ] {
            assert_eq!(
                field_of(v2(Some("o:x"), Some("read"), Some(fpm))),
                "o.fpm",
                "{fpm:?}"
            );
        }
        assert_eq!(
            field_of(v2(Some("o:x"), Some("read,,manage"), Some("1"))),
            "o.per"
        );
        // Wrong JSON types.
        let typed = |key: &str, value: Value| {
            let mut claims = serde_json::json!({
                "sub": "user_1", "v": 2, "fea": "o:x",
                "o": { "id": "org_1", "rol": "admin", "per": "read", "fpm": "1" }
            });
            if key == "fea" {
                claims["fea"] = value;
            } else {
                claims["o"][key] = value;
            }
            SessionClaims::from_verified_claims(&claims).map(|c| c.org_permissions)
        };
        assert_eq!(field_of(typed("fea", serde_json::json!(["o:x"]))), "fea");
        assert_eq!(field_of(typed("per", serde_json::json!(["read"]))), "o.per");
        assert_eq!(field_of(typed("fpm", serde_json::json!(1))), "o.fpm");
        assert_eq!(typed("fpm", Value::Null).unwrap(), Vec::<String>::new());
        assert_eq!(
            typed("fpm", serde_json::json!("1")).unwrap(),
            ["org:x:read"]
        );
        let v1 = |permissions: Value| {
            SessionClaims::from_verified_claims(&serde_json::json!({
                "sub": "user_1", "org_id": "org_1", "org_role": "org:admin",
                "org_permissions": permissions
            }))
            .map(|c| c.org_permissions)
        };
        assert_eq!(v1(serde_json::json!(["org:a:b"])).unwrap(), ["org:a:b"]);
        assert_eq!(v1(Value::Null).unwrap(), Vec::<String>::new());
        for bad in [
            serde_json::json!("org:a:b"),
            serde_json::json!(["org:a:b", 1]),
            serde_json::json!({}),
        ] {
            assert_eq!(field_of(v1(bad)), "org_permissions");
        }
        // No active organization: no permissions, and nothing to refuse.
        let personal = SessionClaims::from_verified_claims(&serde_json::json!({
            "sub": "user_1", "org_permissions": 5, "fea": "o:x", "o": { "per": 5 }
        }))
        .unwrap();
        assert_eq!(personal.org_permissions, Vec::<String>::new());
        let v1_personal = SessionClaims::from_verified_claims(&serde_json::json!({
            "sub": "user_1", "org_permissions": ["org:a:b"]
        }))
        .unwrap();
        assert_eq!(v1_personal.org_permissions, Vec::<String>::new());
    }
}
