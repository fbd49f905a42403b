//! Hostile identifiers and values: malformed, empty and very long, SQL metacharacters, NUL,
//! Unicode look-alikes. Each gets a typed error, and nothing is written.

use std::str::FromStr;

use pg_tenancy::{Error, ErrorKind, OrgId, Role, UserId};

use crate::common::{As, world};

const HOSTILE: &[&str] = &[
    "",
    " ",
    "user 1",
    "user'1",
    "user\\1",
    "x'; DROP TABLE projects; --",
    "user\u{0}1",
    "user\n1",
    "\u{202e}resu",       // right-to-left override
    "user_\u{0430}lice",  // Cyrillic 'а' in place of Latin 'a'
    "ｕｓｅｒ",           // full-width letters
    "user_alice\u{200b}", // zero-width space
];

#[test]
fn hostile_user_ids_and_roles_are_refused_with_a_typed_error() {
    let long = "u".repeat(UserId::MAX_LEN + 1);
    for id in HOSTILE.iter().copied().chain([long.as_str()]) {
        let e = UserId::new(id).unwrap_err();
        assert!(matches!(e, Error::InvalidUserId), "{id:?}");
        assert_eq!(e.kind(), ErrorKind::BadRequest);
    }
    // The longest accepted, and a plain one (positive controls).
    assert!(UserId::new("u".repeat(UserId::MAX_LEN)).is_ok());
    assert!(UserId::new("user_2h8op3Isl1QR7tKu5FGNfaLKEoU").is_ok());
    for role in [
        "",
        "Owner",
        "owner ",
        "owner\u{0}",
        "ówner",
        "admin'--",
        "superuser",
    ] {
        let e = Role::from_str(role).unwrap_err();
        assert!(matches!(e, Error::InvalidRole(_)), "{role:?}");
        assert_eq!(e.kind(), ErrorKind::BadRequest);
    }
    for org in [
        "",
        "not-a-uuid",
        "00000000-0000-0000-0000-00000000000g",
        "'; --",
    ] {
        assert!(OrgId::from_str(org).is_err(), "{org:?}");
    }
    // Serde enforces the same rules.
    assert!(serde_json::from_str::<UserId>("\"user'1\"").is_err());
    // Invalid UTF-8 never becomes a UserId (it is not a `str`); over HTTP it is a 400 or a 401
    // (tests/web: `malformed_ids_and_bodies_are_400`).
}

#[tokio::test]
async fn hostile_names_and_slugs_are_stored_verbatim_or_refused_and_nothing_half_written() {
    let w = world(As::App).await;
    let owner = UserId::new("user_founder").unwrap();
    // SQL metacharacters and look-alikes are data: stored and read back verbatim.
    let odd = "Robert'); DROP TABLE organizations; -- \u{0430}\u{202e}";
    let org = OrgId::from_external_id("org_odd");
    let ctx = w
        .pool
        .create_organization(org, odd, Some("x'--"), &owner)
        .await
        .unwrap();
    let memberships = w.pool.memberships(&owner).await.unwrap();
    assert_eq!(memberships[0].name, odd);
    assert_eq!(memberships[0].slug.as_deref(), Some("x'--"));
    // A NUL byte cannot be stored in text: a 400, and the organization does not exist.
    let nul = OrgId::from_external_id("org_nul");
    let e = w
        .pool
        .create_organization(nul, "a\u{0}b", None, &owner)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadRequest, "{e}");
    assert!(matches!(
        w.pool.authorize(&owner, nul).await,
        Err(Error::NotAMember)
    ));
    // The id is still unused: the same organization with a proper name can be created.
    w.pool
        .create_organization(nul, "ab", None, &owner)
        .await
        .unwrap();
    // The same for a tenant row: NUL refused, nothing written; a 1 MiB name is data.
    let e = w
        .pool
        .with_rls(&ctx, async |tx| {
            sqlx::query("INSERT INTO projects (organization_id, name) VALUES ($1, $2)")
                .bind(org)
                .bind("bad\u{0}name")
                .execute(tx)
                .await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BadRequest, "{e}");
    let big = "x".repeat(1 << 20);
    let stored: i64 = w
        .pool
        .with_rls(&ctx, async |tx| {
            sqlx::query("INSERT INTO projects (organization_id, name) VALUES ($1, $2)")
                .bind(org)
                .bind(&big)
                .execute(&mut *tx)
                .await?;
            Ok::<_, Error>(
                sqlx::query_scalar("SELECT count(*) FROM projects")
                    .fetch_one(&mut *tx)
                    .await?,
            )
        })
        .await
        .unwrap();
    assert_eq!(
        stored, 1,
        "only the 1 MiB row; the NUL one was never written"
    );
}
