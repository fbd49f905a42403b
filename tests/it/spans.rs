//! The `tracing` feature: one span per unit of work and per webhook delivery, carrying ids and
//! outcomes only.

use std::sync::{Arc, Mutex};

use tenancy::{Error, OrgContext, Role, UserId};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

use crate::common::{As, world};

/// A span's fields, (name, value), as recorded at creation or later.
type SpanFields = Vec<(String, String)>;

/// Every span opened, by id: its name and its fields.
#[derive(Debug, Clone, Default)]
pub(crate) struct Spans(Arc<Mutex<Vec<(String, SpanFields)>>>);

struct Fields(Vec<(String, String)>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
}

impl Subscriber for Spans {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let mut fields = Fields(Vec::new());
        attrs.record(&mut fields);
        let mut spans = self.0.lock().unwrap();
        spans.push((attrs.metadata().name().to_owned(), fields.0));
        Id::from_u64(spans.len() as u64)
    }
    fn record(&self, span: &Id, values: &Record<'_>) {
        let mut fields = Fields(Vec::new());
        values.record(&mut fields);
        self.0.lock().unwrap()[span.into_u64() as usize - 1]
            .1
            .extend(fields.0);
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

impl Spans {
    /// The spans named `name`, each as its fields (name, value), in order of creation.
    pub(crate) fn named(&self, name: &str) -> Vec<SpanFields> {
        let spans = self.0.lock().unwrap();
        spans
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, f)| f.clone())
            .collect()
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
    let spans = Spans::default();
    let _guard = tracing::subscriber::set_default(spans.clone());
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
