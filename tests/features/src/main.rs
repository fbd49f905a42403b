//! pg-tenancy's core alone, under a global `tracing` subscriber that records every callsite,
//! span and event: runs units of work (`DATABASE_URL`: an application role) and prints what
//! came from pg-tenancy. Built without pg-tenancy's `tracing` feature nothing may come from it
//! (the feature's promise: "nothing at all when off"); built with it, every unit has its
//! `tenancy.unit` span.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use pg_tenancy::{Error, OrgContext, OrgId, Role, TenantPool, UserId};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber, span};

/// What the subscriber saw: pg-tenancy's callsites, spans and events by name, and a count of
/// everyone else's.
struct Seen {
    callsites: Vec<String>,
    spans: Vec<String>,
    events: Vec<String>,
    others: u64,
}

static SEEN: Mutex<Seen> = Mutex::new(Seen {
    callsites: Vec::new(),
    spans: Vec::new(),
    events: Vec::new(),
    others: 0,
});

fn from_tenancy(meta: &Metadata<'_>) -> bool {
    meta.target().starts_with("pg_tenancy") || meta.name().starts_with("tenancy.")
}

/// Interested in everything, so that nothing is filtered out before it is seen.
struct Recorder {
    next: AtomicU64,
}

impl Subscriber for Recorder {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if from_tenancy(meta) {
            let mut seen = SEEN.lock().unwrap();
            seen.callsites
                .push(format!("{}:{}", meta.target(), meta.name()));
        }
        Interest::always()
    }
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attrs: &span::Attributes<'_>) -> span::Id {
        let mut seen = SEEN.lock().unwrap();
        if from_tenancy(attrs.metadata()) {
            seen.spans.push(attrs.metadata().name().to_owned());
        } else {
            seen.others += 1;
        }
        span::Id::from_u64(self.next.fetch_add(1, Ordering::Relaxed))
    }
    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut seen = SEEN.lock().unwrap();
        if from_tenancy(event.metadata()) {
            seen.events.push(event.metadata().name().to_owned());
        } else {
            seen.others += 1;
        }
    }
    fn enter(&self, _: &span::Id) {}
    fn exit(&self, _: &span::Id) {}
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing::subscriber::set_global_default(Recorder {
        next: AtomicU64::new(1),
    })?;
    let url = std::env::var("DATABASE_URL")?;
    let pool = TenantPool::connect(&url).await?;
    let user = UserId::new("user_features")?;
    let org = OrgId::from_external_id("org_features");
    let ctx = pool
        .create_organization(org, "Features", None, &user)
        .await?;
    // Two units that commit, and one the database refuses at its entry (not a member).
    pool.with_rls(&ctx, async |_tx| Ok::<_, Error>(())).await?;
    pool.with_rls_read(&ctx, async |_tx| Ok::<_, Error>(()))
        .await?;
    let stranger = OrgContext::from_verified_session(
        OrgId::from_external_id("org_elsewhere"),
        user,
        Role::Member,
    );
    let refused = pool
        .with_rls(&stranger, async |_tx| Ok::<_, Error>(()))
        .await;
    if !matches!(refused, Err(Error::NotAMember)) {
        return Err(format!("the stranger's unit was not refused: {refused:?}").into());
    }

    let seen = SEEN.lock().unwrap();
    println!("built with tracing: {}", cfg!(feature = "tracing"));
    println!("units: 3 run (2 committed, 1 refused)");
    println!("pg_tenancy callsites: {:?}", seen.callsites);
    println!("pg_tenancy spans: {:?}", seen.spans);
    println!("pg_tenancy events: {:?}", seen.events);
    println!("other spans and events: {}", seen.others);
    Ok(())
}
