//! Clerk's permission claims in a session token, decoded as Clerk's own SDK decodes them
//! (`@clerk/shared`'s `jwtPayloadParser`): v1's `org_permissions`, v2's `o.per`, `o.fpm` and
//! `fea`. [`SessionClaims::from_verified_claims`](super::SessionClaims::from_verified_claims)
//! documents the encoding and the refusals.

use serde_json::Value;

use super::event::PayloadError;

/// v1: `org_permissions`, an array of strings (absent: none).
pub(super) fn v1_permissions(claims: &Value) -> Result<Vec<String>, PayloadError> {
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
/// does (see [`SessionClaims::from_verified_claims`](super::SessionClaims::from_verified_claims)).
pub(super) fn v2_permissions(claims: &Value, o: &Value) -> Result<Vec<String>, PayloadError> {
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
    use crate::clerk::SessionClaims;

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
