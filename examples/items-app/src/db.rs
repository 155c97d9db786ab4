//! The source of truth: an `items` table in PostgreSQL.
//!
//! Kept apart from the HTTP layer so the cache's loader and the write path read as what
//! they are: plain queries, with the cache rules applied around them in `routes`.

use serde::{Deserialize, Serialize};
use tokio_postgres::NoTls;

/// One row of `items`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Primary key.
    pub id: i64,
    /// Display name.
    pub name: String,
    /// Price in cents.
    pub price_cents: i64,
}

/// The fields a client sends to create or edit an item.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ItemInput {
    /// Display name.
    pub name: String,
    /// Price in cents.
    pub price_cents: i64,
}

/// The driver's error with the server's message (the driver's own Display says only "db
/// error").
pub fn describe(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => db.to_string(),
        None => err.to_string(),
    }
}

/// A PostgreSQL connection (pipelined; cheap to share behind an `Arc`).
pub struct Db {
    client: tokio_postgres::Client,
}

impl Db {
    /// Connects (`postgres://user@host:port/db` or `host=... user=... dbname=...`) and makes
    /// sure the `items` table exists.
    pub async fn connect(database_url: &str) -> Result<Db, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(database_url, NoTls).await?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::error!(error = %err, "PostgreSQL connection ended");
            }
        });
        // Instances start together: concurrent CREATE TABLE IF NOT EXISTS can fail on
        // PostgreSQL's catalog unique index, so creation is serialised by an advisory lock.
        client
            .batch_execute(
                "BEGIN;
                 SELECT pg_advisory_xact_lock(727465);
                 CREATE TABLE IF NOT EXISTS items (
                     id BIGSERIAL PRIMARY KEY,
                     name TEXT NOT NULL,
                     price_cents BIGINT NOT NULL
                 );
                 COMMIT;",
            )
            .await?;
        Ok(Db { client })
    }

    /// The item with `id`, if any.
    pub async fn get(&self, id: i64) -> Result<Option<Item>, tokio_postgres::Error> {
        let row = self
            .client
            .query_opt(
                "SELECT id, name, price_cents FROM items WHERE id = $1",
                &[&id],
            )
            .await?;
        Ok(row.map(|r| Item {
            id: r.get(0),
            name: r.get(1),
            price_cents: r.get(2),
        }))
    }

    /// Inserts a new item and returns it.
    pub async fn insert(&self, input: &ItemInput) -> Result<Item, tokio_postgres::Error> {
        let row = self
            .client
            .query_one(
                "INSERT INTO items (name, price_cents) VALUES ($1, $2) RETURNING id",
                &[&input.name, &input.price_cents],
            )
            .await?;
        Ok(Item {
            id: row.get(0),
            name: input.name.clone(),
            price_cents: input.price_cents,
        })
    }

    /// Updates item `id`; `None` when there is no such item.
    pub async fn update(
        &self,
        id: i64,
        input: &ItemInput,
    ) -> Result<Option<Item>, tokio_postgres::Error> {
        let updated = self
            .client
            .execute(
                "UPDATE items SET name = $2, price_cents = $3 WHERE id = $1",
                &[&id, &input.name, &input.price_cents],
            )
            .await?;
        Ok((updated == 1).then(|| Item {
            id,
            name: input.name.clone(),
            price_cents: input.price_cents,
        }))
    }
}
