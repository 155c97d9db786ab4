//! Umbraco's approach, for comparison: a `cache_version` row in PostgreSQL read per check.
//!
//! The benchmark creates a scratch database of its own on the machine's PostgreSQL, fills the
//! table with the benchmark's key set, and drops the database afterwards (also when the run
//! fails, as far as a connection allows).

use anyhow::Context;
use tokio_postgres::{Client, NoTls, Statement};

/// A scratch database with a filled `cache_version` table and connections to it.
pub struct ScratchDb {
    admin: Client,
    name: String,
    connections: Vec<(Client, Statement)>,
}

/// The statement under test, exactly as Umbraco would issue it.
pub const SELECT_VERSION: &str = "SELECT version FROM cache_version WHERE id = $1";

impl ScratchDb {
    /// Creates `coherence_bench_<pid>` on the server `admin_conninfo` points at (a libpq
    /// key=value string), fills it with `keys` and opens `pool` connections with the statement
    /// prepared.
    pub async fn create(
        admin_conninfo: &str,
        keys: &[String],
        pool: usize,
    ) -> anyhow::Result<ScratchDb> {
        let admin = connect(admin_conninfo)
            .await
            .context("connect to PostgreSQL")?;
        drop_abandoned(&admin).await?;
        let name = format!("coherence_bench_{}", std::process::id());
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .context("drop a leftover scratch database")?;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .context("create the scratch database")?;
        let mut db = ScratchDb {
            admin,
            name,
            connections: Vec::new(),
        };
        let conninfo = format!("{admin_conninfo} dbname={}", db.name);
        let setup = connect(&conninfo).await?;
        setup
            .batch_execute(
                "CREATE TABLE cache_version (id text PRIMARY KEY, version bigint NOT NULL)",
            )
            .await?;
        let versions: Vec<i64> = (1..=keys.len() as i64).collect();
        setup
            .execute(
                "INSERT INTO cache_version SELECT * FROM unnest($1::text[], $2::int8[])",
                &[&keys, &versions],
            )
            .await?;
        setup.batch_execute("ANALYZE cache_version").await?;
        for _ in 0..pool.max(1) {
            let client = connect(&conninfo).await?;
            let statement = client.prepare(SELECT_VERSION).await?;
            db.connections.push((client, statement));
        }
        Ok(db)
    }

    /// Connection `i` (round robin) and its prepared statement.
    pub fn connection(&self, i: usize) -> (&Client, &Statement) {
        let (client, statement) = &self.connections[i % self.connections.len()];
        (client, statement)
    }

    pub fn pool_size(&self) -> usize {
        self.connections.len()
    }

    /// Closes the connections and drops the scratch database.
    pub async fn drop_database(mut self) -> anyhow::Result<()> {
        self.connections.clear();
        self.admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
            .context("drop the scratch database")?;
        Ok(())
    }
}

/// Drops scratch databases left by benchmark runs that were killed before they could drop
/// their own (named after a process id that no longer runs).
async fn drop_abandoned(admin: &Client) -> anyhow::Result<()> {
    let rows = admin
        .query(
            "SELECT datname FROM pg_database WHERE datname LIKE 'coherence\\_bench\\_%'",
            &[],
        )
        .await?;
    for row in rows {
        let name: String = row.try_get(0)?;
        let Some(pid) = name
            .strip_prefix("coherence_bench_")
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await?;
        }
    }
    Ok(())
}

async fn connect(conninfo: &str) -> anyhow::Result<Client> {
    let (client, connection) = tokio_postgres::connect(conninfo, NoTls).await?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            eprintln!("PostgreSQL connection ended: {err}");
        }
    });
    Ok(client)
}
