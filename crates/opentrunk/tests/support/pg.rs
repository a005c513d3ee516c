//! PostgreSQL for tests without a client library in this crate: one statement over the wire
//! protocol (v3, simple query) as `postgres` on database `test` with trust authentication,
//! enough to make and drop a test's schema. Shared by the integration tests and the binary's
//! own unit tests (`records.rs` includes this file).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub const PG_ADDR: &str = "127.0.0.1:5432";
pub const PG_DB: &str = "test";
pub const PG_USER: &str = "postgres";

/// One statement over PostgreSQL's wire protocol (v3, simple query) as `postgres` on database
/// `test`, with the trust authentication the test server uses: enough to make and drop a
/// schema without a client library.
pub fn pg_simple_query(sql: &str) -> Result<(), String> {
    let addr: SocketAddr = PG_ADDR.parse().expect("address");
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let mut startup = 196_608u32.to_be_bytes().to_vec(); // protocol 3.0
    for (k, v) in [("user", PG_USER), ("database", PG_DB)] {
        startup.extend_from_slice(k.as_bytes());
        startup.push(0);
        startup.extend_from_slice(v.as_bytes());
        startup.push(0);
    }
    startup.push(0);
    let mut msg = ((startup.len() + 4) as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&startup);
    s.write_all(&msg).map_err(|e| e.to_string())?;
    pg_until_ready(&mut s)?;
    let mut q = vec![b'Q'];
    q.extend_from_slice(&((sql.len() + 5) as u32).to_be_bytes());
    q.extend_from_slice(sql.as_bytes());
    q.push(0);
    s.write_all(&q).map_err(|e| e.to_string())?;
    pg_until_ready(&mut s)?;
    let _ = s.write_all(&[b'X', 0, 0, 0, 4]);
    Ok(())
}

/// Reads backend messages up to ReadyForQuery; an ErrorResponse or an authentication request
/// other than "ok" is an error.
fn pg_until_ready(s: &mut TcpStream) -> Result<(), String> {
    let mut error = None;
    loop {
        let mut head = [0u8; 5];
        s.read_exact(&mut head).map_err(|e| e.to_string())?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len.saturating_sub(4)];
        s.read_exact(&mut body).map_err(|e| e.to_string())?;
        match head[0] {
            b'R' if body.get(..4) != Some(&[0, 0, 0, 0]) => {
                return Err("PostgreSQL asks for a password; the tests expect trust authentication".into());
            }
            b'E' => {
                let fields: Vec<String> = body
                    .split(|b| *b == 0)
                    .filter(|f| f.first().is_some_and(|t| matches!(t, b'C' | b'M')))
                    .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
                    .collect();
                error = Some(fields.join(" "));
            }
            b'Z' => return error.map_or(Ok(()), Err),
            _ => {}
        }
    }
}

/// Whether a service must be there (CI, or `OPENTRUNK_REQUIRE_SERVICES=1`).
pub fn services_required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
        || std::env::var("OPENTRUNK_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// A PostgreSQL schema of its own for one test, dropped afterwards.
pub struct PgSchema {
    pub name: String,
}

impl PgSchema {
    /// `None` (after one `skipped:` line) when PostgreSQL is unreachable and not required.
    pub fn create(test: &str) -> Option<PgSchema> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        // `ot_test_` with the creation time last: the store tests' cleanup drops it if left over.
        let name = format!("ot_test_{}_{nanos}", std::process::id());
        match pg_simple_query(&format!("CREATE SCHEMA {name}")) {
            Ok(()) => Some(PgSchema { name }),
            Err(e) if services_required() => panic!("{test}: PostgreSQL is required at {PG_ADDR}: {e}"),
            Err(e) => {
                println!("skipped: {test}: PostgreSQL not reachable at {PG_ADDR} ({e})");
                None
            }
        }
    }

    /// The database URL of the schema.
    pub fn url(&self) -> String {
        format!("postgres://{PG_USER}@{PG_ADDR}/{PG_DB}?options=-c%20search_path%3D{}", self.name)
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let _ = pg_simple_query(&format!("DROP SCHEMA {} CASCADE", self.name));
    }
}
