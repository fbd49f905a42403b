//! The `tracing` feature: one span per unit of work and per webhook delivery, carrying ids and
//! outcomes only.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use pg_tenancy::{Error, OrgContext, Role, UserId};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

use crate::common::{As, world};

/// A span's fields, (name, value), as recorded at creation or later.
type SpanFields = Vec<(String, String)>;

thread_local! {
    /// The spans opened on this thread, by id: name and fields. Every test runs on a
    /// current-thread runtime, so a test's units and deliveries all land here.
    static SPANS: std::cell::RefCell<std::collections::HashMap<u64, (String, SpanFields)>> =
        std::cell::RefCell::default();
}

/// The subscriber, installed once as the global default for the whole test binary: a scoped
/// (`set_default`) subscriber races with other threads over tracing's per-callsite interest
/// cache, and then misses spans now and then.
#[derive(Debug)]
struct Recorder {
    next: AtomicU64,
}

struct Fields(SpanFields);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
}

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let mut fields = Fields(Vec::new());
        attrs.record(&mut fields);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        SPANS.with(|s| {
            s.borrow_mut()
                .insert(id, (attrs.metadata().name().to_owned(), fields.0))
        });
        Id::from_u64(id)
    }
    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut fields = Fields(Vec::new());
        values.record(&mut fields);
        SPANS.with(|s| {
            if let Some((_, f)) = s.borrow_mut().get_mut(&span.into_u64()) {
                f.extend(fields.0);
            }
        });
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// The spans this thread opens from now on.
#[derive(Debug)]
pub(crate) struct Spans;

impl Spans {
    /// Installs the recorder (once per test binary) and forgets this thread's earlier spans.
    pub(crate) fn start() -> Self {
        static INSTALLED: OnceLock<()> = OnceLock::new();
        INSTALLED.get_or_init(|| {
            tracing::subscriber::set_global_default(Recorder {
                next: AtomicU64::new(1),
            })
            .expect("no other global subscriber in this test binary");
        });
        SPANS.with(|s| s.borrow_mut().clear());
        Spans
    }

    /// The spans named `name`, each as its fields, in order of creation.
    pub(crate) fn named(&self, name: &str) -> Vec<SpanFields> {
        SPANS.with(|s| {
            let spans = s.borrow();
            let mut ids: Vec<_> = spans.keys().copied().collect();
            ids.sort_unstable();
            ids.iter()
                .filter(|id| spans[id].0 == name)
                .map(|id| spans[id].1.clone())
                .collect()
        })
    }
}

/// One field's value.
pub(crate) fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn every_closure_unit_has_a_span_with_its_kind_organization_and_outcome() {
    let w = world(As::App).await;
    let spans = Spans::start();
    let count = async |tx: &mut sqlx::PgConnection| {
        Ok::<i64, Error>(
            sqlx::query_scalar("SELECT count(*) FROM projects")
                .fetch_one(tx)
                .await?,
        )
    };
    assert_eq!(
        w.pool
            .with_rls(&w.a.ctx(Role::Member), count)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        w.pool
            .with_rls_read(&w.a.ctx(Role::Member), count)
            .await
            .unwrap(),
        1
    );
    let stranger = UserId::new("user_stranger").unwrap();
    let forged = OrgContext::from_verified_session(w.b.id, stranger, Role::Member);
    assert!(w.pool.with_rls(&forged, count).await.is_err());

    let units = spans.named("tenancy.unit");
    let summary: Vec<_> = units
        .iter()
        .map(|f| (field(f, "kind"), field(f, "org"), field(f, "outcome")))
        .collect();
    let (a, b) = (w.a.id.to_string(), w.b.id.to_string());
    assert_eq!(
        summary,
        vec![
            (Some("write"), Some(a.as_str()), Some("ok")),
            (Some("read"), Some(a.as_str()), Some("ok")),
            (Some("write"), Some(b.as_str()), Some("err")),
        ]
    );
    for f in &units {
        let elapsed: u64 = field(f, "elapsed_us").unwrap().parse().unwrap();
        assert!(elapsed > 0);
        // Ids only: no user id, no query text.
        assert!(
            !f.iter()
                .any(|(_, v)| v.contains("user_") || v.contains("SELECT")),
            "{f:?}"
        );
    }
}
