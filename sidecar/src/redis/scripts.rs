//! The sidecar's Lua scripts, and the two ways it runs them (`redis_scripts`).
//!
//! - **eval** (the default): `EVALSHA`, loading a script with `SCRIPT LOAD` when Redis lacks it
//!   (after a restart). The sidecar's Redis user then needs `EVALSHA` and `SCRIPT LOAD`, which
//!   together run any Lua that user writes.
//! - **functions**: the scripts are one Redis Functions library (Redis 7+), installed by an
//!   administrator with `coherence-sidecar functions load`; the sidecar only `FCALL`s it, so
//!   its user needs neither `EVAL`, `EVALSHA`, `SCRIPT LOAD` nor `FUNCTION LOAD`
//!   (docs/security.md).
//!
//! The library is versioned by its code: its name and every function's name carry a hash of
//! the scripts, so a sidecar calls exactly the code it was built with, sidecars of two
//! releases can share one Redis during a rolling upgrade (each calls its own library), and
//! loading is idempotent. A Redis without the expected version (restarted without
//! persistence, flushed, or holding only an older one) answers "Function not found": the
//! sidecar is then not ready and logs what to run, until a call succeeds again.
//!
//! The scripts themselves live with the concepts that own them (`versions/shard.lua`,
//! `load_balancing/servers.lua`, `load_balancing/jobs.lua`); they are gathered here because
//! the library's version covers them all.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, OnceLock};

use redis::aio::ConnectionLike;
use redis::{FromRedisValue, RedisResult, Script, ToRedisArgs};

/// How the sidecar runs its scripts (`redis_scripts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScriptMode {
    /// `EVALSHA`, and `SCRIPT LOAD` when Redis lacks the script.
    #[default]
    Eval,
    /// `FCALL` of the versioned Functions library.
    Functions,
}

impl ScriptMode {
    /// The setting's values, in the order the documentation lists them.
    pub const NAMES: &'static [&'static str] = &["eval", "functions"];

    pub fn parse(name: &str) -> Option<ScriptMode> {
        match name {
            "eval" => Some(ScriptMode::Eval),
            "functions" => Some(ScriptMode::Functions),
            _ => None,
        }
    }
}

/// One of the sidecar's scripts: its source, run by `EVALSHA` or as the library function
/// `coherence_<version>_<name>`.
pub struct LuaScript {
    name: &'static str,
    source: &'static str,
    eval: OnceLock<Script>,
    function: OnceLock<String>,
}

impl LuaScript {
    pub const fn new(name: &'static str, source: &'static str) -> LuaScript {
        LuaScript {
            name,
            source,
            eval: OnceLock::new(),
            function: OnceLock::new(),
        }
    }

    fn eval(&self) -> &Script {
        self.eval.get_or_init(|| Script::new(self.source))
    }

    /// The SHA1 `EVALSHA` calls it by.
    pub fn eval_hash(&self) -> String {
        self.eval().get_hash().to_string()
    }

    /// The function's name in the library of this build.
    pub fn function(&self) -> &str {
        self.function
            .get_or_init(|| format!("{}_{}", library_name(), self.name))
    }

    /// A call of this script, to which keys and arguments are added in order.
    pub fn call(&'static self) -> ScriptCall {
        ScriptCall {
            script: self,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }
}

/// Cache versions: every read and write of a shard's state.
pub static SHARD: LuaScript = LuaScript::new("shard", include_str!("../versions/shard.lua"));
/// The server registry and the leader lease.
pub static SERVERS: LuaScript =
    LuaScript::new("servers", include_str!("../load_balancing/servers.lua"));
/// Job leases and per-period runs.
pub static JOBS: LuaScript = LuaScript::new("jobs", include_str!("../load_balancing/jobs.lua"));

/// The consistency auditor's read-only evidence (`versions/audit/evidence.rs`).
pub static AUDIT: LuaScript = LuaScript::new("audit", include_str!("../versions/audit/audit.lua"));

fn library_scripts() -> [&'static LuaScript; 4] {
    [&SHARD, &SERVERS, &JOBS, &AUDIT]
}

/// The library's version: the first 12 hex digits of FNV-1a over every script's name and
/// source, in library order. Any change to any script makes a new version.
pub fn library_version() -> &'static str {
    static VERSION: LazyLock<String> = LazyLock::new(|| {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for script in library_scripts() {
            for byte in script.name.bytes().chain([0]).chain(script.source.bytes()) {
                hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        format!("{:012x}", hash >> 16)
    });
    &VERSION
}

/// `coherence_<version>`: the library's name, and the prefix of its functions' names.
pub fn library_name() -> String {
    format!("coherence_{}", library_version())
}

/// The library's code, as `FUNCTION LOAD` takes it: each script becomes a function of
/// `(KEYS, ARGV)`, exactly as `EVAL` runs it.
pub fn library_code() -> String {
    let mut code = format!("#!lua name={}\n", library_name());
    for script in library_scripts() {
        code.push_str(&format!(
            "\nlocal function coherence_{name}(KEYS, ARGV)\n{source}\nend\nredis.register_function('{function}', coherence_{name})\n",
            name = script.name,
            source = script.source.trim_end(),
            function = script.function(),
        ));
    }
    code
}

/// Installs this build's library (`FUNCTION LOAD REPLACE`: loading it again is harmless, and
/// libraries of other versions stay) on the Redis `conn` reaches — every master of a cluster.
/// Returns the library's name.
pub async fn load_library<C: ConnectionLike>(conn: &mut C) -> RedisResult<String> {
    let _: redis::Value = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(library_code())
        .query_async(conn)
        .await?;
    Ok(library_name())
}

/// One call of a script: its keys and arguments, in order.
pub struct ScriptCall {
    script: &'static LuaScript,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl ScriptCall {
    pub fn key<T: ToRedisArgs>(&mut self, key: T) -> &mut ScriptCall {
        self.keys.extend(key.to_redis_args());
        self
    }

    pub fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut ScriptCall {
        self.args.extend(arg.to_redis_args());
        self
    }
}

/// Runs script calls the configured way, and remembers whether Redis lacked the library.
#[derive(Debug, Default)]
pub struct ScriptRunner {
    mode: ScriptMode,
    /// The last `FCALL` found no function of this build's library.
    library_missing: AtomicBool,
}

impl ScriptRunner {
    pub fn new(mode: ScriptMode) -> ScriptRunner {
        ScriptRunner {
            mode,
            library_missing: AtomicBool::new(false),
        }
    }

    pub fn mode(&self) -> ScriptMode {
        self.mode
    }

    /// False while Redis lacks this build's library (functions mode): not ready.
    pub fn usable(&self) -> bool {
        !self.library_missing.load(Ordering::SeqCst)
    }

    /// Runs `call` on `conn`.
    pub async fn run<T: FromRedisValue, C: ConnectionLike>(
        &self,
        call: &ScriptCall,
        conn: &mut C,
    ) -> RedisResult<T> {
        match self.mode {
            ScriptMode::Eval => {
                let mut invocation = call.script.eval().prepare_invoke();
                for key in &call.keys {
                    invocation.key(key);
                }
                for arg in &call.args {
                    invocation.arg(arg);
                }
                invocation.invoke_async(conn).await
            }
            ScriptMode::Functions => {
                let function = call.script.function();
                let result = redis::cmd("FCALL")
                    .arg(function)
                    .arg(call.keys.len())
                    .arg(&call.keys)
                    .arg(&call.args)
                    .query_async(conn)
                    .await;
                match &result {
                    Err(err) if is_function_not_found(err) => self.library_lost(function),
                    Ok(_) => self.library_found(),
                    Err(_) => {}
                }
                result
            }
        }
    }

    fn library_lost(&self, function: &str) {
        if !self.library_missing.swap(true, Ordering::SeqCst) {
            tracing::error!(
                function,
                library = %library_name(),
                "redis has no function {function} of the coherence Functions library this sidecar runs (library {}: Redis restarted without persistence, was flushed, or holds only another version); not ready until it is loaded: run `coherence-sidecar functions load` with an administrator's credential (--redis-url, or COHERENCE_REDIS_URL / COHERENCE_REDIS_USERNAME / COHERENCE_REDIS_PASSWORD_FILE of a user allowed FUNCTION LOAD)",
                library_name()
            );
        }
    }

    fn library_found(&self) {
        if self.library_missing.swap(false, Ordering::SeqCst) {
            tracing::info!(library = %library_name(), "the coherence Functions library is loaded; serving again");
        }
    }
}

fn is_function_not_found(err: &redis::RedisError) -> bool {
    err.to_string().contains("Function not found")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_library_names_its_version_and_registers_every_script() {
        let code = library_code();
        let version = library_version();
        assert_eq!(version.len(), 12);
        assert!(code.starts_with(&format!("#!lua name=coherence_{version}\n")));
        for name in ["shard", "servers", "jobs"] {
            assert!(
                code.contains(&format!(
                    "redis.register_function('coherence_{version}_{name}', coherence_{name})"
                )),
                "{name}"
            );
        }
        assert_eq!(ScriptMode::parse("functions"), Some(ScriptMode::Functions));
        assert_eq!(ScriptMode::parse("EVAL"), None);
    }
}
